"""promote: make the new student the production model, only when it has earned it.

A candidate (models/student/) replaces models/production/ when it passed the evaluate gate and is
no worse than the current production model, both scored on the *current* test split: production
is re-scored here rather than trusted from the day it was promoted, because the data may have
changed since. The comparison is paired (same rows) and carries its confidence interval
(tasks/infra/stats.py); where a gain is demanded, it must be significant. Every decision, promoted or not, is appended to models/registry.json with its
reason; a refused candidate leaves production untouched.

This module decides (`decide`, `check_learned`, `recheck`); tasks/lifecycle/registry.py writes the registry,
production and the archive, and allocates the version number when it writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.infra.splits import load_split
from tasks.models.training import predict_labels
from tasks.infra.config import Config
from tasks.core.loop import resolve_device
from tasks.infra.errors import DataError
from tasks.models.loading import load_classifier, load_tokenizer
from tasks.infra.registry_view import STAMP, lineage, production_dir, read_registry, registry_path, run_source
from tasks.lifecycle.registry import Decision, Transaction, new_entry, transaction
from tasks.infra.stats import Comparison, paired_comparison
from tasks.infra.storage import Paths, hash_dir, read_json, stage_log, write_json

log = logging.getLogger("kd")


@dataclass(frozen=True)
class Gates:
    """The thresholds a candidate must clear."""

    min_retention: float  # evaluate.min_retention: student score / teacher score (in evaluate.metric)
    tolerance: float  # promote.tolerance: score the candidate may lose against production (< 0: a gain required)
    metric: str = "accuracy"  # evaluate.metric
    confidence: float = 0.95  # evaluate.confidence: of the paired comparison's interval


def decide(candidate: dict, production: Comparison | None, gates: Gates) -> Decision:
    """Promote the candidate or keep production.

    With `promote.tolerance >= 0` the candidate must be no worse than production minus the
    tolerance. With a negative tolerance a gain of at least -tolerance is required, and it must be
    significant: the paired interval of the difference lies wholly above zero, so a gain inside the
    noise of the test split is not promoted.

    Args:
        candidate: reports/metrics.json of the candidate: `retention` and `student.<metric>`.
        production: candidate (B) against production (A) on the same test rows, or None when there
            is no production model (or it cannot be compared).
        gates: the thresholds.

    Returns:
        The decision; `promote` is False when a gate fails or the candidate is worse.
    """
    retention, score = candidate["retention"], candidate["student"][gates.metric]
    if retention < gates.min_retention:
        return Decision(False, f"evaluate gate: retention {retention:.4f} < evaluate.min_retention "
                               f"{gates.min_retention}")
    if production is None:
        return Decision(True, f"no comparable production model; candidate {gates.metric} {score:.4f} passed the gates")
    versus = f"candidate against production on the current test split: {production.describe()}"
    # A hair of slack: scores are ratios of the same integers, equal ones must compare equal.
    if production.diff < -gates.tolerance - 1e-9:
        return Decision(False, f"{versus}; below -promote.tolerance {gates.tolerance}")
    if gates.tolerance < 0 and not production.significant_gain:
        return Decision(False, f"{versus}; the required gain {-gates.tolerance} is inside the noise "
                               f"(the interval reaches 0): not promoted")
    return Decision(True, f"{versus}; within promote.tolerance {gates.tolerance}")


def production_predictions(cfg: Config, paths: Paths, names: list[str], frame) -> np.ndarray | None:
    """models/production/'s predicted label ids on `frame`.

    Returns:
        The predictions, or None when there is no production model or its labels differ from the
        data's (a model for another task cannot be compared on this one).
    """
    folder = production_dir(paths)
    if not (folder / "config.json").is_file():
        return None
    model, _ = load_classifier(str(folder), None, key="models/production")
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if labels != list(names):
        log.warning("[promote] production labels %s differ from the data's %s: not comparable", labels, names)
        return None
    return _predictions(cfg, folder, names, frame)


def _predictions(cfg: Config, folder: Path, names: list[str], frame) -> np.ndarray:
    model, _ = load_classifier(str(folder), names, key=str(folder))
    tokenizer = load_tokenizer(str(folder), key=str(folder))
    return predict_labels(model.to(resolve_device(cfg.base.device)), tokenizer, frame, cfg.base.max_length,
                          cfg.base.precision)


def production_comparison(cfg: Config, paths: Paths, names: list[str]) -> Comparison | None:
    """The candidate (models/student/) against production on the current test split, or None when
    there is no comparable production model."""
    test = load_split(paths, "test")
    reference = production_predictions(cfg, paths, names, test)
    if reference is None:
        return None
    return compare(cfg, test["label"].to_numpy(), reference, _predictions(cfg, paths.student, names, test), len(names))


def compare(cfg: Config, labels: np.ndarray, reference: np.ndarray, contender: np.ndarray, classes: int) -> Comparison:
    """The contender against the reference on the same rows, in evaluate.metric at evaluate.confidence."""
    return paired_comparison(labels, reference, contender, cfg.evaluate.metric, classes, cfg.evaluate.confidence,
                             seed=cfg.base.seed)


def learned_tests(paths: Paths, registry: dict) -> dict[str, Path]:
    """The new test splits of the retraining cycles production learned from (its lineage)."""
    tests = {}
    for entry in lineage(registry, registry.get("production")):
        snap = entry.get("data_snapshot")
        if snap and (paths.root / snap / "new_test.parquet").is_file():
            tests[f"{snap}/new_test.parquet"] = paths.root / snap / "new_test.parquet"
    return tests


def check_learned(cfg: Config, paths: Paths, names: list[str], tests: dict[str, Path]) -> tuple[Decision | None, dict]:
    """A candidate from the pipeline must not lose what retraining taught production: on each
    learned test split it may lose at most `promote.tolerance` against production.

    Returns:
        (a refusal naming the split, or None; {split: candidate against production, as a dict}).
    """
    scores = {}
    for name, file in tests.items():
        frame = pd.read_parquet(file)
        versus = compare(cfg, frame["label"].to_numpy(), _predictions(cfg, production_dir(paths), names, frame),
                         _predictions(cfg, paths.student, names, frame), len(names))
        scores[name] = versus.to_dict()
        if versus.diff < -cfg.promote.tolerance - 1e-9:
            return Decision(False, f"learned-data gate: candidate against production on {name} (learned by "
                                   f"retraining): {versus.describe()}; below -promote.tolerance "
                                   f"{cfg.promote.tolerance}"), scores
    return None, scores


def recheck(decision: Decision, judged_against: int | None, txn: Transaction) -> Decision:
    """Under the write lock: a promotion stands only if production is still the model it was judged against."""
    moved = txn.moved_since(judged_against) if decision.promote else None
    return Decision(False, moved) if moved else decision


def judge(cfg: Config, paths: Paths, metrics: dict, names: list[str], registry: dict) -> tuple[Decision, dict | None]:
    """The gates in order: evaluate gate and production on the current test split, then the learned-data gate.

    Returns:
        (the decision, the comparison with production as a dict, or None when there is no
        comparable production model).
    """
    versus = production_comparison(cfg, paths, names)
    gates = Gates(cfg.evaluate.min_retention, cfg.promote.tolerance, cfg.evaluate.metric, cfg.evaluate.confidence)
    decision = decide(metrics, versus, gates)
    production = None if versus is None else {cfg.evaluate.metric: versus.a, "comparison": versus.to_dict()}
    learned = learned_tests(paths, registry) if versus is not None else {}
    if decision.promote and learned:
        refusal, production["learned"] = check_learned(cfg, paths, names, learned)
        decision = refusal or decision
    return decision, production


def _entry(version: int, decision: Decision, metrics: dict, summary: dict, model_hash: str,
           production: dict | None, before: int | None) -> dict:
    s = metrics["student"]
    return new_entry(
        version, decision.promote, decision.reason, trigger="pipeline", source=run_source(None, "kdistill promote"),
        parent=before,
        metrics={"accuracy": s["accuracy"], "f1_macro": s["f1_macro"], "retention": metrics["retention"],
                 "latency_ms_b1": s["latency_ms_b1"], "size_mb": s["size_mb"], "test_rows": metrics["test_rows"]},
        production_before={"version": before, **(production or {})},
        data_hash=summary.get("data_hash"), model_hash=model_hash)


def promote(cfg: Config, paths: Paths) -> dict:
    """Run the promote stage. Writes models/production/ (when promoted), models/registry.json and
    reports/promote.json.

    Returns:
        reports/promote.json's content: promoted, version, production_version, reason, scores.

    Raises:
        LockBusy: another writer held the registry's write lock too long (nothing was written).
    """
    metrics_file = paths.reports / "metrics.json"
    needed_from = {metrics_file: "evaluate", paths.summary: "ingest", paths.student / "config.json": "finetune"}
    for needed, stage in needed_from.items():
        if not needed.is_file():
            raise DataError(f"{needed}: not found; run the {stage} stage first")
    with stage_log("promote") as info:
        metrics, summary = read_json(metrics_file), read_json(paths.summary)
        registry = read_registry(paths)
        current = registry.get("production")
        model_hash = hash_dir(paths.student)
        stamp = production_dir(paths) / STAMP
        if stamp.is_file() and read_json(stamp).get("model_hash") == model_hash:
            report = {"promoted": False, "version": current, "production_version": current,
                      "reason": f"models/student is already the production model (version {current})"}
        else:
            decision, production = judge(cfg, paths, metrics, summary["labels"], registry)
            with transaction(paths, "promote") as txn:
                decision = recheck(decision, current, txn)
                entry = _entry(txn.next_version(), decision, metrics, summary, model_hash, production, current)
                txn.add(entry, paths.student if decision.promote else None)
            if decision.promote:
                info["wrote"] += [production_dir(paths), paths.root / "models" / "versions"]
            info["wrote"].append(registry_path(paths))
            metric = cfg.evaluate.metric
            report = {"promoted": decision.promote, "version": entry["version"], "production_version": txn.production,
                      "reason": decision.reason, "metric": metric, f"candidate_{metric}": metrics["student"][metric],
                      f"production_{metric}": (production or {}).get(metric),
                      "comparison": (production or {}).get("comparison")}
        write_json(paths.reports / "promote.json", report)
        info["read"] += [metrics_file, paths.student]
        info["wrote"].append(paths.reports / "promote.json")
        verdict = "promoted" if report["promoted"] else "not promoted"
        log.info("[promote] %s: %s; production is version %s", verdict, report["reason"], report["production_version"])
    return report
