"""Hostile input through the real doors: files dropped for scoring and retraining, and ingest's CLI.

Each test is one way real files go wrong that the tidy broken files of tests/data/bad/ did not
cover: unquoted commas in every row, ...
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


from tasks.cli import main
from tasks.infra.config import load_config
from tasks.infra.storage import Paths

REPO = Path(__file__).resolve().parents[2]
BAD = Path(__file__).resolve().parent / "bad"
ROW_FIELDS = ("rule row_fields failed: row 1 (line 2) has 4 fields but the header has 2: an unquoted ',' inside a "
              "text?; expected at most 2 fields a row (a text with a ',' in double quotes)")


def cli(root: Path, *args: str) -> int:
    return main(["--params", str(REPO / "params.yaml"), "--root", str(root), "-q", *args])


def reason(folder: Path, name: str) -> str:
    return json.loads((folder / "quarantine" / f"{name}.reason.json").read_text())["errors"][0]


def test_extra_commas_in_every_row_quarantine_a_scored_batch(ws: Paths, capsys) -> None:
    incoming = ws.root / "data" / "incoming"
    shutil.copy(BAD / "extra_commas.csv", incoming / "batch.csv")
    assert cli(ws.root, "-S", "score.settle_seconds=0", "-S", "inference.variant=torch-fp32", "score") == 0
    assert json.loads(capsys.readouterr().out)["quarantined"] == ["batch.csv"]
    assert reason(incoming, "batch.csv") == f"{incoming / 'batch.csv'}: {ROW_FIELDS}"
    assert not (ws.root / "data" / "production").exists() or not list((ws.root / "data" / "production").rglob("*.parquet"))


def test_a_lone_surrogate_quarantines_its_file_and_the_others_are_scored(ws: Paths, capsys) -> None:
    incoming = ws.root / "data" / "incoming"
    shutil.copy(BAD / "lone_surrogate.jsonl", incoming / "poisoned.jsonl")
    (incoming / "fine.csv").write_text("text\na good film\n")
    assert cli(ws.root, "-S", "score.settle_seconds=0", "-S", "inference.variant=torch-fp32", "score") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scored"] == ["fine.csv"] and result["quarantined"] == ["poisoned.jsonl"]
    assert "rule text_unicode failed: 1 row" in reason(incoming, "poisoned.jsonl")


def test_extra_commas_in_every_row_quarantine_a_labelled_batch(ws: Paths, tiny_tokenizer) -> None:
    from tasks.lifecycle.retrain import gather_labelled

    labelled = ws.root / "data" / "incoming" / "labelled"
    shutil.copy(BAD / "extra_commas.csv", labelled / "batch.csv")
    cfg = load_config(REPO / "params.yaml")
    rows, batches = gather_labelled(cfg, ws, ["negative", "positive"], tiny_tokenizer, set())
    assert rows.empty and [b["status"] for b in batches] == ["quarantined"]
    assert reason(labelled, "batch.csv") == f"{labelled / 'batch.csv'}: {ROW_FIELDS}"


def test_a_wide_row_that_opens_a_later_chunk_is_caught(tmp_path: Path, tiny_teacher_dir: Path, capsys,
                                                        monkeypatch) -> None:
    import tasks.infra.tables

    # pandas keeps a wide row's first fields without a word when the row opens a chunk after the first.
    monkeypatch.setattr(tasks.infra.tables, "CHUNK_ROWS", 10)
    texts = [f"review number {i} of a {'good' if i % 2 else 'bad'} film" for i in range(40)]
    labels = ["positive" if i % 2 else "negative" for i in range(40)]
    lines = [f"{t},{lab}" for t, lab in zip(texts, labels)]
    lines[10] = "review number 10, of a bad film,negative"  # row 11: the first row of the second chunk
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + "\n".join(lines) + "\n")
    code = cli(tmp_path, "-S", f"teacher.model={tiny_teacher_dir}", "-S", "ingest.source=files",
               "-S", f"ingest.files.train={path}", "ingest")
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [(
        f"error: {path}: rule row_fields failed: row 11 (line 12) has 3 fields but the header has 2: an unquoted ',' "
        "inside a text?; expected at most 2 fields a row (a text with a ',' in double quotes)")]
    assert not (tmp_path / "data" / "processed").exists()


def test_rows_with_fewer_fields_are_read_as_missing_values(tmp_path: Path) -> None:
    from tasks.infra.tables import read_table

    path = tmp_path / "short.csv"
    path.write_text("text,label\na fine film,positive\nno label here\n")
    frame = read_table(path, "text", "label")
    assert frame["text"].tolist() == ["a fine film", "no label here"] and frame["label"].isna().tolist() == [False, True]


def test_leaked_texts_can_be_dropped_from_train_and_truncation_says_what_would_fit(
        tmp_path: Path, tiny_teacher_dir: Path, tiny_tokenizer, caplog) -> None:
    import logging

    import numpy as np
    import pandas as pd

    train, test = BAD / "leak_train.csv", BAD / "leak_test.csv"  # 10 texts of test also in train
    args = ["-S", f"teacher.model={tiny_teacher_dir}", "-S", "ingest.source=files", "-S", f"ingest.files.train={train}",
            "-S", f"ingest.files.test={test}", "-S", "base.max_length=8"]
    assert cli(tmp_path, *args, "ingest") == 2  # the default, on_leakage=error, stops as before
    with caplog.at_level(logging.INFO, logger="kd"):
        assert cli(tmp_path, *args, "-S", "ingest.on_leakage=drop", "ingest") == 0
    assert "ingest.on_leakage=drop: removed 10 train row(s) whose text is also in test" in caplog.text
    processed = tmp_path / "data" / "processed"
    summary = json.loads((processed / "summary.json").read_text())
    assert summary["leakage_dropped"] == 10 and summary["splits"]["test"]["rows"] == 30
    splits = {s: pd.read_parquet(processed / f"{s}.parquet") for s in ("train", "val", "test")}
    assert not set(splits["test"]["text"]) & (set(splits["train"]["text"]) | set(splits["val"]["text"]))
    assert len(splits["train"]) + len(splits["val"]) == 50

    assert cli(tmp_path, *args, "-S", "ingest.on_leakage=drop", "validate") == 0
    report = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert report["suites"]["raw"]["leakage_dropped"] == 10
    # Every text is longer than 8 tokens: the warning says which max_length would have fitted.
    lengths = np.array([len(ids) for ids in tiny_tokenizer(splits["train"]["text"].tolist())["input_ids"]])
    p95, p99 = (int(np.quantile(lengths, q, method="higher")) for q in (0.95, 0.99))
    (truncated,) = [f for f in report["suites"]["processed"]["failures"]
                    if f["rule"] == "truncated" and f["split"] == "train"]
    assert truncated["detail"].endswith(f"; base.max_length={p95} would cover 95% of the texts, {p99} 99%")
