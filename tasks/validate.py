"""validate: the processed splits' guard, with Great Expectations as the engine, before any model sees them.

One of three doors (rules in `tasks/quality/suites.py`, engine in `tasks/quality/checks.py`): the other
two, raw input (run by ingest before it writes anything) and new batches (for scoring and retraining),
are `tasks/quality/doors.py`, so no stage imports this one.

Outputs of the stage: Data Docs in `reports/validation/` (one page per validated dataset: the raw
input as ingest saw it, and each processed split) and a compact `reports/validation.json` (a DVC metric).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from tasks.infra.config import Config
from tasks.infra.errors import DataError
from tasks.infra.storage import Paths, atomic_path, read_json, stage_log, write_json
from tasks.quality.checks import SITE, add_stored_results, compact_report, describe, new_context, run_suite, suite_body
from tasks.quality.doors import check_thresholds, explain_truncation
from tasks.quality.suites import add_processed_columns, labels_optional, processed_rules

log = logging.getLogger("kd")

SPLITS = ("train", "val", "test")  # as in tasks.ingest, not imported from it: that pulls in sklearn


def read_processed(paths: Paths) -> tuple[list[str], dict[str, pd.DataFrame]]:
    """The label names from summary.json and the three splits, with the derived `text_in_train`.

    Raises:
        DataError: a file is missing or unreadable (run the ingest stage first).
    """
    if not paths.summary.is_file():
        raise DataError(f"{_rel(paths.summary, paths)}: not found; run the ingest stage first")
    try:
        summary = read_json(paths.summary)
    except ValueError as err:
        raise DataError(f"{_rel(paths.summary, paths)}: not valid JSON ({err}); rerun the ingest stage") from None
    labels = summary.get("labels") if isinstance(summary, dict) else None
    if not isinstance(labels, list) or not labels:
        raise DataError(f"{_rel(paths.summary, paths)}: no 'labels' list; rerun the ingest stage")
    frames = {}
    for split in SPLITS:
        path = paths.split(split)
        if not path.is_file():
            raise DataError(f"{_rel(path, paths)}: not found; run the ingest stage first")
        try:
            frames[split] = pd.read_parquet(path).reset_index(drop=True)
        except (OSError, ValueError) as err:
            raise DataError(f"{_rel(path, paths)}: cannot be read as Parquet ({str(err).splitlines()[0]})") from None
    if "text" in frames["train"].columns:
        train_texts = set(frames["train"]["text"].dropna())
        for split in SPLITS[1:]:
            if "text" in frames[split].columns:
                frames[split]["text_in_train"] = frames[split]["text"].isin(train_texts)
    return labels, frames


def _raw_record(paths: Paths) -> dict | None:
    """What ingest recorded of the raw suite; None for data written without it."""
    path = paths.raw_validation
    try:
        record = read_json(path) if path.is_file() else None
    except ValueError:
        raise DataError(f"{_rel(path, paths)}: not valid JSON; rerun the ingest stage") from None
    return record if isinstance(record, dict) and "suite" in record else None


def validate(cfg: Config, paths: Paths) -> dict:
    """Run the processed-splits suite; write Data Docs and validation.json; stop on an error rule.

    Args:
        cfg: the whole config; reads `validate`, `base.max_length` and `teacher.model` (its tokenizer).
        paths: the project layout; reads `data/processed/`, writes `reports/validation{/,.json}`.

    Returns:
        The compact report (the content of validation.json).

    Raises:
        DataError: one line naming the split file, the first failed error rule and example rows;
            raised only after both reports are written, so the user can read why.
    """
    from tasks.models.loading import load_tokenizer  # imported here: torch and transformers are slow to import

    check_thresholds(cfg)
    docs_dir, report_path = paths.reports / "validation", paths.reports / "validation.json"
    index = docs_dir / "index.html"
    with stage_log("validate") as info:
        labels, frames = read_processed(paths)
        raw = _raw_record(paths)
        info["read"] += [paths.summary] + [paths.split(s) for s in SPLITS]
        tokenizer = load_tokenizer(cfg.teacher.model)
        for frame in frames.values():
            add_processed_columns(frame, tokenizer=tokenizer)
        with atomic_path(docs_dir) as tmp:
            ctx = new_context(tmp)
            if raw:
                add_stored_results(ctx, raw.get("results", {}))
            results = {s: explain_truncation(run_suite(ctx, f"processed.{s}",
                                                       processed_rules(cfg.validate, labels, s, cfg.base.max_length,
                                                                       labels_optional(cfg, s)),
                                                       frames[s]), frames[s])
                       for s in SPLITS}
            ctx.build_data_docs(site_names=[SITE])
        bodies = ({"raw": raw["suite"]} if raw else {}) | {"processed": suite_body(results)}
        report = compact_report(bodies, _rel(index, paths))
        write_json(report_path, report)
        info["wrote"] += [index, report_path]
        log.info("[validate] Data Docs: %s", index.resolve())
        for page in sorted((docs_dir / "validations").rglob("*.html")):
            log.info("[validate] page: %s", _rel(page, paths))
        for split, res in results.items():
            for r in res.warnings:
                log.warning("[validate] warning: %s: %s", _rel(paths.split(split), paths), describe(r))
    first = next(((s, r) for s, res in results.items() for r in res.errors), None)
    if first:
        split, result = first
        raise DataError(f"{_rel(paths.split(split), paths)}: {describe(result)} — see {_rel(index, paths)}")
    return report


def _rel(path: Path, paths: Paths) -> str:
    """`path` relative to the project root, as a user would type it."""
    try:
        return str(path.relative_to(paths.root))
    except ValueError:
        return str(path)
