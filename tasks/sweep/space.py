"""The sweep's search space: the layer maps a teacher can give, the grid of `distill:` values, and the ids
that make trials resumable (a hash of a trial's values and everything else it depends on)."""

from __future__ import annotations

import hashlib
import itertools
import json

from tasks.infra.config import Config, to_dict, with_overrides
from tasks.infra.errors import ConfigError
from tasks.infra.storage import Paths, hash_dir, read_json

SEARCHED = ("student", "static_dims", "prune_vocab", "student_layers", "layer_map", "temperature", "alpha_kd",
            "alpha_ce", "lr", "epochs")
FAMILIES = ("transformer", "transformer, pruned", "static", "static, pruned")  # the chart's marker order


def teacher_layers(paths: Paths) -> int:
    """The depth of models/teacher, from its config.json."""
    config = paths.teacher / "config.json"
    if not config.is_file():
        raise ConfigError(f"sweep: {paths.teacher} has no trained teacher; run the pipeline first "
                          "(`dvc repro teacher` or `kdistill teacher`)")
    data = json.loads(config.read_text(encoding="utf-8"))
    return int(data.get("num_hidden_layers") or data.get("n_layers"))


def teacher_width(paths: Paths) -> int | None:
    """The hidden size of models/teacher, from its config.json (what static widths are bounded by)."""
    from tasks.models.static import teacher_width as width

    return width(json.loads((paths.teacher / "config.json").read_text(encoding="utf-8")))


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


def space(cfg: Config, n_teacher: int, width: int | None = None) -> dict[str, list]:
    """Each searched dimension's values (deduplicated, in params.yaml's order).

    The `student` dimension holds the families: a layer map per depth (transformer students), then
    {"static_dims": d} per static width; `prune_vocab` crosses both.

    Raises:
        ConfigError: a static width above the teacher's `width` (and what `layer_maps` raises).
    """
    from tasks.models.static import check_dims

    sc = cfg.sweep

    def unique(values: list) -> list:
        return list(dict.fromkeys(json.dumps(v) for v in values))

    for dims in sc.static_dims:
        check_dims(dims, width, "the teacher (models/teacher)")
    students = [json.loads(v) for v in unique(layer_maps(cfg, n_teacher))]
    return {"student": students + [{"static_dims": d} for d in dict.fromkeys(sc.static_dims)],
            "temperature": [json.loads(v) for v in unique(sc.temperatures)],
            "alphas": [json.loads(v) for v in unique(sc.alphas)],
            "lr": [json.loads(v) for v in unique(sc.learning_rates)],
            "epochs": [json.loads(v) for v in unique(sc.epochs)],
            "prune_vocab": [json.loads(v) for v in unique(sc.prune_vocab)]}


def trial_params(student: list[int] | dict, temperature: float, alphas: list[float], lr: float, epochs: int,
                 prune_vocab: bool = False) -> dict:
    """A trial's `distill:` values: a transformer student of a layer map, or a static one ({"static_dims": d}),
    whose learning rate and epochs are distill.static_lr and static_epochs (not searched)."""
    shared = {"prune_vocab": bool(prune_vocab), "temperature": float(temperature), "alpha_kd": float(alphas[0]),
              "alpha_ce": float(alphas[1])}
    if isinstance(student, dict):
        return {"student": "static", "static_dims": int(student["static_dims"]), **shared}
    return {"student": "transformer", "student_layers": len(student), "layer_map": list(student), **shared,
            "lr": float(lr), "epochs": int(epochs)}


def grid(dims: dict[str, list]) -> list[dict]:
    """Every combination, family- and depth-major (a pruned trial right after its unpruned twin); a static
    trial once, whatever the learning rates and epochs."""
    trials = [trial_params(*combo) for combo in itertools.product(*dims.values())]
    return list({json.dumps(t, sort_keys=True): t for t in trials}.values())


def family(params: dict) -> str:
    """A trial's family on the chart: FAMILIES."""
    kind = params.get("student", "transformer")
    return f"{kind}, pruned" if params.get("prune_vocab") else kind


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
    """'depth 2 [0, 5] T=4 kd/ce=0.5/0.5 lr=1e-04 epochs=4', 'static 64d T=2 kd/ce=0.5/0.5, pruned'."""
    loss = f"T={p['temperature']:g} kd/ce={p['alpha_kd']:g}/{p['alpha_ce']:g}"
    pruned = ", pruned" if p.get("prune_vocab") else ""
    if p.get("student") == "static":
        return f"static {p['static_dims']}d {loss}{pruned}"
    return f"depth {p['student_layers']} {p['layer_map']} {loss} lr={p['lr']:.0e} epochs={p['epochs']}{pruned}"
