"""Data tests of the validate stage: a clean processed dataset passes, and each deliberately broken
one fails on the rule it breaks, with one line that names the split file and the rule."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import great_expectations.expectations as gxe
import pandas as pd
import pytest

from tasks.config import Config
from tasks.errors import DataError
from tasks.storage import Paths, hash_dir, read_json, write_json, write_parquet
from tasks.validate import Rule, new_context, run_suite, validate

LABELS = ["negative", "positive"]
ROWS = {"train": 20, "val": 8, "test": 8}


def clean_frames() -> dict[str, pd.DataFrame]:
    """Distinct texts per split, both labels in each, enough rows for the default thresholds."""
    return {split: pd.DataFrame({"text": [f"{split} review number {i}" for i in range(n)],
                                 "label": pd.Series([i % 2 for i in range(n)], dtype="int64")})
            for split, n in ROWS.items()}


def write_processed(paths: Paths, frames: dict[str, pd.DataFrame]) -> None:
    """The layout tasks/ingest.py writes: three Parquet splits and summary.json."""
    for split, frame in frames.items():
        write_parquet(paths.split(split), frame)
    write_json(paths.summary, {
        "labels": LABELS,
        "splits": {s: {"rows": len(f), "counts": {}} for s, f in frames.items()},
        "data_hash": "0" * 16,
    })


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path)


def _leak(f: dict[str, pd.DataFrame]) -> None:
    f["test"].loc[2, "text"] = f["train"].loc[5, "text"]


def _blank(f: dict[str, pd.DataFrame]) -> None:
    f["val"].loc[1, "text"] = "   "


def _empty(f: dict[str, pd.DataFrame]) -> None:
    f["train"].loc[3, "text"] = ""


def _null(f: dict[str, pd.DataFrame]) -> None:
    f["train"].loc[4, "text"] = None


def _label_out_of_set(f: dict[str, pd.DataFrame]) -> None:
    f["train"].loc[0, "label"] = 7


def _label_missing(f: dict[str, pd.DataFrame]) -> None:
    f["val"]["label"] = 0


def _too_few_rows(f: dict[str, pd.DataFrame]) -> None:
    f["test"] = f["test"].head(3)


def _float_labels(f: dict[str, pd.DataFrame]) -> None:
    f["val"]["label"] = f["val"]["label"].astype("float64")


def _no_label_column(f: dict[str, pd.DataFrame]) -> None:
    f["test"] = f["test"][["text"]]


ERROR_CASES = [
    (_leak, "test", "no_leakage", "row 3: 'train review number 5'"),
    (_blank, "val", "text_not_blank", "row 2: '   '"),
    (_empty, "train", "text_not_blank", "row 4: ''"),
    (_null, "train", "text_not_null", "row 5: None"),
    (_label_out_of_set, "train", "label_in_set", "row 1: 7"),
    (_label_missing, "val", "labels_all_present", "[1]"),
    (_too_few_rows, "test", "min_rows", "3 rows"),
    (_float_labels, "val", "schema_label_type", "float64"),
    (_no_label_column, "test", "schema_columns", "columns ['label'] are missing"),
]


def test_clean_data_passes(paths: Paths, caplog: pytest.LogCaptureFixture) -> None:
    write_processed(paths, clean_frames())
    with caplog.at_level(logging.INFO, logger="kd"):
        report = validate(Config(), paths)
    body = report["suites"]["processed"]
    assert report["success"] and body["success"]
    assert body["failed"] == 0 and body["warnings"] == 0 and body["failures"] == []
    assert body["evaluated"] == 10 + 11 + 11  # no_leakage runs on val and test only
    assert read_json(paths.reports / "validation.json") == report
    index = paths.reports / "validation" / "index.html"
    assert index.is_file() and report["data_docs"] == "reports/validation/index.html"
    assert "processed.test" in index.read_text()
    assert str(index.resolve()) in caplog.text
    assert sorted(p.name for p in paths.reports.iterdir()) == ["validation", "validation.json"]  # no temp left


@pytest.mark.parametrize(("breakage", "split", "rule", "example"), ERROR_CASES,
                         ids=[case[2] + case[0].__name__ for case in ERROR_CASES])
def test_error_rule_fails_with_one_line(paths: Paths, breakage: Callable, split: str, rule: str,
                                        example: str) -> None:
    frames = clean_frames()
    breakage(frames)
    write_processed(paths, frames)
    before = hash_dir(paths.processed)

    with pytest.raises(DataError) as err:
        validate(Config(), paths)

    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"data/processed/{split}.parquet: rule {rule} failed: ")
    assert example in message
    assert message.endswith("see reports/validation/index.html")
    # Both reports are written before the error, and the data is left exactly as it was.
    report = read_json(paths.reports / "validation.json")
    assert report["success"] is False and report["suites"]["processed"]["failed"] >= 1
    first = report["suites"]["processed"]["failures"][0]
    assert (first["split"], first["rule"], first["severity"]) == (split, rule, "error")
    assert (paths.reports / "validation" / "index.html").is_file()
    assert hash_dir(paths.processed) == before


def _duplicates(f: dict[str, pd.DataFrame]) -> None:
    f["train"].loc[[2, 4, 6], "text"] = f["train"].loc[0, "text"]


def _long_text(f: dict[str, pd.DataFrame]) -> None:
    f["val"].loc[0, "text"] = "x" * (Config().validate.max_text_chars + 1)


@pytest.mark.parametrize(("breakage", "split", "rule", "count"),
                         [(_duplicates, "train", "duplicates", 4), (_long_text, "val", "text_length", 1)])
def test_warning_rule_passes_and_is_reported(paths: Paths, breakage: Callable, split: str, rule: str,
                                             count: int) -> None:
    frames = clean_frames()
    breakage(frames)
    write_processed(paths, frames)

    report = validate(Config(), paths)

    body = report["suites"]["processed"]
    assert report["success"] and body["failed"] == 0 and body["warnings"] == 1
    (failure,) = body["failures"]
    assert failure["split"] == split and failure["rule"] == rule and failure["severity"] == "warning"
    assert failure["unexpected_count"] == count and failure["examples"][0].startswith("row ")


def test_rerun_replaces_reports(paths: Paths) -> None:
    frames = clean_frames()
    _leak(frames)
    write_processed(paths, frames)
    with pytest.raises(DataError):
        validate(Config(), paths)
    write_processed(paths, clean_frames())

    assert validate(Config(), paths)["success"]
    assert read_json(paths.reports / "validation.json")["success"]
    # The docs folder was swapped, not appended to: one validation page per split.
    assert len(list((paths.reports / "validation" / "validations").rglob("*.html"))) == 3


def test_missing_split_names_the_file(paths: Paths) -> None:
    write_processed(paths, clean_frames())
    paths.split("val").unlink()
    with pytest.raises(DataError, match=r"^data/processed/val\.parquet: not found; run the ingest stage"):
        validate(Config(), paths)


def test_run_suite_works_on_any_frame(tmp_path: Path) -> None:
    rules = [Rule("positive_score", "error", gxe.ExpectColumnValuesToBeBetween,
                  {"column": "score", "min_value": 0}, "{rows} with a negative score", "score >= 0")]
    frame = pd.DataFrame({"score": [1.0, -2.0, 3.0]})
    result = run_suite(new_context(tmp_path / "docs"), "scores", rules, frame)
    (failed,) = result.errors
    assert failed.unexpected_count == 1 and failed.examples == ["row 2: -2.0"]
    assert failed.detail == "1 row with a negative score" and result.warnings == []
