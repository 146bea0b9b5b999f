"""ingest: sources, label encoding and deterministic stratified splits."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks.infra.config import load_config
from tasks.infra.embedded import read_embedded
from tasks.ingest import ingest
from tasks.infra.storage import Paths

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _cfg(**overrides):
    return load_config(REPO / "params.yaml", overrides)


def _frame(n_per_class: dict, seed: int = 0, prefix: str = "text") -> pd.DataFrame:
    rows = [(f"{prefix} {label} number {i} with some words", label) for label, n in n_per_class.items()
            for i in range(n)]
    return pd.DataFrame(rows, columns=["body", "queue"]).sample(frac=1, random_state=seed)


def test_embedded_default_follows_the_labelling_rule():
    movies = read_embedded("movies")
    # 10,605 rows; the 37 with score 0 are dropped; label = score > 0.
    assert len(movies) == 10605 - 37
    assert movies["label"].value_counts().to_dict() == {"negative": 5326, "positive": 5242}


def test_files_source_with_string_labels_three_classes(tmp_path):
    src = tmp_path / "tickets.csv"
    _frame({"billing": 60, "bugs": 50, "sales": 40}).to_csv(src, index=False)
    cfg = _cfg(ingest={"source": "files", "files": {"train": str(src)}, "text_column": "body",
                       "label_column": "queue"})
    summary = ingest(cfg, Paths(tmp_path))
    assert summary["labels"] == ["billing", "bugs", "sales"]
    splits = summary["splits"]
    assert sum(s["rows"] for s in splits.values()) == 150
    # Stratified: every class in every split, in proportion.
    for split in ("train", "val", "test"):
        assert all(n > 0 for n in splits[split]["counts"].values())
    assert splits["test"]["rows"] == 15 and splits["val"]["rows"] == 15
    test = pd.read_parquet(tmp_path / "data/processed/test.parquet")
    assert list(test.columns) == ["text", "label"] and str(test["label"].dtype) == "int64"


def test_split_is_deterministic_by_seed_and_changes_with_it(tmp_path):
    src = tmp_path / "d.jsonl"
    _frame({0: 50, 1: 50}).rename(columns={"body": "text", "queue": "label"}).to_json(src, orient="records", lines=True)
    base = {"source": "files", "files": {"train": str(src)}}
    read = lambda root: pd.read_parquet(root / "data/processed/test.parquet")["text"].tolist()  # noqa: E731
    ingest(_cfg(ingest=base), Paths(tmp_path / "a"))
    ingest(_cfg(ingest=base), Paths(tmp_path / "b"))
    ingest(_cfg(ingest=base, base={"seed": 7}), Paths(tmp_path / "c"))
    assert read(tmp_path / "a") == read(tmp_path / "b")
    assert read(tmp_path / "a") != read(tmp_path / "c")


def test_provided_splits_are_kept_and_int_labels_sorted_numerically(tmp_path):
    for split, n in (("train", 40), ("test", 12)):
        _frame({10: n, 2: n}, seed=n, prefix=split).rename(columns={"body": "text", "queue": "label"}).to_parquet(
            tmp_path / f"{split}.parquet")
    cfg = _cfg(ingest={"source": "files", "files": {"train": str(tmp_path / "train.parquet"),
                                                    "test": str(tmp_path / "test.parquet")}})
    summary = ingest(cfg, Paths(tmp_path))
    assert summary["labels"] == ["2", "10"]  # numeric order, not string order
    assert summary["splits"]["test"]["rows"] == 24  # the given test split, untouched
    assert summary["splits"]["val"]["rows"] == 8  # val_size 0.1 of the given train's 80


def test_hf_source_maps_columns_and_splits(tmp_path, monkeypatch):
    import datasets

    data = {"train": _frame({"neg": 30, "pos": 30}), "test": _frame({"neg": 8, "pos": 8}, seed=1, prefix="test")}
    calls = []

    def fake_load(name, config, split):
        calls.append((name, config, split))
        return datasets.Dataset.from_pandas(data[split], preserve_index=False)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = _cfg(ingest={"source": "hf", "hf_name": "someone/tickets", "hf_config": "en",
                       "text_column": "body", "label_column": "queue"})
    summary = ingest(cfg, Paths(tmp_path))
    assert calls == [("someone/tickets", "en", "train"), ("someone/tickets", "en", "test")]
    assert summary["labels"] == ["neg", "pos"] and summary["splits"]["test"]["rows"] == 16
    assert json.loads((tmp_path / "data/processed/summary.json").read_text())["source"] == "hf:someone/tickets"


def test_max_rows_subsamples_stratified(tmp_path):
    summary = ingest(_cfg(ingest={"max_rows": 500}), Paths(tmp_path))
    total = sum(s["rows"] for s in summary["splits"].values())
    assert total == 500
    counts = summary["splits"]["train"]["counts"]
    assert abs(counts["positive"] - counts["negative"]) <= 10


@pytest.mark.parametrize("bad", ["only one class", "mixed"])
def test_label_problems_are_one_line_errors(tmp_path, bad):
    from tasks.infra.errors import DataError

    frame = _frame({"a": 30}) if bad == "only one class" else pd.DataFrame(
        {"body": [f"t{i}" for i in range(40)], "queue": ["x", 1] * 20})
    src = tmp_path / "in.jsonl"
    frame.to_json(src, orient="records", lines=True)
    cfg = _cfg(ingest={"source": "files", "files": {"train": str(src)}, "text_column": "body",
                       "label_column": "queue"})
    with pytest.raises(DataError) as err:
        ingest(cfg, Paths(tmp_path))
    assert "\n" not in str(err.value) and "in.jsonl" in str(err.value)
    assert not (tmp_path / "data/processed").exists()
