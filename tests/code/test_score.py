"""Batch scoring: each file logged exactly once, across crashes; bad batches quarantined, the rest scored."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tasks.infra.config import load_config
from tasks.infra.storage import Paths, write_json

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["a great film with a wonderful cast", "an awful boring movie", "the plot is dull and slow",
         "brilliant acting and a moving story"]


def install_production(root: Path, model_dir: Path) -> Paths:
    """A workspace at `root` whose production model (version 1) is `model_dir`."""
    shutil.copytree(model_dir, root / "models" / "production")
    entry = {"version": 1, "model_hash": "tiny", "metrics": {"accuracy": 0.5, "f1_macro": 0.5}}
    write_json(root / "models" / "production" / "production.json", entry)
    write_json(root / "models" / "registry.json", {"production": 1, "versions": [entry]})
    return Paths(root)


@pytest.fixture
def ws(tmp_path, tiny_teacher_dir):
    paths = install_production(tmp_path, tiny_teacher_dir)
    (tmp_path / "data" / "incoming").mkdir(parents=True)
    return paths


@pytest.fixture(scope="module")
def cfg():
    return load_config(REPO / "params.yaml", ["inference.variant=torch-fp32", "inference.threads=0", "score.settle_seconds=0"])


def incoming(paths: Paths) -> Path:
    return paths.root / "data" / "incoming"


def log_frame(paths: Paths) -> pd.DataFrame:
    from tasks.infra.prodlog import read_log

    return read_log(paths)


def test_scores_each_file_once_with_all_columns(ws, cfg):
    from tasks.production.score import score, scored_path

    pd.DataFrame({"text": TEXTS, "label": ["positive", "negative", 0, 1]}).to_csv(  # names or class ids
        incoming(ws) / "a.csv", index=False)
    (incoming(ws) / "b.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in TEXTS[:2]) + "\n")
    first = score(cfg, ws)
    assert sorted(first["scored"]) == ["a.csv", "b.jsonl"] and first["rows"] == 6
    shutil.copy(incoming(ws) / "a.csv", incoming(ws) / "a-copy.csv")  # the same bytes under another name
    again = score(cfg, ws)
    assert again["scored"] == [] and sorted(again["skipped"]) == ["a-copy.csv", "a.csv", "b.jsonl"]
    frame = log_frame(ws)
    assert len(frame) == 6
    assert {"time", "text", "prediction", "confidence", "prob_negative", "prob_positive", "model_version",
            "source", "label"} <= set(frame.columns)
    assert (frame["prob_negative"] + frame["prob_positive"]).round(5).eq(1).all()
    assert frame["model_version"].eq(1).all()
    assert frame.loc[frame["source"] == "a.csv", "label"].tolist() == ["positive", "negative", "negative", "positive"]
    assert frame.loc[frame["source"] == "b.jsonl", "label"].isna().all()
    assert len(json.loads(scored_path(ws).read_text())) == 3
    assert all(p.parent.name.startswith("date=") for p in (ws.root / "data" / "production").rglob("part-*.parquet"))


def test_crash_after_part_before_record_is_not_reappended(ws, cfg, monkeypatch):
    import tasks.production.score as score_mod

    pd.DataFrame({"text": TEXTS}).to_parquet(incoming(ws) / "c.parquet")
    real = score_mod.write_json

    def die(path, data):  # the part is in place; the process dies before scored.json is written
        raise KeyboardInterrupt
    monkeypatch.setattr(score_mod, "write_json", die)
    with pytest.raises(KeyboardInterrupt):
        score_mod.score(cfg, ws)
    assert len(log_frame(ws)) == 4 and not score_mod.scored_path(ws).exists()
    monkeypatch.setattr(score_mod, "write_json", real)
    again = score_mod.score(cfg, ws)
    assert again["recovered"] == ["c.parquet"] and again["rows"] == 0
    assert len(log_frame(ws)) == 4
    assert score_mod.score(cfg, ws)["skipped"] == ["c.parquet"]


def test_crash_before_part_is_written_scores_on_restart(ws, cfg, monkeypatch):
    import tasks.production.score as score_mod

    pd.DataFrame({"text": TEXTS}).to_csv(incoming(ws) / "d.tsv", sep="\t", index=False)
    real = pd.DataFrame.to_parquet

    def die(self, path, *args, **kwargs):  # dies halfway through writing the temporary
        Path(path).write_bytes(b"PAR1 half")
        raise KeyboardInterrupt
    monkeypatch.setattr(pd.DataFrame, "to_parquet", die)
    with pytest.raises(KeyboardInterrupt):
        score_mod.score(cfg, ws)
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    assert log_frame(ws).empty
    again = score_mod.score(cfg, ws)
    assert again["scored"] == ["d.tsv"] and len(log_frame(ws)) == 4
    assert not list((ws.root / "data" / "production").rglob(".part-*"))


def test_bad_batch_is_quarantined_and_others_scored(ws, cfg):
    from tasks.production.score import score

    pd.DataFrame({"text": TEXTS}).to_csv(incoming(ws) / "good.csv", index=False)
    pd.DataFrame({"text": ["fine", "bad"], "label": ["positive", "maybe"]}).to_csv(incoming(ws) / "badlabel.csv",
                                                                                     index=False)
    (incoming(ws) / "nocol.csv").write_text("review\nsome text\n")
    result = score(cfg, ws)
    assert result["scored"] == ["good.csv"] and sorted(result["quarantined"]) == ["badlabel.csv", "nocol.csv"]
    quarantine = incoming(ws) / "quarantine"
    for name in ("badlabel.csv", "nocol.csv"):
        assert (quarantine / name).is_file() and not (incoming(ws) / name).exists()
        reason = json.loads((quarantine / f"{name}.reason.json").read_text())
        assert reason["errors"] and name in reason["errors"][0]
    assert len(log_frame(ws)) == 4


def test_cli_score(ws, cfg):
    from tasks.cli import main

    pd.DataFrame({"text": TEXTS}).to_csv(incoming(ws) / "e.csv", index=False)
    assert main(["--params", str(REPO / "params.yaml"), "--root", str(ws.root), "-S", "inference.variant=torch-fp32",
                 "-S", "score.settle_seconds=0.2", "score"]) == 0
    assert len(log_frame(ws)) == 4


def jsonl(texts: list[str]) -> str:
    return "".join(json.dumps({"text": t}) + "\n" for t in texts)


def test_a_file_still_being_written_waits_and_a_changed_one_is_never_scored_twice(ws):
    from tasks.cli import main
    from tasks.production.score import scored_path

    growing = incoming(ws) / "stream.jsonl"
    growing.write_text(jsonl(TEXTS[:1]))
    stop = threading.Event()

    def writer():  # another process appending to the file, a row every 20 ms
        while not stop.wait(0.02):
            with open(growing, "a") as fh:
                fh.write(jsonl(TEXTS[1:2]))
    thread = threading.Thread(target=writer)
    thread.start()
    args = ["--params", str(REPO / "params.yaml"), "--root", str(ws.root), "-q", "-S", "inference.variant=torch-fp32",
            "-S", "score.settle_seconds=0.3", "score"]
    try:
        assert main(args) == 0
        assert log_frame(ws).empty and not scored_path(ws).exists()  # left for the next run
    finally:
        stop.set()
        thread.join()
    rows = len(growing.read_text().splitlines())
    assert main(args) == 0
    assert len(log_frame(ws)) == rows  # the whole file, once complete

    with open(growing, "a") as fh:  # the writer comes back after the file was scored
        fh.write(jsonl(TEXTS[2:]))
    time.sleep(0.35)
    assert main(args) == 0
    assert len(log_frame(ws)) == rows  # not scored again ...
    reason = json.loads((incoming(ws) / "quarantine" / "stream.jsonl.reason.json").read_text())
    assert "changed after it was scored" in reason["errors"][0]  # ... but quarantined, with why
    assert not growing.exists()


def test_a_file_that_changes_while_it_is_read_is_left_for_the_next_run(ws, cfg, monkeypatch):
    import tasks.production.score as score_mod

    path = incoming(ws) / "f.csv"
    pd.DataFrame({"text": TEXTS[:2]}).to_csv(path, index=False)
    real = score_mod.read_batch

    def read_then_append(p, c):  # the writer was not done after all
        out = real(p, c)
        with open(p, "a") as fh:
            fh.write("one more row\n")
        return out
    monkeypatch.setattr(score_mod, "read_batch", read_then_append)
    assert score_mod.score(cfg, ws)["pending"] == ["f.csv"]
    assert log_frame(ws).empty and not score_mod.scored_path(ws).exists()
    monkeypatch.setattr(score_mod, "read_batch", real)
    assert score_mod.score(cfg, ws)["scored"] == ["f.csv"] and len(log_frame(ws)) == 3


def test_files_being_written_by_name_are_ignored(ws, cfg):
    from tasks.production.score import score

    for name in ("a.csv.part", "b.tmp", ".c.csv"):
        pd.DataFrame({"text": TEXTS}).to_csv(incoming(ws) / name, index=False)
    result = score(cfg, ws)
    assert result["scored"] == result["quarantined"] == result["pending"] == []
    assert sorted(p.name for p in incoming(ws).iterdir()) == [".c.csv", "a.csv.part", "b.tmp"]


def test_a_second_bad_file_of_the_same_name_keeps_the_first(ws, cfg):
    from tasks.production.score import score

    bad = incoming(ws) / "batch.csv"
    bad.write_text("review\nfirst bad file\n")
    assert score(cfg, ws)["quarantined"] == ["batch.csv"]
    bad.write_text("text,label\nsecond bad file,maybe\n")
    assert score(cfg, ws)["quarantined"] == ["batch.csv"]
    quarantine = incoming(ws) / "quarantine"
    files = sorted(p.name for p in quarantine.iterdir() if not p.name.endswith(".reason.json"))
    assert len(files) == 2 and "batch.csv" in files
    contents = {(quarantine / f).read_text() for f in files}
    assert contents == {"review\nfirst bad file\n", "text,label\nsecond bad file,maybe\n"}
    reasons = [json.loads((quarantine / f"{f}.reason.json").read_text()) for f in files]
    assert sorted("no column 'text'" in r["errors"][0] for r in reasons) == [False, True]
    assert all(r["file"] == "batch.csv" for r in reasons)
