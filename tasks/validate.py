"""validate: check `data/processed/` with a Great Expectations suite before any model sees it.

The module is laid out in four layers so that later suites (raw input, new batches) reuse the
last three: rules declared as data (`Rule`, `processed_rules`) -> a GE suite built from them
(`build_suite`) -> a runner over one frame (`run_suite` -> `SuiteResult`) -> the verdict, which is
ours, not GE's: each rule carries a severity, and only failed 'error' rules stop the pipeline.

Outputs: Data Docs in `reports/validation/` and a compact `reports/validation.json` (a DVC metric).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.data_context import AbstractDataContext

from tasks.config import Config, ValidateConfig
from tasks.errors import DataError
from tasks.storage import Paths, atomic_path, read_json, stage_log, write_json

log = logging.getLogger("kd")

SPLITS = ("train", "val", "test")  # as in tasks.ingest, not imported from it: that pulls in sklearn
SITE = "kd"  # our only Data Docs site; GE's default one would write into an uncleaned temp folder
EXAMPLES = 3  # example rows per failed rule, in the report and in the error message


@dataclass(frozen=True)
class Rule:
    """One check, declared as data: which GE expectation, how bad a failure is, how to explain it.

    `problem` and `expected` are message fragments; `problem` may use `{rows}` ("3 rows"),
    `{observed}` (GE's observed value) and `{missing}` (values or columns missing from a required set).
    """

    name: str
    severity: str  # error | warning
    expectation: type[gxe.Expectation]
    kwargs: dict[str, Any]
    problem: str
    expected: str
    example_column: str | None = None  # column shown for example rows; default: the checked one


@dataclass
class RuleResult:
    """The outcome of one rule on one frame."""

    rule: Rule
    success: bool
    unexpected_count: int | None = None
    examples: list[str] = field(default_factory=list)
    detail: str = ""  # `rule.problem` filled in with the observed numbers

    def to_dict(self, split: str) -> dict:
        """The compact form used in validation.json."""
        return {"split": split, "rule": self.rule.name, "severity": self.rule.severity,
                "unexpected_count": self.unexpected_count, "examples": self.examples}


@dataclass
class SuiteResult:
    """All rule outcomes of one suite on one frame."""

    name: str
    results: list[RuleResult]

    @property
    def errors(self) -> list[RuleResult]:
        """Failed rules of severity 'error': any one of them stops the pipeline."""
        return [r for r in self.results if not r.success and r.rule.severity == "error"]

    @property
    def warnings(self) -> list[RuleResult]:
        """Failed rules of severity 'warning': reported and logged, never fatal."""
        return [r for r in self.results if not r.success and r.rule.severity == "warning"]


def processed_rules(cfg: ValidateConfig, labels: list[str], split: str) -> list[Rule]:
    """The rules every processed split must meet; `no_leakage` applies to val and test only.

    Args:
        cfg: the thresholds (`validate` section of params.yaml).
        labels: the label names from summary.json; valid labels are `range(len(labels))`.
        split: train | val | test.

    Returns:
        The rules, schema first, so the first failing error is the most basic one.
    """
    ids = list(range(len(labels)))
    names = ", ".join(f"{i} ({name})" for i, name in enumerate(labels))
    lo, hi = cfg.min_text_chars, cfg.max_text_chars
    rules = [
        Rule("schema_columns", "error", gxe.ExpectTableColumnsToMatchSet,
             {"column_set": ["text", "label"], "exact_match": False},
             "columns {missing} are missing", "columns text and label"),
        Rule("schema_text_type", "error", gxe.ExpectColumnValuesToBeOfType, {"column": "text", "type_": "str"},
             "{rows} whose text is not a string", "str"),
        Rule("schema_label_type", "error", gxe.ExpectColumnValuesToBeOfType, {"column": "label", "type_": "int64"},
             "label has type {observed}", "int64"),
        Rule("text_not_null", "error", gxe.ExpectColumnValuesToNotBeNull, {"column": "text"},
             "{rows} without text", "a text in every row"),
        Rule("text_not_blank", "error", gxe.ExpectColumnValuesToNotMatchRegex, {"column": "text", "regex": r"^\s*$"},
             "{rows} with an empty or whitespace-only text", "non-blank text"),
        Rule("label_in_set", "error", gxe.ExpectColumnValuesToBeInSet, {"column": "label", "value_set": ids},
             "{rows} with a label outside the label set", f"labels among {names}"),
        Rule("labels_all_present", "error", gxe.ExpectColumnDistinctValuesToContainSet,
             {"column": "label", "value_set": ids},
             "labels {missing} never occur", f"every one of {names}"),
        Rule("min_rows", "error", gxe.ExpectTableRowCountToBeBetween, {"min_value": cfg.min_rows_per_split},
             "{observed} rows", f"at least validate.min_rows_per_split={cfg.min_rows_per_split}"),
        Rule("text_length", "warning", gxe.ExpectColumnValueLengthsToBeBetween,
             {"column": "text", "min_value": lo, "max_value": hi},
             "{rows} with a text length outside the limits", f"{lo} to {hi} characters"),
        # `mostly` turns "unique" into "at most this share of rows may repeat a text".
        Rule("duplicates", "warning", gxe.ExpectColumnValuesToBeUnique,
             {"column": "text", "mostly": 1.0 - cfg.max_duplicate_share},
             "{rows} whose text occurs more than once",
             f"at most validate.max_duplicate_share={cfg.max_duplicate_share} of rows"),
    ]
    if split != "train":
        # A derived boolean column keeps the expectation small: no train texts in its value_set.
        rules.append(Rule("no_leakage", "error", gxe.ExpectColumnValuesToBeInSet,
                          {"column": "text_in_train", "value_set": [False]},
                          "{rows} whose text is also in train", "none", example_column="text"))
    return rules


def build_suite(name: str, rules: list[Rule]) -> gx.ExpectationSuite:
    """A GE suite with one expectation per rule; `meta` carries the rule name and severity."""
    return gx.ExpectationSuite(name=name, expectations=[
        rule.expectation(**rule.kwargs, meta={"rule": rule.name, "severity": rule.severity})
        for rule in rules])


def new_context(docs_dir: Path) -> AbstractDataContext:
    """A fresh in-memory GE context whose only Data Docs site is `docs_dir`.

    Fresh per run (it takes milliseconds), so the docs list this run's results and nothing else.
    """
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = {"globally": False}
    for site in list(ctx.list_data_docs_sites()):
        ctx.delete_data_docs_site(site)
    ctx.add_data_docs_site(SITE, {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    ctx.data_sources.add_pandas("frames")
    return ctx


def run_suite(ctx: AbstractDataContext, name: str, rules: list[Rule], frame: pd.DataFrame) -> SuiteResult:
    """Validate `frame` against the rules; the GE result is kept in `ctx` for the Data Docs.

    Args:
        ctx: a context from `new_context`.
        name: the suite name, unique within `ctx` (e.g. `processed.train`).
        rules: what to check.
        frame: the data, with any derived columns the rules refer to.

    Returns:
        One `RuleResult` per rule, in the order of `rules`.
    """
    batch = ctx.data_sources.get("frames").add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
    suite = ctx.suites.add(build_suite(name, rules))
    definition = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    outcome = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    by_rule = {r.expectation_config.meta["rule"]: r for r in outcome.results}
    return SuiteResult(name, [_rule_result(rule, by_rule[rule.name], frame) for rule in rules])


def _rule_result(rule: Rule, gx_result: Any, frame: pd.DataFrame) -> RuleResult:
    """Our view of one GE expectation result: counts, example rows and the filled-in problem."""
    res = gx_result.result or {}
    if gx_result.success:
        return RuleResult(rule, True, res.get("unexpected_count"))
    error = _exception_message(gx_result.exception_info)
    count = res.get("unexpected_count")
    missing = res.get("partial_missing_list") or res.get("details", {}).get("mismatched", {}).get("missing")
    rows = f"{count} row{'' if count == 1 else 's'}"
    detail = (f"could not be evaluated ({error})" if error else
              rule.problem.format(rows=rows, observed=res.get("observed_value"), missing=missing))
    column = rule.example_column or rule.kwargs.get("column")
    indices = res.get("partial_unexpected_index_list") or []
    examples = [_example(frame, i, column) for i in indices[:EXAMPLES]]
    if count is None and missing is not None:  # set rules: count what is missing instead of rows
        count = len(missing)
    return RuleResult(rule, False, count, examples, detail)


def _exception_message(info: Any) -> str:
    # GE gives either {"raised_exception": ...} or {metric_id: {"raised_exception": ...}, ...}.
    entries = [info] if isinstance(info, dict) and "raised_exception" in info else list((info or {}).values())
    messages = [e.get("exception_message") for e in entries if isinstance(e, dict) and e.get("raised_exception")]
    return str(messages[0]).splitlines()[0] if messages else ""


def _example(frame: pd.DataFrame, row: int, column: str | None) -> str:
    # Rows are numbered from 1, as in ingest's messages.
    value = frame.at[row, column] if column in frame.columns else None
    text = repr(value.item() if hasattr(value, "item") else value)  # 7, not np.int64(7)
    return f"row {int(row) + 1}: {text if len(text) <= 60 else text[:57] + '...'}"


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


def compact_report(suites: dict[str, dict[str, SuiteResult]], docs: str) -> dict:
    """validation.json: per suite, the verdict, counts and failures (with examples) over its splits.

    Args:
        suites: suite name -> split -> result, e.g. `{"processed": {"train": ..., "val": ...}}`.
        docs: where the Data Docs index is, relative to the project root.
    """
    bodies = {}
    for suite, results in suites.items():
        errors = sum(len(res.errors) for res in results.values())
        bodies[suite] = {
            "success": errors == 0,
            "evaluated": sum(len(res.results) for res in results.values()),
            "failed": errors,
            "warnings": sum(len(res.warnings) for res in results.values()),
            "failures": [r.to_dict(split) for split, res in results.items() for r in res.errors + res.warnings],
        }
    return {"success": all(b["success"] for b in bodies.values()), "suites": bodies, "data_docs": docs}


def describe(result: RuleResult) -> str:
    """A failed rule in words: `rule NAME failed: WHAT (e.g. EXAMPLES); expected WHAT`."""
    examples = f" (e.g. {', '.join(result.examples)})" if result.examples else ""
    return f"rule {result.rule.name} failed: {result.detail}{examples}; expected {result.rule.expected}"


def validate(cfg: Config, paths: Paths) -> dict:
    """Run the processed-splits suite; write Data Docs and validation.json; stop on an error rule.

    Args:
        cfg: the whole config; only `cfg.validate` is read.
        paths: the project layout; reads `data/processed/`, writes `reports/validation{/,.json}`.

    Returns:
        The compact report (the content of validation.json).

    Raises:
        DataError: one line naming the split file, the first failed error rule and example rows;
            raised only after both reports are written, so the user can read why.
    """
    docs_dir, report_path = paths.reports / "validation", paths.reports / "validation.json"
    index = docs_dir / "index.html"
    with stage_log("validate") as info:
        labels, frames = read_processed(paths)
        info["read"] += [paths.summary] + [paths.split(s) for s in SPLITS]
        with atomic_path(docs_dir) as tmp:
            ctx = new_context(tmp)
            results = {s: run_suite(ctx, f"processed.{s}", processed_rules(cfg.validate, labels, s), frames[s])
                       for s in SPLITS}
            ctx.build_data_docs(site_names=[SITE])
        report = compact_report({"processed": results}, _rel(index, paths))
        write_json(report_path, report)
        info["wrote"] += [index, report_path]
        log.info("[validate] Data Docs: %s", index.resolve())
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
