"""One trial: the distill stage's own function with the trial's `distill:` values, into models/sweep/<id>/,
then measured as the serving benchmark measures (quality, size, latency, throughput per variant). Its
own process runs `python -m tasks.sweep --root ROOT --spec SPEC` (`main`)."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.infra.config import Config, config_from_dict
from tasks.infra.stats import metric_value
from tasks.infra.storage import Paths, read_json
from tasks.sweep.records import Trial, save_record, sweep_dirs
from tasks.sweep.space import trial_config

log = logging.getLogger("kd")


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


def measure(cfg: Config, paths: Paths, model_dir: Path, variants: Iterable[str]) -> tuple[dict, np.ndarray]:
    """Quality, size and speed of a saved classifier, as the serving benchmark measures them.

    Val and test scores are torch-fp32's; every variant is timed at evaluate.threads, at batch 1
    (evaluate.latency_runs test rows, interleaved across variants) and batch 32 (the test split).

    Returns:
        (metrics, val predictions [N] of torch-fp32).
    """
    import torch

    from tasks.infra.splits import load_labels, load_split
    from tasks.models.training import encode_split
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


def run_trial(cfg: Config, paths: Paths, spec: dict) -> Trial:
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
    trial = Trial(id=spec["id"], params=spec["params"], status="done")
    try:
        report = distill(trial_config(cfg, spec["params"]), tpaths, on_epoch=hook)
        trial.history, trial.train_seconds, trial.cache = report["history"], report["train_seconds"], report["cache"]
        metrics, trial.val_preds = measure(cfg, paths, tpaths.distilled, cfg.sweep.variants)
        for key, value in metrics.items():  # val, test, param_count, size_mb, torch_fp32, served, variants
            setattr(trial, key, value)
    except Pruned as why:
        trial.status, trial.reason, trial.history = "pruned", str(why), hook.history if hook else []
    trial.seconds = round(time.perf_counter() - start, 1)
    save_record(folder, trial)
    return trial


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


def main(argv: list[str] | None = None) -> int:
    """A trial's own process: `python -m tasks.sweep --root ROOT --spec models/sweep/<id>/spec.json`."""
    parser = argparse.ArgumentParser(prog="python -m tasks.sweep", description="run one sweep trial")
    parser.add_argument("--root", required=True)
    parser.add_argument("--spec", required=True)
    args = parser.parse_args(argv)
    from tasks.infra.logs import setup_logging

    setup_logging(quiet=False)
    saved = read_json(args.spec)
    trial = run_trial(config_from_dict(saved["config"]), Paths(Path(args.root)), saved["spec"])
    log.info("trial %s: %s", trial.id, trial.status)
    return 0
