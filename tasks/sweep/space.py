"""The sweep's search space: the layer maps a teacher can give, the grid of `distill:` values, and the ids
that make trials resumable (a hash of a trial's values and everything else it depends on)."""

from __future__ import annotations

import hashlib
import itertools
import json

from tasks.infra.config import Config, to_dict, with_overrides
from tasks.infra.errors import ConfigError
from tasks.infra.storage import Paths, hash_dir, read_json

SEARCHED = ("student_layers", "layer_map", "temperature", "alpha_kd", "alpha_ce", "lr", "epochs")


def teacher_layers(paths: Paths) -> int:
    """The depth of models/teacher, from its config.json."""
    config = paths.teacher / "config.json"
    if not config.is_file():
        raise ConfigError(f"sweep: {paths.teacher} has no trained teacher; run the pipeline first "
                          "(`dvc repro teacher` or `kdistill teacher`)")
    data = json.loads(config.read_text(encoding="utf-8"))
    return int(data.get("num_hidden_layers") or data.get("n_layers"))


def layer_maps(cfg: Config, n_teacher: int) -> list[list[int]]:
    """The student layer maps the sweep tries: explicit ones, or one per depth by `layer_rule`.

    Raises:
        ConfigError: a depth or map the teacher cannot give (depth >= its layers, index past its last).
    """
    from tasks.core.student import default_layer_map

    sc = cfg.sweep
    if sc.layer_maps is not None:
        for i, layer_map in enumerate(sc.layer_maps):
            if len(layer_map) >= n_teacher or layer_map[-1] >= n_teacher:
                raise ConfigError(f"sweep.layer_maps[{i}]: {layer_map}: the teacher has {n_teacher} layers; "
                                  f"expected fewer than {n_teacher} indices in 0..{n_teacher - 1}")
        return [list(m) for m in sc.layer_maps]
    out = []
    for depth in sc.depths:
        if depth >= n_teacher:
            raise ConfigError(f"sweep.depths: {depth}: the teacher has {n_teacher} layers; expected fewer")
        rule = {"spread": default_layer_map(n_teacher, depth), "bottom": list(range(depth)),
                "top": list(range(n_teacher - depth, n_teacher))}
        out.append(rule[sc.layer_rule])
    return out


def space(cfg: Config, n_teacher: int) -> dict[str, list]:
    """Each searched dimension's values (deduplicated, in params.yaml's order)."""
    sc = cfg.sweep

    def unique(values: list) -> list:
        return list(dict.fromkeys(json.dumps(v) for v in values))

    return {"layer_map": [json.loads(v) for v in unique(layer_maps(cfg, n_teacher))],
            "temperature": [json.loads(v) for v in unique(sc.temperatures)],
            "alphas": [json.loads(v) for v in unique(sc.alphas)],
            "lr": [json.loads(v) for v in unique(sc.learning_rates)],
            "epochs": [json.loads(v) for v in unique(sc.epochs)]}


def trial_params(layer_map: list[int], temperature: float, alphas: list[float], lr: float, epochs: int) -> dict:
    """A trial's `distill:` values."""
    return {"student_layers": len(layer_map), "layer_map": list(layer_map), "temperature": float(temperature),
            "alpha_kd": float(alphas[0]), "alpha_ce": float(alphas[1]), "lr": float(lr), "epochs": int(epochs)}


def grid(dims: dict[str, list]) -> list[dict]:
    """Every combination, depth-major."""
    return [trial_params(*combo) for combo in itertools.product(*dims.values())]


def trial_config(cfg: Config, params: dict) -> Config:
    """The config a trial trains with: `cfg` with the trial's distill values."""
    return with_overrides(cfg, {"distill": params})


def sweep_context(cfg: Config, paths: Paths) -> str:
    """A hash of everything a trial depends on besides its own values: the teacher, the data, the rest of the config."""
    rest = to_dict(cfg)
    rest.pop("sweep")
    rest["distill"] = {k: v for k, v in rest["distill"].items() if k not in SEARCHED}
    summary = read_json(paths.summary) if paths.summary.is_file() else {}
    spec = {"config": rest, "teacher": hash_dir(paths.teacher), "data": summary.get("data_hash"),
            "variants": cfg.sweep.variants}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def trial_id(context: str, params: dict) -> str:
    """The trial's id: 10 hex characters of sha256 over its values and the sweep's context."""
    return hashlib.sha256(json.dumps({"c": context, "p": params}, sort_keys=True).encode()).hexdigest()[:10]


def describe_params(p: dict) -> str:
    """'depth 2 [0, 5] T=4 kd/ce=0.5/0.5 lr=1e-04 epochs=4'."""
    return (f"depth {p['student_layers']} {p['layer_map']} T={p['temperature']:g} "
            f"kd/ce={p['alpha_kd']:g}/{p['alpha_ce']:g} lr={p['lr']:.0e} epochs={p['epochs']}")
