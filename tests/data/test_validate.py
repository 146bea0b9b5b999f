"""Data tests of the validate stage: a clean processed dataset passes, and each deliberately broken
one fails on the rule it breaks, with one line that names the split file and the rule.

The token rules use the tiny teacher's tokenizer (tests/conftest.py): no model is loaded."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import great_expectations.expectations as gxe
import pandas as pd
import pytest

from tasks.infra.config import Config
from tasks.infra.errors import ConfigError, DataError
from tasks.infra.storage import Paths, hash_dir, read_json, write_json, write_parquet
from tasks.quality.checks import new_context, run_suite
from tasks.quality.suites import Rule
from tasks.validate import validate

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


@pytest.fixture
def cfg(tiny_teacher_dir: Path) -> Config:
    """The default config with the tiny teacher, whose tokenizer the token rules use."""
    config = Config()
    config.teacher.model = str(tiny_teacher_dir)
    return config


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
    f["train"]["label"] = 0


def _too_few_rows(f: dict[str, pd.DataFrame]) -> None:
    f["test"] = f["test"].head(3)


def _float_labels(f: dict[str, pd.DataFrame]) -> None:
    f["val"]["label"] = f["val"]["label"].astype("float64")


def _no_label_column(f: dict[str, pd.DataFrame]) -> None:
    f["test"] = f["test"][["text"]]


def _rare_class(f: dict[str, pd.DataFrame]) -> None:
    # 1 positive in 40 rows: under the floor of 2 rows per class in train.
    f["train"] = pd.DataFrame({"text": [f"train review number {i}" for i in range(40)],
                               "label": pd.Series([1] + [0] * 39, dtype="int64")})


def _no_tokens(f: dict[str, pd.DataFrame]) -> None:
    f["val"].loc[4, "text"] = "\u200b\u200b"  # zero-width spaces: not blank, yet nothing once tokenised


ERROR_CASES = [
    (_leak, "test", "no_leakage", "row 3: 'train review number 5'"),
    (_blank, "val", "text_not_blank", "row 2: '   '"),
    (_empty, "train", "text_not_blank", "row 4: ''"),
    (_null, "train", "text_not_null", "row 5: None"),
    (_label_out_of_set, "train", "label_in_set", "row 1: 7"),
    (_label_missing, "train", "labels_all_present", "[1]"),
    (_too_few_rows, "test", "min_rows", "3 rows"),
    (_float_labels, "val", "schema_label_type", "float64"),
    (_no_label_column, "test", "schema_columns", "columns ['label'] are missing"),
    (_rare_class, "train", "class_rows", "the rarest class has 1 rows"),
    (_no_tokens, "val", "empty_tokens", "row 5: '\\u200b\\u200b'"),
]


def test_clean_data_passes(paths: Paths, cfg: Config, caplog: pytest.LogCaptureFixture) -> None:
    write_processed(paths, clean_frames())
    with caplog.at_level(logging.INFO, logger="kd"):
        report = validate(cfg, paths)
    body = report["suites"]["processed"]
    assert report["success"] and body["success"]
    assert body["failed"] == 0 and body["warnings"] == 0 and body["failures"] == []
    assert body["evaluated"] == 13 + 14 + 14  # no_leakage runs on val and test only
    assert "raw" not in report["suites"]  # no raw_validation.json: data written without ingest
    assert read_json(paths.reports / "validation.json") == report
    index = paths.reports / "validation" / "index.html"
    assert index.is_file() and report["data_docs"] == "reports/validation/index.html"
    assert "processed.test" in index.read_text()
    assert str(index.resolve()) in caplog.text
    for split in ("train", "val", "test"):  # one page per dataset, each named in the log
        (page,) = (paths.reports / "validation" / "validations" / "processed" / split).rglob("*.html")
        assert str(page.relative_to(paths.root)) in caplog.text
    assert sorted(p.name for p in paths.reports.iterdir()) == ["validation", "validation.json"]  # no temp left


@pytest.mark.parametrize(("breakage", "split", "rule", "example"), ERROR_CASES,
                         ids=[case[2] + case[0].__name__ for case in ERROR_CASES])
def test_error_rule_fails_with_one_line(paths: Paths, cfg: Config, breakage: Callable, split: str, rule: str,
                                        example: str) -> None:
    frames = clean_frames()
    breakage(frames)
    write_processed(paths, frames)
    before = hash_dir(paths.processed)

    with pytest.raises(DataError) as err:
        validate(cfg, paths)

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


def _truncated(f: dict[str, pd.DataFrame]) -> None:
    # 2 of 20 rows over max_length (64 tokens): a share of 0.1, over the 0.05 allowed.
    f["train"].loc[[3, 8], "text"] = ["great " * 80, "awful " * 70]


@pytest.mark.parametrize(("breakage", "split", "rule", "count"),
                         [(_duplicates, "train", "duplicates", 4), (_long_text, "val", "text_length", 1),
                          (_truncated, "train", "truncated", 2)])
def test_warning_rule_passes_and_is_reported(paths: Paths, cfg: Config, breakage: Callable, split: str, rule: str,
                                             count: int) -> None:
    frames = clean_frames()
    breakage(frames)
    write_processed(paths, frames)

    report = validate(cfg, paths)

    body = report["suites"]["processed"]
    assert report["success"] and body["failed"] == 0 and body["warnings"] == 1
    (failure,) = body["failures"]
    assert failure["split"] == split and failure["rule"] == rule and failure["severity"] == "warning"
    assert failure["unexpected_count"] == count and failure["examples"][0].startswith("row ")


def test_rare_class_outside_train_is_a_warning(paths: Paths, cfg: Config) -> None:
    """Many-class tasks (trec50) have classes too rare to reach every split: a warning, not an error."""
    frames = clean_frames()
    frames["val"]["label"] = 0  # class 1 absent from val
    frames["test"].loc[:, "label"] = [1] + [0] * (ROWS["test"] - 1)  # class 1: one row in test
    write_processed(paths, frames)

    report = validate(cfg, paths)

    body = report["suites"]["processed"]
    assert report["success"] and body["failed"] == 0
    assert {(f["split"], f["rule"]) for f in body["failures"]} == {("val", "labels_all_present"),
                                                                   ("test", "class_rows")}


def test_one_truncated_row_is_within_the_share(paths: Paths, cfg: Config) -> None:
    frames = clean_frames()
    frames["train"].loc[3, "text"] = "great " * 80  # 1 of 20 rows: exactly the 0.05 allowed
    write_processed(paths, frames)
    assert validate(cfg, paths)["suites"]["processed"]["warnings"] == 0


def test_rerun_replaces_reports(paths: Paths, cfg: Config) -> None:
    frames = clean_frames()
    _leak(frames)
    write_processed(paths, frames)
    with pytest.raises(DataError):
        validate(cfg, paths)
    write_processed(paths, clean_frames())

    assert validate(cfg, paths)["success"]
    assert read_json(paths.reports / "validation.json")["success"]
    # The docs folder was swapped, not appended to: one validation page per split.
    assert len(list((paths.reports / "validation" / "validations").rglob("*.html"))) == 3


def test_missing_split_names_the_file(paths: Paths, cfg: Config) -> None:
    write_processed(paths, clean_frames())
    paths.split("val").unlink()
    with pytest.raises(DataError, match=r"^data/processed/val\.parquet: not found; run the ingest stage"):
        validate(cfg, paths)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("max_duplicate_share", 1.5, r"a value in \[0, 1\), got 1.5"), ("max_truncated_share", -0.1, r"a value in \[0, 1\)"),
    ("min_class_rows", 0, r">= 1, got 0"), ("max_text_chars", 0, r">= 1, got 0")])
def test_thresholds_out_of_range_name_the_key(paths: Paths, cfg: Config, key: str, value: float,
                                               expected: str) -> None:
    """A threshold set after loading (pydantic does not check assignments) is refused by the schema's bounds."""
    write_processed(paths, clean_frames())
    setattr(cfg.validate, key, value)
    with pytest.raises(ConfigError, match=rf"^validate\.{key}: expected {expected}"):
        validate(cfg, paths)


def test_run_suite_works_on_any_frame(tmp_path: Path) -> None:
    rules = [Rule("positive_score", "error", gxe.ExpectColumnValuesToBeBetween,
                  {"column": "score", "min_value": 0}, "{rows} with a negative score", "score >= 0")]
    frame = pd.DataFrame({"score": [1.0, -2.0, 3.0]})
    result = run_suite(new_context(tmp_path / "docs"), "scores", rules, frame)
    (failed,) = result.errors
    assert failed.unexpected_count == 1 and failed.examples == ["row 2: -2.0"]
    assert failed.detail == "1 row with a negative score" and result.warnings == []


def test_reports_cover_the_raw_input_and_each_split(tmp_path: Path, cfg: Config,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from tasks.ingest import ingest

    source = tmp_path / "reviews.csv"
    rows = [(f"a {'fine' if i % 2 else 'dull'} review, number {i}", "positive" if i % 2 else "negative")
            for i in range(60)]
    rows.append(rows[0])  # a repeat (1 of 61 rows: under the share, so ingest drops it)
    rows.append((rows[1][0], "negative"))  # the text of row 2, with the other label: a warning
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(source, index=False)
    cfg.ingest.source, cfg.ingest.files = "files", {"train": str(source), "val": None, "test": None}
    first, second = Paths(tmp_path / "a"), Paths(tmp_path / "b")

    summary = ingest(cfg, first)
    ingest(cfg, second)
    with caplog.at_level(logging.INFO, logger="kd"):
        report = validate(cfg, first)

    # Ingest is deterministic to the byte (DVC compares hashes), raw-suite record included.
    assert hash_dir(first.processed) == hash_dir(second.processed)
    assert summary["duplicates_dropped"] == 1 and summary["conflicts_dropped"] == 2
    assert set(report["suites"]) == {"raw", "processed"} and report["success"]
    raw = report["suites"]["raw"]
    assert (raw["success"], raw["evaluated"], raw["failed"], raw["warnings"]) == (True, 14, 0, 1)
    (conflict,) = raw["failures"]
    assert conflict == {"split": "train", "rule": "label_conflicts", "severity": "warning", "unexpected_count": 2,
                        "detail": "2 rows whose text also occurs with another label",
                        "expected": "one label per text (ingest drops such texts)",
                        "examples": ["row 2: 'a fine review, number 1'", "row 62: 'a fine review, number 1'"]}
    assert report["suites"]["processed"]["evaluated"] == 13 + 14 + 14
    docs = first.reports / "validation"
    pages = sorted(str(p.relative_to(docs / "validations")).split("/")[:2] for p in docs.rglob("validations/**/*.html"))
    assert pages == [["processed", "test"], ["processed", "train"], ["processed", "val"], ["raw", "train"]]
    assert "raw.train" in (docs / "index.html").read_text()
    assert "[validate] page: reports/validation/validations/raw/train/ingest/" in caplog.text
