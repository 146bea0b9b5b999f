"""The new-batch suite (`validate_batch`), as the scoring and retraining stages use it: it never
raises on bad data, it says which rule a batch broke, and `ok` decides quarantine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tasks.infra.config import Config
from tasks.quality.doors import BatchResult, validate_batch

LABELS = ["negative", "positive"]
SOURCE = "incoming/batch-0001.csv"


def batch(n: int = 12, labelled: bool = True) -> pd.DataFrame:
    frame = pd.DataFrame({"text": [f"new review {i}, a {'fine' if i % 2 else 'dull'} film" for i in range(n)]},
                         dtype=object)
    if labelled:
        frame["label"] = ["positive" if i % 2 else "negative" for i in range(n)]
    return frame


@pytest.mark.parametrize("labelled", [True, False])
def test_clean_batch_is_ok(labelled: bool) -> None:
    result = validate_batch(batch(labelled=labelled), Config(), LABELS if labelled else None, SOURCE)
    assert isinstance(result, BatchResult) and result.ok and result.errors == [] and result.warnings == []
    report = result.to_dict()
    assert report["source"] == SOURCE and report["rows"] == 12 and report["success"]
    assert report["evaluated"] == (10 if labelled else 7) and report["data_docs"] is None


def test_unlabelled_batch_ignores_a_label_column() -> None:
    frame = batch()
    frame.loc[0, "label"] = "garbage"
    assert validate_batch(frame, Config(), None, SOURCE).ok


def test_int_labelled_task_accepts_its_ints() -> None:
    frame = batch().assign(label=[2, 10, "10", 2.0] * 3)
    assert validate_batch(frame, Config(), ["2", "10"], SOURCE).ok


def _drop_text(f: pd.DataFrame) -> pd.DataFrame:
    return f.drop(columns="text")


def _drop_label(f: pd.DataFrame) -> pd.DataFrame:
    return f.drop(columns="label")


def _at(row: int, column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def breakage(frame: pd.DataFrame) -> pd.DataFrame:
        frame.at[row, column] = value
        return frame
    return breakage


BROKEN = [
    (_drop_text, "schema_columns", "columns ['text'] are missing"),
    (_drop_label, "schema_columns", "columns ['label'] are missing"),
    (lambda f: f.head(0), "min_rows", "0 rows"),
    (_at(2, "text", None), "text_not_null", "row 3: None"),
    (_at(3, "text", 7), "text_is_string", "row 4: 7"),
    (_at(4, "text", "  "), "text_not_blank", "row 5: '  '"),
    (_at(5, "text", "y" * 30000), "text_max_chars", "row 6: 30000 characters"),
    (_at(6, "label", None), "label_not_null", "row 7: None"),
    (_at(7, "label", "neutral"), "label_in_set", "row 8: 'neutral'"),
]


@pytest.mark.parametrize(("breakage", "rule", "example"), BROKEN, ids=[f"{b[1]}-{i}" for i, b in enumerate(BROKEN)])
def test_broken_batch_is_not_ok_and_says_why(breakage: Callable, rule: str, example: str) -> None:
    frame = breakage(batch())
    before = frame.copy()

    result = validate_batch(frame, Config(), LABELS, SOURCE)

    assert not result.ok
    first = result.errors[0]
    assert first.startswith(f"{SOURCE}: rule {rule} failed: ") and example in first and "\n" not in first
    assert result.to_dict()["failures"][0]["rule"] == rule
    pd.testing.assert_frame_equal(frame, before)  # the caller's frame is left alone


def test_token_rules_with_a_tokenizer(tiny_tokenizer) -> None:
    frame = batch(20, labelled=False)
    frame.loc[[1, 2], "text"] = "great " * 80  # 2 of 20 rows over base.max_length=64 tokens
    result = validate_batch(frame, Config(), None, SOURCE, tokenizer=tiny_tokenizer)
    assert result.ok and len(result.warnings) == 1 and "rule truncated failed: 2 rows longer than" in result.warnings[0]

    frame.loc[5, "text"] = "\u0301"  # a combining accent alone: not blank, yet no token once normalised
    result = validate_batch(frame, Config(), None, SOURCE, tokenizer=tiny_tokenizer)
    assert not result.ok and result.errors[0].startswith(f"{SOURCE}: rule empty_tokens failed: 1 row whose text")


def test_docs_for_a_batch(tmp_path: Path) -> None:
    docs = tmp_path / "reports" / "batches" / "0001"
    frame = batch()
    frame.loc[0, "text"] = ""
    result = validate_batch(frame, Config(), LABELS, SOURCE, docs_dir=docs)
    assert not result.ok and result.docs == docs
    assert (docs / "index.html").is_file() and len(list((docs / "validations").rglob("*.html"))) == 1
    assert result.to_dict()["data_docs"] == str(docs / "index.html")
    assert [p.name for p in docs.parent.iterdir()] == ["0001"]  # no temporary left beside it
