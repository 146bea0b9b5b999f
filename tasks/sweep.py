"""The compression sweep: many students from one teacher, and the cheapest one within the accuracy budget.

`kdistill sweep` (and the Prefect flow `sweep`, flows/sweep.py) trains the students of params.yaml's
`sweep:` search space, as a grid or an Optuna search (TPE, each trial pruned on its val score after
each epoch), from the pipeline's teacher (models/teacher) and its teacher-output cache: the cache
stores every teacher layer's pooled states, so the teacher runs once for all depths and layer maps.
Each trial is the distill stage's own function run with the trial's `distill:` values, into
models/sweep/<trial>/, then measured: val (for choosing) and test (for reporting) accuracy and
macro-F1, parameters, size, batch-1 latency and batch-32 throughput of torch-fp32 and of the served
variant (the fastest within inference.max_drop of torch-fp32 on val, as bench/serving.py picks it,
with its timing functions).

The choice (`choose`), on the val split, in evaluate.metric:
1. Budget. A trial is in budget when its val score is at most sweep.max_drop below the teacher's (the
   point estimate; the paired interval of tasks.infra.stats.paired_comparison at evaluate.confidence
   is reported beside it) and its served batch-1 latency is at most sweep.max_latency_ms. Pruned
   trials are out. (The Optuna search scores trials by the same test, `optuna_value`.)
2. objective latency or size: the winner is the cheapest in-budget trial (served batch-1 ms, served
   MB); costs within COST_TIE (5%) of the lowest are ties (two trials of one shape differ by timing
   noise alone), won by the higher val score, then fewer layers, then the trial id. "The fastest student that loses at most max_drop".
3. objective accuracy: the best is the in-budget trial with the highest val score; the contenders are
   the in-budget trials not significantly worse than it (interval of trial - best not wholly below 0,
   paired on the same rows); the winner is the fastest contender (ties as above). A difference the
   val split cannot tell from noise does not buy a slower student.
Why the budget is a point estimate and not a significance test: "not significantly more than
max_drop below" admits, on a few hundred val rows, students several points worse (the quick profile's
3-layer trial: -2.0 on val, -4.8 on test), and "significantly within max_drop" refuses nearly everything.
Nothing in budget: the reports are written, params.yaml is left alone, and a GateError (exit 3).
Otherwise the winner's values are written into params.yaml's `distill:` section, comments kept
(what `dvc exp apply` does), so the next `dvc repro` evaluates and promotes it through the gates.

Interrupted sweeps resume: a trial whose models/sweep/<id>/trial.json exists is not rerun. The id
hashes the trial's values and everything else it depends on (the rest of the config, the teacher's
bytes, the data), so a retrained teacher or new data starts over.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.infra.config import Config, config_from_dict, to_dict, with_overrides
from tasks.infra.errors import ConfigError, GateError
from tasks.infra.stats import metric_value, paired_comparison
from tasks.infra.storage import Paths, hash_dir, read_json, write_json, write_text

log = logging.getLogger("kd")

Record = dict
Executor = Callable[[list[dict]], Iterable[Record]]  # trial specs in, finished trial records out (any order)
SEARCHED = ("student_layers", "layer_map", "temperature", "alpha_kd", "alpha_ce", "lr", "epochs")


class Pruned(Exception):
    """Raised by an epoch callback: the trial is hopeless (Optuna's pruner said so)."""


@dataclass(frozen=True)
class TrialPaths(Paths):
    """One trial's layout: the workspace's data, teacher and teacher cache; its own model, reports, checkpoints."""

    out: Path = Path(".")

    @property
    def distilled(self) -> Path:
        return self.out / "model"

    @property
    def reports(self) -> Path:
        return self.out / "reports"

    def checkpoints(self, stage: str) -> Path:
        return self.out / "checkpoints" / stage


def sweep_dirs(paths: Paths) -> tuple[Path, Path]:
    """(reports/sweep/, models/sweep/): the reports, and the trials' models and records."""
    return paths.reports / "sweep", paths.root / "models" / "sweep"


# ---------------------------------------------------------------- the search space

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


# ---------------------------------------------------------------- one trial

def measure(cfg: Config, paths: Paths, model_dir: Path, variants: Iterable[str]) -> tuple[dict, np.ndarray]:
    """Quality, size and speed of a saved classifier, as the serving benchmark measures them.

    Val and test scores are torch-fp32's; every variant is timed at evaluate.threads, at batch 1
    (evaluate.latency_runs test rows, interleaved across variants) and batch 32 (the test split).

    Returns:
        (metrics, val predictions [N] of torch-fp32).
    """
    import torch

    from tasks.infra.common import encode_split, load_labels, load_split
    from tasks.models.loading import count_params, load_tokenizer
    from tasks.infra.storage import dir_size_mb
    from tasks.production.export import (
        choose_variant,
        interleaved_latencies,
        load_predictor,
        predict_dataset,
        serving_inputs,
        throughput_and_accuracy,
    )

    ec, names = cfg.evaluate, load_labels(paths)
    threads = torch.get_num_threads()  # load_predictor sets the process-wide count; training wants it back
    try:
        tokenizer = load_tokenizer(str(model_dir), key=str(model_dir))
        pad = tokenizer.pad_token_id
        split = {s: encode_split(tokenizer, load_split(paths, s), cfg.base.max_length) for s in ("val", "test")}
        predictors = {v: load_predictor(model_dir, v, ec.threads) for v in dict.fromkeys(["torch-fp32", *variants])}
        singles, test_batches = serving_inputs(split["test"], pad, ec.warmup_runs + ec.latency_runs, 32)
        _, val_batches = serving_inputs(split["val"], pad, 0, 32)
        times = interleaved_latencies(predictors, singles, ec.warmup_runs, min(50, ec.latency_runs))
        rows = {}
        for variant, p in predictors.items():
            throughput, test_acc = throughput_and_accuracy(p, test_batches, split["test"].labels)
            rows[variant] = {"latency_ms_b1": round(float(np.median(times[variant])), 3),
                             "throughput_b32": round(throughput, 1), "size_mb": round(p.size_mb, 2),
                             "accuracy": throughput_and_accuracy(p, val_batches, split["val"].labels)[1],
                             "test_accuracy": round(test_acc, 4)}
        served = choose_variant(rows, cfg.inference.max_drop)
        preds = {s: predict_dataset(predictors["torch-fp32"], split[s], pad).argmax(-1) for s in ("val", "test")}
        fp32 = predictors["torch-fp32"]
        metrics = {s: {m: round(metric_value(split[s].labels, preds[s], m, len(names)), 4)
                       for m in ("accuracy", "f1_macro")} for s in ("val", "test")}
        metrics.update(param_count=count_params(fp32.model), size_mb=round(dir_size_mb(model_dir), 2),
                       torch_fp32=rows["torch-fp32"], served={"variant": served, **rows[served]}, variants=rows)
    finally:
        torch.set_num_threads(threads)
    return metrics, preds["val"]


def run_trial(cfg: Config, paths: Paths, spec: dict) -> Record:
    """Distil and measure one trial into models/sweep/<id>/; writes its trial.json (the resume marker).

    Args:
        cfg: the sweep's config; the trial's values are laid over its `distill:` section.
        paths: the workspace (data, teacher, teacher cache).
        spec: {"id", "params", "pruning": Optuna's pruning hook settings or None}.

    Returns:
        The trial's record: status done or pruned, its values, metrics and timings.
    """
    from tasks.distill import distill

    folder = sweep_dirs(paths)[1] / spec["id"]
    tpaths = TrialPaths(paths.root, folder)
    hook = OptunaHook(**spec["pruning"], metric=cfg.evaluate.metric) if spec.get("pruning") else None
    start = time.perf_counter()
    record: Record = {"id": spec["id"], "params": spec["params"], "status": "done"}
    try:
        report = distill(trial_config(cfg, spec["params"]), tpaths, on_epoch=hook)
        record.update(history=report["history"], train_seconds=report["train_seconds"], cache=report["cache"])
        metrics, val_preds = measure(cfg, paths, tpaths.distilled, cfg.sweep.variants)
        record.update(metrics)
        np.save(folder / "val_preds.npy", val_preds)
    except Pruned as why:
        record.update(status="pruned", reason=str(why), history=hook.history if hook else [])
    record["seconds"] = round(time.perf_counter() - start, 1)
    write_json(folder / "trial.json", record)
    return record


def load_record(paths: Paths, tid: str) -> Record | None:
    """A finished trial's record (with its val predictions), or None when it has not finished."""
    folder = sweep_dirs(paths)[1] / tid
    if not (folder / "trial.json").is_file():
        return None
    record = read_json(folder / "trial.json")
    if record["status"] == "done":
        if not (folder / "val_preds.npy").is_file():
            return None
        record["val_preds"] = np.load(folder / "val_preds.npy")
    return record


def make_pruner():
    """Median pruning: a trial whose val score after an epoch is below the median of the earlier trials'
    at that epoch stops there (after two trials have finished)."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


@dataclass
class OptunaHook:
    """The epoch callback of an Optuna trial: report the val score, raise `Pruned` when the pruner says so.

    Plain settings (storage URL, study name, trial id), so it travels to a trial's own process.
    """

    storage: str
    study: str
    trial_id: int
    metric: str = "accuracy"

    def __post_init__(self) -> None:
        self.history: list[dict] = []

    def __call__(self, record: dict) -> None:
        import optuna

        self.history.append(record)
        study = optuna.load_study(study_name=self.study, storage=self.storage, pruner=make_pruner())
        trial = optuna.trial.Trial(study, self.trial_id)
        trial.report(record[f"val_{self.metric}"], record["epoch"])
        if trial.should_prune():
            raise Pruned(f"pruned after epoch {record['epoch']}: val {self.metric} {record[f'val_{self.metric}']:.4f}")


# ---------------------------------------------------------------- running trials

def worker_env(cfg: Config) -> dict:
    """A trial process's environment: its share of the cores when the config leaves threads to torch."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    if cfg.base.threads == 0:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cfg.sweep.parallel))
    return env


def trial_process(cfg: Config, paths: Paths, spec: dict, on_line: Callable[[str], None] | None = None) -> Record:
    """Run one trial in its own process (`python -m tasks.sweep --spec ...`); its output goes to the
    trial's log.txt and, line by line, to `on_line` (a Prefect task's logger)."""
    folder = sweep_dirs(paths)[1] / spec["id"]
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "spec.json", {"config": to_dict(cfg), "spec": spec})
    cmd = [sys.executable, "-m", "tasks.sweep", "--root", str(paths.root), "--spec", str(folder / "spec.json")]
    with open(folder / "log.txt", "w", encoding="utf-8") as out, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=worker_env(cfg)) as proc:
        for line in proc.stdout:
            out.write(line)
            if on_line is not None:
                on_line(line.rstrip())
    if proc.returncode != 0:
        raise RuntimeError(f"sweep trial {spec['id']} failed (exit {proc.returncode}); see {folder / 'log.txt'}")
    return read_json(folder / "trial.json")


def local_executor(cfg: Config, paths: Paths) -> Executor:
    """In this process one at a time (sweep.parallel 1), or sweep.parallel trial processes at once."""

    def execute(specs: list[dict]) -> Iterator[Record]:
        if cfg.sweep.parallel == 1 or len(specs) == 1:
            for spec in specs:
                yield run_trial(cfg, paths, spec)
            return
        with ThreadPoolExecutor(cfg.sweep.parallel) as pool:
            for future in as_completed([pool.submit(trial_process, cfg, paths, spec) for spec in specs]):
                yield future.result()

    return execute


# ---------------------------------------------------------------- the searches

def within_drop(diff: float, max_drop: float) -> bool:
    """The accuracy budget, for the choice and the Optuna objective alike: a trial's val score minus the
    teacher's (the point estimate) is at most sweep.max_drop below zero."""
    return diff >= -max_drop - 1e-12


def grid_search(specs: list[dict], finished: dict[str, Record], execute: Executor,
                report: Callable[[Record], None]) -> None:
    """Run every unfinished spec: the first alone (it fills the teacher cache every other trial reads)."""
    todo = [s for s in specs if s["id"] not in finished]
    for batch in (todo[:1], todo[1:]):
        if batch:
            for record in execute(batch):
                report(record)


def optuna_value(record: Record, teacher: dict, cfg: Config) -> float:
    """What the Optuna study maximises: for accuracy the val score; for latency or size, a trial within
    max_drop of the teacher (point estimate) scores 1 + teacher cost / its cost (> 1, cheaper higher),
    one outside it its val score (< 1)."""
    metric = cfg.evaluate.metric
    score = record["val"][metric]
    if cfg.sweep.objective == "accuracy" or not within_drop(score - teacher["val"][metric], cfg.sweep.max_drop):
        return score
    key = "latency_ms_b1" if cfg.sweep.objective == "latency" else "size_mb"
    return 1.0 + teacher["served"][key] / max(record["served"][key], 1e-9)


def optuna_search(cfg: Config, paths: Paths, dims: dict[str, list], context: str, finished: dict[str, Record],
                  execute: Executor, report: Callable[[Record], None], teacher: dict) -> None:
    """Ask the study for trials until `sweep.n_trials` have finished (those of earlier runs count).

    The study lives in models/sweep/optuna.db (SQLite), named after the sweep's context, so an
    interrupted search continues where it stopped. Trials are asked `sweep.parallel` at a time.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sc = cfg.sweep
    storage = f"sqlite:///{(sweep_dirs(paths)[1] / 'optuna.db').resolve()}"
    sweep_dirs(paths)[1].mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=f"sweep-{context[:16]}", storage=storage, load_if_exists=True,
                                direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.base.seed),
                                pruner=make_pruner())
    labels = {k: [json.dumps(v) for v in values] for k, values in dims.items()}  # categorical choices

    def tell(trial_number: int, record: Record) -> None:
        if record["status"] == "pruned":
            study.tell(trial_number, state=TrialState.PRUNED)
        else:
            study.tell(trial_number, optuna_value(record, teacher, cfg))

    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # a killed sweep's trials
        study.tell(stale.number, state=TrialState.FAIL)
    while (done := len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))) < sc.n_trials:
        asked: dict[str, list[int]] = {}
        specs = []
        for _ in range(min(sc.parallel if done else 1, sc.n_trials - done)):  # the first alone: it fills the cache
            trial = study.ask()
            params = trial_params(*(json.loads(trial.suggest_categorical(k, labels[k])) for k in dims))
            tid = trial_id(context, params)
            if tid in finished:  # sampled before: the same result, no new training
                tell(trial.number, finished[tid])
                continue
            if tid not in asked:
                specs.append({"id": tid, "params": params, "pruning": {"storage": storage, "study": study.study_name,
                                                                        "trial_id": trial._trial_id}})
            asked.setdefault(tid, []).append(trial.number)
        for record in execute(specs):
            report(record)
            for number in asked[record["id"]]:
                tell(number, record)


# ---------------------------------------------------------------- the choice

COST_TIE = 0.05  # costs within 5% of the lowest tie: batch-1 medians of one model shape differ by that much run to run


def _cost(record: Record, kind: str) -> float:
    """latency: served batch-1 ms; size: served MB."""
    return float(record["served"]["latency_ms_b1" if kind == "latency" else "size_mb"])


def choose(records: list[Record], teacher_preds: np.ndarray, labels: np.ndarray, cfg: Config,
           num_classes: int) -> dict:
    """The choice of the module docstring.

    Args:
        records: finished trials; a done one carries `val_preds` [N].
        teacher_preds: the teacher's val predictions [N].
        labels: the val labels [N].
        cfg: sweep.objective, sweep.max_drop, sweep.max_latency_ms; evaluate.metric, evaluate.confidence.
        num_classes: C, for macro-F1.

    Returns:
        {"chosen": id or None, "best": id or None (the most accurate in budget), "trials": {id: {"budget",
        "why", "vs_teacher", "vs_best", "contender"}}, "reason": one line}. A contender is a trial the
        winner was picked from: every in-budget trial for latency and size, those not significantly
        below the best for accuracy.
    """
    sc, metric, conf = cfg.sweep, cfg.evaluate.metric, cfg.evaluate.confidence

    def compare(a: np.ndarray, b: np.ndarray):
        return paired_comparison(labels, a, b, metric, num_classes, conf, seed=cfg.base.seed)

    info: dict[str, dict] = {}
    within = []
    for r in records:
        if r["status"] != "done":
            info[r["id"]] = {"budget": False, "why": r["status"], "contender": False}
            continue
        vs_teacher = compare(teacher_preds, r["val_preds"])
        why = None
        if not within_drop(vs_teacher.diff, sc.max_drop):
            why = f"{-vs_teacher.diff:.4f} below the teacher > max_drop {sc.max_drop:g}"
        elif sc.max_latency_ms is not None and r["served"]["latency_ms_b1"] > sc.max_latency_ms:
            why = f"latency {r['served']['latency_ms_b1']:.2f} ms > {sc.max_latency_ms:g} ms"
        info[r["id"]] = {"budget": why is None, "why": why or "within budget", "vs_teacher": vs_teacher.to_dict(),
                         "contender": False}
        if why is None:
            within.append(r)
    if not within:
        return {"chosen": None, "best": None, "trials": info,
                "reason": f"no trial within budget: every one is out ({_budget_text(cfg)})"}

    def tie_break(r: Record) -> tuple:
        return -r["val"][metric], r["params"]["student_layers"], r["id"]

    best = min(within, key=tie_break)
    contenders = []
    for r in within:
        vs_best = compare(best["val_preds"], r["val_preds"])
        contender = sc.objective != "accuracy" or not vs_best.significant_loss
        info[r["id"]].update(vs_best=vs_best.to_dict(), contender=contender)
        if contender:
            contenders.append(r)
    cost = "size" if sc.objective == "size" else "latency"
    lowest = min(_cost(r, cost) for r in contenders)
    chosen = min((r for r in contenders if _cost(r, cost) <= lowest * (1 + COST_TIE)), key=tie_break)
    if sc.objective == "accuracy":
        why = (f"the fastest of {len(contenders)} trial(s) not significantly below the most accurate "
               f"({best['id']}, val {metric} {best['val'][metric]:.4f})")
    else:
        why = f"the {_objective_text(sc.objective)} of {len(contenders)} trial(s) within budget"
    reason = (f"chosen: trial {chosen['id']} ({describe_params(chosen['params'])}), val {metric} "
              f"{chosen['val'][metric]:.4f}: {why}; {len(within)} of {len(records)} within budget ({_budget_text(cfg)})")
    return {"chosen": chosen["id"], "best": best["id"], "trials": info, "reason": reason}


def _objective_text(objective: str) -> str:
    return {"latency": "fastest", "size": "smallest", "accuracy": "most accurate"}[objective]


def _budget_text(cfg: Config) -> str:
    sc = cfg.sweep
    text = f"val {cfg.evaluate.metric} at most {sc.max_drop:g} below the teacher's"
    return text + (f", batch-1 latency <= {sc.max_latency_ms:g} ms" if sc.max_latency_ms is not None else "")


def pareto_front(records: list[Record], metric: str) -> set[str]:
    """Done trials no other one beats on both served latency (lower) and val score (higher)."""
    done = [r for r in records if r["status"] == "done"]

    def point(r: Record) -> tuple[float, float]:
        return r["served"]["latency_ms_b1"], r["val"][metric]

    return {r["id"] for r in done if not any(
        point(o)[0] <= point(r)[0] and point(o)[1] >= point(r)[1] and point(o) != point(r) for o in done)}


# ---------------------------------------------------------------- applying the choice

def apply_params(params_file: Path, params: dict) -> list[tuple]:
    """Write a trial's values into params.yaml's `distill:` section in place, comments and layout kept, as
    `dvc exp apply` would; checked by the schema before the file is touched.

    Returns:
        (dotted key, old value, new value) of each changed key.
    """
    from ruamel.yaml.comments import CommentedSeq

    # params.yaml's one round-trip writer is the Prefect form's (flows/workspace.py); it imports no Prefect.
    from tasks.infra.params_file import apply_overrides

    values = {}
    for key, value in params.items():
        if isinstance(value, list):  # written [0, 3], as params.yaml spells lists, not as a block
            value = CommentedSeq(value)
            value.fa.set_flow_style()
        values[key] = value
    return apply_overrides(Path(params_file), {"distill": values})


# ---------------------------------------------------------------- the whole sweep

def teacher_reference(cfg: Config, paths: Paths, context: str) -> tuple[dict, np.ndarray]:
    """The teacher measured like a trial, once per sweep context (reports/sweep/teacher.json)."""
    out = sweep_dirs(paths)[0]
    if (out / "teacher.json").is_file() and (out / "teacher_val_preds.npy").is_file():
        saved = read_json(out / "teacher.json")
        if saved.get("context") == context:
            return saved, np.load(out / "teacher_val_preds.npy")
    metrics, preds = measure(cfg, paths, paths.teacher, ["torch-fp32"])
    metrics.update(context=context, depth=teacher_layers(paths))
    write_json(out / "teacher.json", metrics)
    np.save(out / "teacher_val_preds.npy", preds)
    return metrics, preds


# ---------------------------------------------------------------- reports

def trial_rows(records: list[Record], choice: dict, metric: str) -> list[dict]:
    """One flat row per trial: what table.md, trials.csv (a DVC plot) and trials.json list."""
    front = pareto_front(records, metric)
    rows = []
    for r in records:
        p, info = r["params"], choice["trials"][r["id"]]
        row = {"trial": r["id"], "status": r["status"], "depth": p["student_layers"],
               "layer_map": " ".join(map(str, p["layer_map"])), "temperature": p["temperature"],
               "alpha_kd": p["alpha_kd"], "alpha_ce": p["alpha_ce"], "lr": p["lr"], "epochs": p["epochs"]}
        if r["status"] == "done":
            vt = info["vs_teacher"]
            row.update({"val_score": r["val"][metric], f"val_{metric}": r["val"][metric], "vs_teacher": vt["diff"], "vs_teacher_ci_low": vt["ci_low"],
                        "vs_teacher_ci_high": vt["ci_high"], "test_accuracy": r["test"]["accuracy"],
                        "test_f1_macro": r["test"]["f1_macro"], "params": r["param_count"],
                        "size_mb": r["size_mb"], "fp32_latency_ms": r["torch_fp32"]["latency_ms_b1"],
                        "fp32_throughput_b32": r["torch_fp32"]["throughput_b32"], "served_variant": r["served"]["variant"],
                        "latency_ms": r["served"]["latency_ms_b1"], "throughput_b32": r["served"]["throughput_b32"],
                        "served_size_mb": r["served"]["size_mb"]})
        row.update(budget=info["why"], pareto=r["id"] in front, contender=info["contender"],
                   chosen=r["id"] == choice["chosen"], seconds=r["seconds"])
        rows.append(row)
    return rows


def table_markdown(rows: list[dict], teacher: dict, metric: str, choice: dict) -> str:
    """reports/sweep/table.md: the teacher, then every trial; P marks the Pareto front, ** the choice."""
    t = teacher
    lines = [f"| trial | depth | map | T | kd/ce | lr | epochs | val {metric} | vs teacher (CI) | test acc | test F1 | "
             "params | MB | fp32 b1 ms | served | b1 ms | b32 rows/s | budget |",
             "|" + "---|" * 18,
             f"| teacher | {t.get('depth', '')} | all | | | | | {t['val'][metric]:.4f} | | {t['test']['accuracy']:.4f} | "
             f"{t['test']['f1_macro']:.4f} | {t['param_count']:,} | {t['size_mb']:.1f} | {t['torch_fp32']['latency_ms_b1']:.2f} | "
             f"torch-fp32 | {t['torch_fp32']['latency_ms_b1']:.2f} | {t['torch_fp32']['throughput_b32']:.0f} | |"]
    for r in rows:
        name = f"**{r['trial']}**" if r["chosen"] else r["trial"]
        name += " P" if r["pareto"] else ""
        head = (f"| {name} | {r['depth']} | {r['layer_map']} | {r['temperature']:g} | {r['alpha_kd']:g}/{r['alpha_ce']:g} | "
                f"{r['lr']:.0e} | {r['epochs']} |")
        if r["status"] != "done":
            lines.append(head + f" {r['status']} |" + " |" * 10 + f" {r['budget']} |")
            continue
        lines.append(head + f" {r[f'val_{metric}']:.4f} | {r['vs_teacher']:+.4f} ({r['vs_teacher_ci_low']:+.3f}.."
                     f"{r['vs_teacher_ci_high']:+.3f}) | {r['test_accuracy']:.4f} | {r['test_f1_macro']:.4f} | "
                     f"{r['params']:,} | {r['size_mb']:.1f} | {r['fp32_latency_ms']:.2f} | {r['served_variant']} | "
                     f"{r['latency_ms']:.2f} | {r['throughput_b32']:.0f} | {r['budget']} |")
    return "\n".join(lines + ["", f"{choice['reason']}.", ""])


def plot_front(path: Path, rows: list[dict], teacher: dict, metric: str, max_drop: float) -> None:
    """reports/sweep/pareto.png: val score against served batch-1 latency, the front joined, the choice ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "done"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([r["latency_ms"] for r in done], [r[f"val_{metric}"] for r in done], c="tab:blue", label="trial")
    for r in done:
        ax.annotate(f"{r['depth']}L T{r['temperature']:g}", (r["latency_ms"], r[f"val_{metric}"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    front = sorted((r for r in done if r["pareto"]), key=lambda r: r["latency_ms"])
    ax.plot([r["latency_ms"] for r in front], [r[f"val_{metric}"] for r in front], "--s", c="tab:orange", mfc="none",
            label="Pareto front")
    tv, tl = teacher["val"][metric], teacher["torch_fp32"]["latency_ms_b1"]
    ax.scatter([tl], [tv], marker="*", s=160, c="black", label="teacher (torch-fp32)")
    ax.axhline(tv - max_drop, ls=":", c="gray", label=f"teacher - max_drop ({max_drop:g})")
    chosen = [r for r in done if r["chosen"]]
    if chosen:
        ax.scatter([chosen[0]["latency_ms"]], [chosen[0][f"val_{metric}"]], s=260, facecolors="none",
                   edgecolors="red", linewidths=2, label=f"chosen ({chosen[0]['trial']})")
    ax.set_xlabel("batch-1 latency, served variant (ms)")
    ax.set_ylabel(f"val {metric}")
    ax.set_title("Compression sweep: accuracy against latency")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(cfg: Config, paths: Paths, records: list[Record], teacher: dict, choice: dict,
                  seconds: float) -> dict:
    """reports/sweep/: trials.json, trials.csv (DVC plot), metrics.json (DVC metrics), table.md, pareto.png.

    Returns:
        The summary written to metrics.json.
    """
    import pandas as pd

    out, metric = sweep_dirs(paths)[0], cfg.evaluate.metric
    rows = trial_rows(records, choice, metric)
    chosen = next((r for r in rows if r["chosen"]), None)
    summary = {"chosen": choice["chosen"], "reason": choice["reason"], "objective": cfg.sweep.objective,
               "metric": metric, "trials": len(records), "within_budget": sum(1 for i in choice["trials"].values()
                                                                            if i["budget"]),
               "seconds": seconds, "teacher": {"val": teacher["val"][metric], "test_accuracy": teacher["test"]["accuracy"],
                                               "latency_ms": teacher["torch_fp32"]["latency_ms_b1"]}}
    if chosen is not None:
        summary["student"] = {k: chosen[k] for k in (f"val_{metric}", "test_accuracy", "test_f1_macro", "params",
                                                     "size_mb", "served_variant", "latency_ms", "fp32_latency_ms")}
        summary["speedup_b1"] = round(teacher["torch_fp32"]["latency_ms_b1"] / max(chosen["latency_ms"], 1e-9), 2)
    clean = [{k: v for k, v in r.items() if k != "val_preds"} | {"choice": choice["trials"][r["id"]]} for r in records]
    write_json(out / "trials.json", {"summary": summary, "teacher": {k: v for k, v in teacher.items() if k != "context"},
                                     "trials": clean})
    write_json(out / "metrics.json", summary)
    write_text(out / "trials.csv", pd.DataFrame(rows).to_csv(index=False))
    write_text(out / "table.md", table_markdown(rows, teacher, metric, choice))
    plot_front(out / "pareto.png", rows, teacher, metric, cfg.sweep.max_drop)
    return summary


def trial_line(n: int, total: int, record: Record, metric: str) -> str:
    """The CLI's line for a finished trial."""
    head = f"trial {n}/{total} {record['id']} {describe_params(record['params'])}:"
    if record["status"] == "pruned":
        return f"{head} {record['reason']}, {record['seconds']:.0f} s"
    s, f = record["served"], record["torch_fp32"]
    return (f"{head} val {metric} {record['val'][metric]:.4f}, {s['variant']} {s['latency_ms_b1']:.2f} ms "
            f"(torch-fp32 {f['latency_ms_b1']:.2f} ms), {record['seconds']:.0f} s")


def sweep(cfg: Config, paths: Paths, params_file: Path | None = None, execute: Executor | None = None,
          echo: Callable[[str], None] = print) -> dict:
    """Run the sweep, write reports/sweep/, and apply the chosen trial to `params_file`.

    Args:
        cfg: the config; its `sweep:` section is the search.
        paths: the workspace, with a trained teacher (models/teacher) and data/processed.
        params_file: params.yaml to write the choice into; None leaves it alone.
        execute: runs trial specs (default: `local_executor`; the Prefect flow passes its tasks).
        echo: where the per-trial lines go.

    Returns:
        The summary of reports/sweep/metrics.json.

    Raises:
        ConfigError: a depth or layer map the teacher cannot give; a separately pretrained student.
        GateError: no trial within the budget (reports written, params.yaml untouched).
    """
    from tasks.infra.common import load_labels

    if cfg.distill.student_model:
        raise ConfigError("sweep: distill.student_model is set; the sweep builds students from the teacher's "
                          "layers (set it to null)")
    if cfg.sweep.work_pool and execute is None:
        raise ConfigError(f"sweep.work_pool: {cfg.sweep.work_pool!r}: trials on a work pool are started by the Prefect "
                          "flow (the sweep deployment, or python -m flows.sweep); set it to null for kdistill sweep")
    start = time.perf_counter()
    dims = space(cfg, teacher_layers(paths))
    context = sweep_context(cfg, paths)
    metric = cfg.evaluate.metric
    teacher, teacher_preds = teacher_reference(cfg, paths, context)
    execute = execute or local_executor(cfg, paths)
    specs = [{"id": trial_id(context, p), "params": p, "pruning": None} for p in grid(dims)]
    finished = {s["id"]: r for s in specs if (r := load_record(paths, s["id"])) is not None}
    records: dict[str, Record] = {}
    total = len(specs) if cfg.sweep.method == "grid" else cfg.sweep.n_trials

    def report(record: Record) -> None:
        if record["status"] == "done" and "val_preds" not in record:
            record = load_record(paths, record["id"])
        finished[record["id"]] = records[record["id"]] = record
        echo(trial_line(len(records), total, record, metric))

    if cfg.sweep.method == "grid":
        for s in specs:
            if s["id"] in finished:
                echo(f"trial {s['id']} {describe_params(s['params'])}: finished earlier, not rerun")
        grid_search(specs, finished, execute, report)
    else:
        optuna_search(cfg, paths, dims, context, finished, execute, report, teacher)
    # Every finished trial of this search space and context counts, an earlier run's included.
    ordered = [finished[s["id"]] for s in specs if s["id"] in finished]
    labels = _val_labels(paths)
    choice = choose(ordered, teacher_preds, labels, cfg, len(load_labels(paths)))
    summary = write_reports(cfg, paths, ordered, teacher, choice, round(time.perf_counter() - start, 1))
    echo(choice["reason"])
    if choice["chosen"] is None:
        raise GateError(f"sweep: {choice['reason']}; params.yaml unchanged (see {sweep_dirs(paths)[0] / 'table.md'})")
    if params_file is not None:
        changes = apply_params(Path(params_file), records_by_id(ordered)[choice["chosen"]]["params"])
        written = ", ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes) or "already there"
        echo(f"{params_file}: {written}; the next `dvc repro` evaluates and promotes it through the gates")
    return summary


def records_by_id(records: list[Record]) -> dict[str, Record]:
    return {r["id"]: r for r in records}


def _val_labels(paths: Paths) -> np.ndarray:
    from tasks.infra.common import load_split

    return load_split(paths, "val")["label"].to_numpy()


def main(argv: list[str] | None = None) -> int:
    """A trial's own process: `python -m tasks.sweep --root ROOT --spec models/sweep/<id>/spec.json`."""
    parser = argparse.ArgumentParser(prog="python -m tasks.sweep", description="run one sweep trial")
    parser.add_argument("--root", required=True)
    parser.add_argument("--spec", required=True)
    args = parser.parse_args(argv)
    from tasks.cli import setup_logging

    setup_logging(quiet=False)
    saved = read_json(args.spec)
    record = run_trial(config_from_dict(saved["config"]), Paths(Path(args.root)), saved["spec"])
    log.info("trial %s: %s", record["id"], record["status"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
