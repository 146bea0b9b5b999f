"""The validation engine: run a list of `Rule`s over a frame with Great Expectations, or stream a file
through their row checks, and turn either outcome into our verdict and one-line messages.

The verdict is ours, not GE's: each rule carries a severity, and only failed 'error' rules stop a
run. GE keeps every result in its context, so the caller can build Data Docs from it afterwards.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tasks.infra.errors import DataError
from tasks.quality.suites import Rule
from tasks.infra.tables import shorten

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.data_context import AbstractDataContext

SITE = "kd"  # our only Data Docs site; GE's default one would write into an uncleaned temp folder
EXAMPLES = 3  # example rows per failed rule, in the report and in the error message


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
                "unexpected_count": self.unexpected_count, "detail": self.detail,
                "expected": self.rule.expected, "examples": self.examples}


@dataclass
class SuiteResult:
    """All rule outcomes of one suite on one frame, and GE's own result (for Data Docs)."""

    name: str
    results: list[RuleResult]
    gx_result: Any = field(default=None, repr=False)

    @property
    def errors(self) -> list[RuleResult]:
        """Failed rules of severity 'error': any one of them stops the pipeline."""
        return [r for r in self.results if not r.success and r.rule.severity == "error"]

    @property
    def warnings(self) -> list[RuleResult]:
        """Failed rules of severity 'warning': reported and logged, never fatal."""
        return [r for r in self.results if not r.success and r.rule.severity == "warning"]


def _gx() -> Any:
    """Great Expectations, imported on first use: the ~5 s import is paid only by code that runs a
    suite, never by a file that fails ingest's streaming scan, nor by `--help`."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # at INFO it logs its own loading
    import great_expectations as gx

    return gx


def build_suite(name: str, rules: list[Rule]) -> gx.ExpectationSuite:
    """A GE suite with one expectation per rule; `meta` carries the rule name and severity."""
    gx = _gx()
    expectations = []
    for rule in rules:
        cls = getattr(gx.expectations, rule.expectation) if isinstance(rule.expectation, str) else rule.expectation
        expectations.append(cls(**rule.kwargs, meta={"rule": rule.name, "severity": rule.severity}))
    return gx.ExpectationSuite(name=name, expectations=expectations)


def new_context(docs_dir: Path | None) -> AbstractDataContext:
    """A fresh in-memory GE context whose only Data Docs site is `docs_dir` (None: no site at all).

    Fresh per run (it takes milliseconds; the 4 s is GE's import, paid once per process), so the
    docs list this run's results and nothing else.
    """
    ctx = _gx().get_context(mode="ephemeral")
    ctx.variables.progress_bars = {"globally": False}
    for site in list(ctx.list_data_docs_sites()):
        ctx.delete_data_docs_site(site)
    if docs_dir is not None:
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
        frame: the data, with any derived columns the rules refer to; its index numbers the rows
            in messages (index 0 is "row 1").

    Returns:
        One `RuleResult` per rule, in the order of `rules`.
    """
    batch = ctx.data_sources.get("frames").add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
    suite = ctx.suites.add(build_suite(name, rules))
    definition = ctx.validation_definitions.add(_gx().ValidationDefinition(name=name, data=batch, suite=suite))
    outcome = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    by_rule = {r.expectation_config.meta["rule"]: r for r in outcome.results}
    return SuiteResult(name, [_rule_result(rule, by_rule[rule.name], frame) for rule in rules], outcome)


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
    indices = res.get("partial_unexpected_index_list") or []
    examples = [_example(frame, i, rule) for i in indices[:EXAMPLES]]
    if count is None and missing is not None:  # set rules: count what is missing instead of rows
        count = len(missing)
    return RuleResult(rule, False, count, examples, detail)


def _exception_message(info: Any) -> str:
    # GE gives either {"raised_exception": ...} or {metric_id: {"raised_exception": ...}, ...}.
    entries = [info] if isinstance(info, dict) and "raised_exception" in info else list((info or {}).values())
    messages = [e.get("exception_message") for e in entries if isinstance(e, dict) and e.get("raised_exception")]
    return str(messages[0]).splitlines()[0] if messages else ""


def _example(frame: pd.DataFrame, row: Any, rule: Rule) -> str:
    # Rows are numbered from 1, as in ingest's messages.
    column = rule.example_column or rule.kwargs.get("column")
    value = frame.at[row, column] if column in frame.columns else None
    if rule.show == "length" and isinstance(value, str):
        return f"row {int(row) + 1}: {len(value)} characters"
    text = repr(value.item() if hasattr(value, "item") else value)  # 7, not np.int64(7)
    return f"row {int(row) + 1}: {shorten(text, 60)}"


def describe(result: RuleResult) -> str:
    """A failed rule in words: `rule NAME failed: WHAT (e.g. EXAMPLES); expected WHAT`."""
    examples = f" (e.g. {', '.join(result.examples)})" if result.examples else ""
    return f"rule {result.rule.name} failed: {result.detail}{examples}; expected {result.rule.expected}"


def scan_chunks(chunks: Iterable[pd.DataFrame], rules_for: Callable[[pd.DataFrame], list[Rule]], where: str) -> int:
    """Stream chunks through the row checks of their rules; stop at the first chunk that breaks one.

    Memory stays at one chunk, so a bad row near the end of a huge file fails without the file
    ever being loaded. GE is not involved: the checks are the rules' vectorised `row_check`s.

    Args:
        chunks: frames whose index numbers the rows of the source (index 0 is "row 1").
        rules_for: the rules for a chunk (its derived columns are added by the caller's function).
        where: the file, for the message.

    Returns:
        The number of rows seen.

    Raises:
        DataError: `WHERE: rule NAME failed: N rows ... (e.g. row R: VALUE); expected ...`.
    """
    rows = 0
    for chunk in chunks:
        for rule in rules_for(chunk):
            if rule.row_check is None:
                continue
            bad = rule.row_check(chunk)
            if bad.any():
                count = int(bad.sum())
                span = f" among rows {rows + 1}-{rows + len(chunk)}" if rows or len(chunk) > 1000 else ""
                detail = rule.problem.format(rows=f"{count} row{'' if count == 1 else 's'}{span}",
                                             observed=None, missing=None)
                examples = [_example(chunk, i, rule) for i in chunk.index[bad.to_numpy()][:EXAMPLES]]
                raise DataError(f"{where}: {describe(RuleResult(rule, False, count, examples, detail))}")
        rows += len(chunk)
    return rows


def suite_body(results: dict[str, SuiteResult]) -> dict:
    """One suite's entry in validation.json: the verdict, counts, and failures with examples.

    Args:
        results: dataset name (a split, a batch) -> its result under this suite.
    """
    errors = sum(len(res.errors) for res in results.values())
    return {
        "success": errors == 0,
        "evaluated": sum(len(res.results) for res in results.values()),
        "failed": errors,
        "warnings": sum(len(res.warnings) for res in results.values()),
        "failures": [r.to_dict(name) for name, res in results.items() for r in res.errors + res.warnings],
    }


def compact_report(bodies: dict[str, dict], docs: str) -> dict:
    """validation.json: every suite's body (see `suite_body`), the overall verdict, the Data Docs index."""
    return {"success": all(b["success"] for b in bodies.values()), "suites": bodies, "data_docs": docs}


def results_to_json(results: dict[str, SuiteResult]) -> dict:
    """GE's results as plain JSON, to be rendered as Data Docs by a later process (`add_stored_results`).

    Times and random ids are left out, so the same data gives the same bytes: the record lives
    in data/processed/, whose hash DVC compares to decide what to rerun.
    """
    stored = {}
    for name, res in results.items():
        if res.gx_result is None:
            continue
        data = res.gx_result.to_json_dict()
        data["meta"] = {k: v for k, v in data.get("meta", {}).items()
                        if k not in ("validation_id", "validation_time", "run_id", "batch_markers")}
        for item in data.get("results", []):
            item.get("expectation_config", {}).pop("id", None)
        stored[name] = data
    return stored


def add_stored_results(ctx: AbstractDataContext, stored: dict, run_name: str = "ingest") -> None:
    """Put results saved by `results_to_json` (in another process) into `ctx`, so its docs show them."""
    _gx()
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResultSchema
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    schema = ExpectationSuiteValidationResultSchema()
    now = datetime.now(timezone.utc).isoformat()
    for name, data in stored.items():
        data = json.loads(json.dumps(data))
        data["meta"] |= {"run_id": {"run_name": run_name, "run_time": now}, "validation_time": now}
        result = schema.load(data)
        key = ValidationResultIdentifier(ExpectationSuiteIdentifier(name=result.suite_name),
                                         result.meta["run_id"], name)
        ctx.validation_results_store.set(key, result)
