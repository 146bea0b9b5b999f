"""Two of the three doors where data enters, guarded by the Great Expectations suites: raw input
(`scan_file`, `validate_raw`), which ingest runs before it writes anything, and new batches
(`validate_batch`), for scoring and retraining. The third, the processed splits, is the validate stage
(tasks/validate.py). Here, below the stages, so ingest need not import the validate stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.infra.config import Config, config_from_dict, to_dict
from tasks.infra.errors import DataError
from tasks.infra.storage import atomic_path
from tasks.infra.tables import iter_table, no_rows_error
from tasks.quality.checks import (
    SITE,
    SuiteResult,
    describe,
    new_context,
    results_to_json,
    run_suite,
    scan_chunks,
    suite_body,
)
from tasks.quality.suites import (
    Rule,
    add_raw_columns,
    add_row_columns,
    add_token_columns,
    batch_rules,
    majority_kind,
    raw_rules,
)

log = logging.getLogger("kd")


def check_thresholds(cfg: Config) -> None:
    """The `validate:` thresholds checked again by the schema, which owns their bounds.

    `load_config` has checked them once; this catches a key set after loading (pydantic does not
    check assignments), with the same one line as params.yaml would give.

    Raises:
        ConfigError: a threshold out of its bounds, naming the key.
    """
    config_from_dict({"validate": to_dict(cfg.validate)})


def scan_file(path: str | Path, split: str, cfg: Config, labels: list[str] | None, labelled: bool = True) -> int:
    """Pass 1 over a raw file: stream it in chunks through the raw row rules, in bounded memory.

    Args:
        path: the file; its columns are `cfg.ingest.text_column` and `cfg.ingest.label_column`.
        split: train | val | test.
        cfg: the config.
        labels: the configured label names, or None.
        labelled: False for a file without the label column (only a zero-shot run's train file, which
            ingest checks): its rows are read as unlabelled.

    Returns:
        The number of rows.

    Raises:
        DataError: one line naming the file, the first broken rule, its rows and what was expected.
    """
    ing = cfg.ingest
    columns = (ing.text_column, ing.label_column)
    kind: list[str | None] = []  # the majority kind of the first chunk, kept for the rest

    def rules_for(chunk: pd.DataFrame) -> list[Rule]:
        if not kind:
            kind.append(majority_kind(chunk["label"]))
        return raw_rules(cfg, split, labels, kind[0], columns)

    chunks = (add_row_columns(c if labelled else c.assign(label=None))
              for c in iter_table(path, ing.text_column, ing.label_column if labelled else None))
    rows = scan_chunks(chunks, rules_for, str(path))
    if rows == 0:
        raise no_rows_error(path)
    return rows


def validate_raw(frames: dict[str, pd.DataFrame], cfg: Config, sources: dict[str, str],
                 labels: list[str] | None, columns: tuple[str, str] = ("text", "label")) -> dict:
    """The raw-input suite on each source split (GE), before ingest writes anything.

    Args:
        frames: split -> raw frame (`text`, `label`, values as read); the index numbers rows.
        cfg: the config (thresholds).
        sources: split -> how messages name it (a file path, `embedded:movies`, ...).
        labels: the configured label names, or None when any labels are accepted.
        columns: the source's names for the text and label columns, for messages.

    Returns:
        A record for `data/processed/raw_validation.json`: the suite's body for validation.json and
        GE's results, which the validate stage renders as Data Docs.

    Raises:
        DataError: the first failed error rule, as one line that starts with the source's name.
    """
    check_thresholds(cfg)
    kind = majority_kind(pd.concat([f["label"] for f in frames.values() if "label" in f]))
    counts = pd.concat([add_row_columns(f[["label"]])["label_name"] for f in frames.values()]).value_counts()
    train_texts = set(frames["train"]["text"].map(lambda t: t if isinstance(t, str) else None).dropna())
    ctx = new_context(None)
    results = {}
    for split, frame in frames.items():
        leak = train_texts if split != "train" else None
        derived = add_raw_columns(frame, counts, leak)
        rules = raw_rules(cfg, split, labels, kind, columns, with_train=leak is not None)
        results[split] = run_suite(ctx, f"raw.{split}", rules, derived)
    for split, res in results.items():
        for r in res.warnings:
            log.warning("[ingest] warning: %s: %s", sources[split], describe(r))
    first = next(((s, r) for s, res in results.items() for r in res.errors), None)
    if first:
        raise DataError(f"{sources[first[0]]}: {describe(first[1])}")
    return {"suite": suite_body(results), "results": results_to_json(results)}


@dataclass
class BatchResult:
    """The verdict on one new batch. The caller decides what to do with it: quarantine on errors."""

    source: str
    rows: int
    suite: SuiteResult
    docs: Path | None = None

    @property
    def ok(self) -> bool:
        """True when no error rule failed (warnings allowed)."""
        return not self.suite.errors

    @property
    def errors(self) -> list[str]:
        """One line per failed error rule: `SOURCE: rule NAME failed: ...; expected ...`."""
        return [f"{self.source}: {describe(r)}" for r in self.suite.errors]

    @property
    def warnings(self) -> list[str]:
        """One line per failed warning rule."""
        return [f"{self.source}: {describe(r)}" for r in self.suite.warnings]

    def to_dict(self) -> dict:
        """The batch's report, in the shape of one suite of validation.json."""
        return {"source": self.source, "rows": self.rows, **suite_body({"batch": self.suite}),
                "data_docs": str(self.docs / "index.html") if self.docs else None}


def validate_batch(frame: pd.DataFrame, cfg: Config, labels: list[str] | None, source: str,
                   docs_dir: Path | None = None, tokenizer: Any = None) -> BatchResult:
    """Validate a new batch for scoring (no labels) or retraining (labels); never raises on bad data.

    Contract:
        - `frame` has a `text` column and, when `labels` is given, a `label` column, with values
          as read: `tasks.infra.tables.read_table(path, text_col, label_col)` returns exactly that.
          Other columns are ignored; the frame is not modified; its index numbers the rows
          in messages (index 0 is "row 1").
        - Rules: the raw schema and row rules (`suites.batch_rules`): columns present, at least one
          row, text present / a string / not blank / at most `validate.max_text_chars`; with labels,
          label present and one of `labels`. With a tokenizer, also `empty_tokens` (error) and
          `truncated` (warning, at `base.max_length`).
        - A failed error rule makes `result.ok` False: the caller quarantines the batch (moves it
          aside, keeps `result.errors` with it) instead of scoring or training on it. Warnings
          never block. Nothing is written unless `docs_dir` is given.

    Args:
        frame: the batch.
        cfg: the config (`validate` thresholds, `base.max_length`).
        labels: the model's label names (summary.json's `labels`) for a labelled batch; None for
            an unlabelled one (a `label` column, if any, is then ignored).
        source: how messages name the batch, e.g. its file path.
        docs_dir: a folder for this batch's Data Docs, replaced atomically. Keep it outside
            `reports/validation/`, which belongs to the validate stage.
        tokenizer: the model's tokenizer, to add the token rules.

    Returns:
        A `BatchResult`: `ok`, `errors` and `warnings` (one line each), `to_dict()` for a report.

    Raises:
        ConfigError: a threshold in `validate` is out of range (a user mistake, not a data one).
    """
    check_thresholds(cfg)
    labelled = labels is not None
    data = frame[[c for c in ("text", "label") if c in frame.columns and (c == "text" or labelled)]]
    derived = add_row_columns(data)
    if tokenizer is not None:
        add_token_columns(derived, tokenizer)
    rules = batch_rules(cfg.validate, labels, labelled, cfg.base.max_length if tokenizer is not None else None)
    if docs_dir is None:
        suite = explain_truncation(run_suite(new_context(None), "batch", rules, derived), derived)
        return BatchResult(source, len(frame), suite)
    docs_dir = Path(docs_dir)
    with atomic_path(docs_dir) as tmp:
        ctx = new_context(tmp)
        suite = explain_truncation(run_suite(ctx, "batch", rules, derived), derived)
        ctx.build_data_docs(site_names=[SITE])
    return BatchResult(source, len(frame), suite, docs_dir)


def explain_truncation(suite: SuiteResult, frame: pd.DataFrame) -> SuiteResult:
    """Add to a failed `truncated` rule the base.max_length that would cover 95% and 99% of the texts.

    Args:
        suite: a suite's result on `frame`; changed in place.
        frame: the validated frame, with its `tokens` column (see `suites.add_token_columns`).

    Returns:
        `suite`, for chaining.
    """
    lengths = frame["tokens"].dropna() if "tokens" in frame else pd.Series(dtype=float)
    for result in suite.warnings:
        if result.rule.name == "truncated" and len(lengths):
            p95, p99 = (int(lengths.quantile(q, interpolation="higher")) for q in (0.95, 0.99))
            result.detail += f"; base.max_length={p95} would cover 95% of the texts, {p99} 99%"
    return suite
