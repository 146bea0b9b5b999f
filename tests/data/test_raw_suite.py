"""The raw-input suite, rule by rule: a clean source passes; each breakage fails on its rule, with the
severity the rule declares. Also the streaming scan (row numbers across chunks) and the label helpers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.infra import tables
from tasks.infra.config import Config
from tasks.infra.errors import DataError
from tasks.quality.suites import add_raw_columns, rare_spellings, raw_rules
from tasks.infra.tables import label_kind, normalise_label
from tasks.quality.checks import new_context, run_suite
from tasks.quality.doors import scan_file, validate_raw

SOURCE = "data/raw/reviews.csv"


def clean_raw(n: int = 40) -> pd.DataFrame:
    """Raw values as a CSV reader gives them: distinct texts, string labels, two classes."""
    return pd.DataFrame({"text": [f"review number {i} of a {'fine' if i % 2 else 'dull'} film" for i in range(n)],
                         "label": ["positive" if i % 2 else "negative" for i in range(n)]}, dtype=object)


def run(frames: dict[str, pd.DataFrame], labels: list[str] | None = None) -> dict:
    return validate_raw(frames, Config(), {s: f"data/raw/{s}.csv" if s != "train" else SOURCE for s in frames},
                        labels)


def test_clean_source_passes() -> None:
    record = run({"train": clean_raw()}, labels=["negative", "positive"])
    body = record["suite"]
    assert body["success"] and body["failed"] == 0 and body["warnings"] == 0 and body["failures"] == []
    assert body["evaluated"] == len(raw_rules(Config(), "train", ["negative", "positive"], "str")) == 15
    assert record["results"]["train"]["success"] is True  # GE's own result, kept for the Data Docs


def _set(rows: list[int], column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def breakage(frame: pd.DataFrame) -> pd.DataFrame:
        for row in rows:
            frame.at[row, column] = value
        return frame
    return breakage


ERRORS = [
    ("text_not_null", _set([3], "text", None), "1 row with no text in column 'text'", "row 4: None"),
    ("text_not_null", _set([5], "text", np.nan), "1 row with no text", "row 6: nan"),
    ("text_is_string", _set([2, 7], "text", 42), "2 rows whose 'text' is not a string", "row 3: 42"),
    ("text_not_blank", _set([9], "text", " \t "), "1 row whose 'text' is blank", r"row 10: ' \t '"),
    ("text_not_blank", _set([0], "text", ""), "1 row whose 'text' is blank", "row 1: ''"),
    ("text_not_blank", _set([4], "text", "\u200b \u200d\ufeff"), "1 row whose 'text' is blank", "row 5: "),
    ("text_max_chars", _set([1], "text", "word " * 5000), "1 row whose 'text' is longer than validate.max_text_chars",
     "row 2: 25000 characters"),
    ("label_not_null", _set([4], "label", None), "1 row with no label in column 'label'", "row 5: None"),
    ("label_not_fraction", _set([6], "label", "0.5"), "1 row whose 'label' is a fractional number (a score, "
     "not a class)", "row 7: '0.5'"),
    ("label_kind", _set([6], "label", 1), "1 row whose 'label' is not a string, unlike most labels", "row 7: 1"),
    ("label_kind", _set([6], "label", [1, 2]), "not a string", "row 7: [1, 2]"),
    ("label_in_set", _set([8], "label", "neutral"), "1 row whose 'label' is not in the label set",
     "row 9: 'neutral'"),
    ("label_spelling", _set([3], "label", "Positive"), "1 row whose 'label' differs from another label only in "
     "letter case", "row 4: 'Positive'"),
    ("duplicates", lambda f: pd.concat([f, f.head(10)], ignore_index=True), "10 rows repeating the text of an "
     "earlier row", "row 41: 'review number 0 of a dull film'"),
    ("min_rows", lambda f: f.head(12), "12 rows", "expected at least ingest.min_rows=20"),
    ("min_classes", lambda f: f.assign(label="positive"), "1 distinct label(s) in 'label'",
     "expected at least 2 classes"),
]


@pytest.mark.parametrize(("rule", "breakage", "problem", "example"), ERRORS,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(ERRORS)])
def test_error_rule_stops_with_one_line(rule: str, breakage: Callable, problem: str, example: str) -> None:
    frame = breakage(clean_raw())
    labels = ["negative", "positive"] if rule == "label_in_set" else None
    with pytest.raises(DataError) as err:
        run({"train": frame}, labels)
    message = str(err.value)
    assert message.startswith(f"{SOURCE}: rule {rule} failed: ") and "\n" not in message
    assert problem in message and example in message and "; expected " in message


def test_duplicates_below_the_share_pass() -> None:
    frame = pd.concat([clean_raw(), clean_raw().head(2)], ignore_index=True)  # 2 of 42 rows: under 0.05
    assert run({"train": frame})["suite"]["failed"] == 0


def test_label_conflict_is_a_warning() -> None:
    frame = clean_raw()
    frame.loc[40] = [frame.at[0, "text"], "positive"]  # the text of row 1, labelled the other way
    body = run({"train": frame})["suite"]
    assert body["success"] and body["warnings"] == 1
    (failure,) = body["failures"]
    assert (failure["rule"], failure["severity"], failure["unexpected_count"]) == ("label_conflicts", "warning", 2)
    same = "'review number 0 of a dull film'"
    assert failure["examples"] == [f"row 1: {same}", f"row 41: {same}"]


def test_leakage_between_source_files_is_an_error() -> None:
    # Given val/test files must not share texts with the train file: ingest stops before writing.
    train, test = clean_raw(), clean_raw(20).assign(text=lambda f: "other " + f["text"])
    test.loc[3, "text"] = train.at[7, "text"]
    with pytest.raises(DataError, match=r"^data/raw/test\.csv: rule no_leakage failed: 1 row whose text is also in "
                                        r"train \(e\.g\. row 4: 'review number 7 of a fine film'\)"):
        run({"train": train, "test": test})


def test_label_spelling_compares_across_splits() -> None:
    train, test = clean_raw(), clean_raw(20).assign(text=lambda f: "other " + f["text"])
    test.loc[0, "label"] = "NEGATIVE"
    with pytest.raises(DataError, match=r"^data/raw/test\.csv: rule label_spelling failed: .*row 1: 'NEGATIVE'"):
        run({"train": train, "test": test})


def test_int_labels_and_their_spellings_are_one_kind() -> None:
    frame = clean_raw().assign(label=[0, 1.0, "1", 0] * 10)  # JSON ints, a float column, CSV strings
    assert run({"train": frame})["suite"]["success"]


def test_schema_columns_rule(tmp_path: Path) -> None:
    rules = raw_rules(Config(), "val", None, "str")
    frame = add_raw_columns(clean_raw()[["text"]])
    result = run_suite(new_context(None), "raw.val", rules[:1], frame)
    (failed,) = result.errors
    assert failed.rule.name == "schema_columns" and failed.detail == "columns ['label'] are missing"


def test_scan_names_rows_deep_in_a_file_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "CHUNK_ROWS", 30)
    frame = clean_raw(100)
    frame.loc[76, "label"] = 3  # row 77, in the third chunk (rows 61-90)
    path = tmp_path / "big.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        scan_file(path, "train", Config(), None)
    assert str(err.value) == (f"{path}: rule label_kind failed: 1 row among rows 61-90 whose 'label' is not a "
                              "string, unlike most labels (e.g. row 77: '3'); expected labels of one kind, all "
                              "integers or all strings")


def test_scan_counts_rows_and_jsonl_rows_are_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "a fine film", "label": 1}\n\n{"text": "a dull film", "label": 0}\n'
                    '{"text": "   ", "label": 0}\n')
    with pytest.raises(DataError, match=r"rule text_not_blank failed: 1 row whose 'text' is blank .*\(e\.g\. row 4: "):
        scan_file(path, "train", Config(), None)
    path.write_text('{"text": "a fine film", "label": 1}\n{"text": "a dull film", "label": 0}\n')
    assert scan_file(path, "train", Config(), None) == 2


def test_reader_gives_file_row_numbers_and_raw_values(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n{"text": 5, "label": "x"}\n')
    frame = tables.read_table(path, "text", "label")
    assert frame.index.tolist() == [0, 2] and frame["text"].tolist() == ["a", 5]
    assert frame["label"].tolist() == [1, "x"]


@pytest.mark.parametrize(("value", "kind", "norm"), [
    (1, "int", 1), (np.int64(2), "int", 2), (1.0, "int", 1), (" 3 ", "int", 3), ("-1", "int", -1),
    ("positive", "str", "positive"), (" pos ", "str", "pos"), (True, "str", True), (0.5, "fraction", 0.5),
    ("0.25", "fraction", "0.25"), ("1.0", "str", "1.0"), ([1], "other", [1]), (None, None, None), (np.nan, None, None), (pd.NA, None, None),
])
def test_label_kind_and_normalisation(value: object, kind: str | None, norm: object) -> None:
    assert label_kind(value) == kind
    if kind is not None:
        assert normalise_label(value) == norm


def test_rare_spellings_keeps_the_most_common() -> None:
    counts = pd.Series({"positive": 10, "Positive": 2, "POSITIVE": 2, "negative": 9})
    assert rare_spellings(counts) == {"Positive", "POSITIVE"}
    assert rare_spellings(pd.Series({"a": 1, "b": 1})) == set()
