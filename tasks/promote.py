"""promote: make the new student the production model, only when it has earned it.

A candidate (models/student/) replaces models/production/ when it passed the evaluate gate and is
no worse than the current production model, both scored on the *current* test split: production
is re-scored here rather than trusted from the day it was promoted, because the data may have
changed since. Every decision, promoted or not, is appended to models/registry.json with its
reason; a refused candidate leaves production untouched.

This module decides (`decide`, `check_learned`, `recheck`); tasks/registry.py writes the registry,
production and the archive, and allocates the version number when it writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tasks.config import Config
from tasks.errors import DataError
from tasks.registry import (
    STAMP,
    Transaction,
    lineage,
    new_entry,
    production_dir,
    read_registry,
    registry_path,
    run_source,
    transaction,
)
from tasks.storage import Paths, hash_dir, read_json, stage_log, write_json

log = logging.getLogger("kd")


@dataclass(frozen=True)
class Gates:
    """The thresholds a candidate must clear."""

    min_retention: float  # evaluate.min_retention: student accuracy / teacher accuracy
    tolerance: float  # promote.tolerance: accuracy the candidate may lose against production


@dataclass(frozen=True)
class Decision:
    """Whether to promote, and the one-line reason a person reads in the log and the registry."""

    promote: bool
    reason: str


def decide(candidate: dict, production: dict | None, gates: Gates) -> Decision:
    """Promote the candidate or keep production.

    Args:
        candidate: reports/metrics.json of the candidate: `retention` and `student.accuracy`.
        production: the production model's scores on the same test split ({"accuracy", ...}),
            or None when there is no production model (or it cannot be compared).
        gates: the thresholds.

    Returns:
        The decision; `promote` is False when a gate fails or the candidate is worse.
    """
    retention, acc = candidate["retention"], candidate["student"]["accuracy"]
    if retention < gates.min_retention:
        return Decision(False, f"evaluate gate: retention {retention:.4f} < evaluate.min_retention "
                               f"{gates.min_retention}")
    if production is None:
        return Decision(True, f"no comparable production model; candidate accuracy {acc:.4f} passed the gates")
    needed = production["accuracy"] - gates.tolerance
    # A hair of slack: accuracies are ratios of the same integers, equal ones must compare equal.
    if acc < needed - 1e-9:
        return Decision(False, f"candidate accuracy {acc:.4f} < production accuracy {production['accuracy']:.4f} "
                               f"- promote.tolerance {gates.tolerance} on the current test split")
    return Decision(True, f"candidate accuracy {acc:.4f} >= production accuracy {production['accuracy']:.4f} "
                          f"- promote.tolerance {gates.tolerance} on the current test split")


def score_production(cfg: Config, paths: Paths, names: list[str]) -> dict | None:
    """Accuracy and macro-F1 of models/production/ on the current test split.

    Returns:
        The scores, or None when there is no production model or its labels differ from the
        data's (a model for another task cannot be compared on this one).
    """
    folder = production_dir(paths)
    if not (folder / "config.json").is_file():
        return None
    from tasks.common import encode_split, load_split
    from tasks.core.loop import predict_logits, resolve_device
    from tasks.metrics import classification_metrics
    from tasks.models import load_classifier, load_tokenizer

    model, _ = load_classifier(str(folder), None, key="models/production")
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if labels != list(names):
        log.warning("[promote] production labels %s differ from the data's %s: not comparable", labels, names)
        return None
    tokenizer = load_tokenizer(str(folder), key="models/production")
    device = resolve_device(cfg.base.device)
    data = encode_split(tokenizer, load_split(paths, "test"), cfg.base.max_length)
    logits = predict_logits(model.to(device), data, tokenizer.pad_token_id, 128, device, progress="production test")
    quality = classification_metrics(data.labels, logits.argmax(-1), names)
    return {"accuracy": quality["accuracy"], "f1_macro": quality["f1_macro"]}


def learned_tests(paths: Paths, registry: dict) -> dict[str, Path]:
    """The new test splits of the retraining cycles production learned from (its lineage)."""
    tests = {}
    for entry in lineage(registry, registry.get("production")):
        snap = entry.get("data_snapshot")
        if snap and (paths.root / snap / "new_test.parquet").is_file():
            tests[f"{snap}/new_test.parquet"] = paths.root / snap / "new_test.parquet"
    return tests


def _accuracy_on(cfg: Config, folder: Path, names: list[str], file: Path) -> float:
    import pandas as pd

    from tasks.common import accuracy
    from tasks.core.loop import resolve_device
    from tasks.models import load_classifier, load_tokenizer

    model, _ = load_classifier(str(folder), names, key=str(folder))
    tokenizer = load_tokenizer(str(folder), key=str(folder))
    return accuracy(model.to(resolve_device(cfg.base.device)), tokenizer, pd.read_parquet(file), cfg.base.max_length)


def check_learned(cfg: Config, paths: Paths, names: list[str], tests: dict[str, Path]) -> tuple[Decision | None, dict]:
    """A candidate from the pipeline must not lose what retraining taught production: on each
    learned test split it may lose at most `promote.tolerance` against production.

    Returns:
        (a refusal naming the split, or None; {split: {"candidate", "production"}}).
    """
    scores = {}
    for name, file in tests.items():
        cand = _accuracy_on(cfg, paths.student, names, file)
        prod = _accuracy_on(cfg, production_dir(paths), names, file)
        scores[name] = {"candidate": cand, "production": prod}
        if cand < prod - cfg.promote.tolerance - 1e-9:
            return Decision(False, f"learned-data gate: candidate accuracy {cand:.4f} < production accuracy {prod:.4f} "
                                   f"- promote.tolerance {cfg.promote.tolerance} on {name} (learned by retraining)"), scores
    return None, scores


def recheck(decision: Decision, judged_against: int | None, txn: Transaction) -> Decision:
    """Under the write lock: a promotion stands only if production is still the model it was judged against."""
    moved = txn.moved_since(judged_against) if decision.promote else None
    return Decision(False, moved) if moved else decision


def judge(cfg: Config, paths: Paths, metrics: dict, names: list[str], registry: dict) -> tuple[Decision, dict | None]:
    """The gates in order: evaluate gate and production on the current test split, then the learned-data gate.

    Returns:
        (the decision, production's scores or None when there is no comparable production model).
    """
    production = score_production(cfg, paths, names)
    decision = decide(metrics, production, Gates(cfg.evaluate.min_retention, cfg.promote.tolerance))
    learned = learned_tests(paths, registry) if production is not None else {}
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
            report = {"promoted": decision.promote, "version": entry["version"], "production_version": txn.production,
                      "reason": decision.reason, "candidate_accuracy": metrics["student"]["accuracy"],
                      "production_accuracy": (production or {}).get("accuracy")}
        write_json(paths.reports / "promote.json", report)
        info["read"] += [metrics_file, paths.student]
        info["wrote"].append(paths.reports / "promote.json")
        verdict = "promoted" if report["promoted"] else "not promoted"
        log.info("[promote] %s: %s; production is version %s", verdict, report["reason"], report["production_version"])
    return report
