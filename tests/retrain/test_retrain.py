"""The continual-learning cycle on tiny models: gather, gates, crash safety, replay, rollback, the lock."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from tasks.infra.errors import UserError
from tasks.infra.registry_view import production_dir, read_registry, registry_path
from tasks.infra.storage import Paths, hash_dir, hash_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def production_state(root) -> tuple[str, str]:
    return hash_dir(production_dir(Paths(root))), hash_file(registry_path(Paths(root)))


@contextlib.contextmanager
def cycle_held(monkeypatch, cfg, paths: Paths, trigger: str = "drift") -> Iterator[dict]:
    """A retraining cycle running in a thread, held inside its lock (before run_cycle) while the block runs.

    Yields the dict its report lands in, under "report", once the block has ended and the cycle finished.
    """
    import tasks.lifecycle.retrain as rt

    started, release, results = threading.Event(), threading.Event(), {}
    real = rt.run_cycle

    def slow(*args, **kwargs):
        started.set()
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(rt, "run_cycle", slow)
    cycle = threading.Thread(target=lambda: results.setdefault("report", rt.retrain(cfg, paths, trigger)))
    cycle.start()
    try:
        assert started.wait(60)
        yield results
    finally:
        release.set()
        cycle.join(300)


def test_cycle_promotes_and_versions_everything(retrain_ws, retrain_cfg):
    from tasks.lifecycle.retrain import cycle_table, retrain

    paths = Paths(retrain_ws)
    report = retrain(retrain_cfg, paths, "drift", "reports/drift/x")
    assert report["promoted"], report["reason"]
    assert report["version"] == 2 and report["status"] == "promoted"
    registry = read_registry(paths)
    assert registry["production"] == 2
    entry = registry["versions"][-1]
    assert entry["trigger"] == "drift" and entry["detail"] == "reports/drift/x" and entry["parent"] == 1
    assert entry["batches"][0]["status"] == "used" and entry["batches"][0]["file"] == "tweets-1.csv"
    assert entry["cache_key"] and entry["data_hash"] == hash_dir(retrain_ws / "data" / "cycles" / "v2")
    # production is the challenger, byte for byte, and is archived for rollback
    assert entry["model_hash"] == hash_dir(retrain_ws / "models" / "cycles" / "v2" / "student")
    assert hash_dir(retrain_ws / "models" / "versions" / "v2") == entry["archive_hash"]
    assert json.loads((production_dir(paths) / "production.json").read_text())["version"] == 2
    snapshot = retrain_ws / "data" / "cycles" / "v2"
    new_test = pd.read_parquet(snapshot / "new_test.parquet")
    new_train = pd.read_parquet(snapshot / "new_train.parquet")
    assert not set(new_test["text"]) & set(new_train["text"])
    unlabelled = pd.read_parquet(snapshot / "unlabelled.parquet")
    assert not set(unlabelled["text"]) & set(new_test["text"])  # no test text in the transfer set
    # both students of the ablation were trained and scored; the report says whether pseudo-labels helped
    assert set(report["students"]) == {"with_pseudo", "without_pseudo"}
    assert report["pseudo_label_effect"]["verdict"] in ("helped", "hurt", "no difference")
    assert report["students"]["with_pseudo"]["lwf"] and report["students"]["with_pseudo"]["warm_start"]
    assert "champion (production)" in cycle_table(report)
    # the batch is learned: the next cycle has nothing new and waits for labels
    again = retrain(retrain_cfg, paths)
    assert again["status"] == "waiting for labels" and read_registry(paths)["production"] == 2


def test_worse_challenger_is_not_promoted(retrain_ws, retrain_cfg):
    from tasks.infra.config import with_overrides
    from tasks.lifecycle.retrain import retrain

    before = hash_dir(production_dir(Paths(retrain_ws)))
    strict = with_overrides(retrain_cfg, {"retrain": {"min_gain": 0.5}})  # no tiny model gains 50 points
    report = retrain(strict, Paths(retrain_ws))
    assert not report["promoted"]
    assert report["reason"].startswith(("gain gate", "teacher gate")), report["reason"]
    registry = read_registry(Paths(retrain_ws))
    assert registry["production"] == 1 and registry["versions"][-1]["promoted"] is False
    assert hash_dir(production_dir(Paths(retrain_ws))) == before
    assert not (retrain_ws / "models" / "versions" / "v2").exists()
    # the refused cycle is still versioned (its data and models), and its batch stays pending
    assert (retrain_ws / "data" / "cycles" / "v2" / "new_test.parquet").is_file()
    assert (retrain_ws / "data" / "incoming" / "labelled" / "tweets-1.csv").is_file()


def test_crash_mid_cycle_leaves_production_and_registry_untouched(retrain_ws, retrain_cfg, monkeypatch):
    import tasks.lifecycle.retrain as rt

    before = production_state(retrain_ws)

    def crash(*args, **kwargs):
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(rt, "fit_student", crash)
    with pytest.raises(RuntimeError, match="killed mid-training"):
        rt.retrain(retrain_cfg, Paths(retrain_ws))
    assert production_state(retrain_ws) == before
    assert not (retrain_ws / "data" / "cycles").exists() or not any((retrain_ws / "data" / "cycles").iterdir())
    assert not (retrain_ws / "models" / "cycles").exists() or not any((retrain_ws / "models" / "cycles").iterdir())


def test_replay_sample_is_deterministic_by_seed():
    from tasks.lifecycle.retrain import replay_sample

    old = pd.DataFrame({"text": [f"t{i}" for i in range(500)], "label": [i % 2 for i in range(500)]})
    first, again, other = replay_sample(old, 100, 7), replay_sample(old, 100, 7), replay_sample(old, 100, 8)
    pd.testing.assert_frame_equal(first, again)
    assert list(first["text"]) != list(other["text"])
    assert len(replay_sample(old, 10_000, 7)) == 500 and len(replay_sample(old, 0, 7)) == 0


def test_rollback_restores_exact_files(retrain_ws, retrain_cfg):
    from tasks.lifecycle.retrain import retrain
    from tasks.lifecycle.registry import rollback

    paths = Paths(retrain_ws)
    v1 = hash_dir(production_dir(paths), "*.safetensors")
    assert retrain(retrain_cfg, paths)["promoted"]
    assert hash_dir(production_dir(paths), "*.safetensors") != v1
    result = rollback(retrain_cfg, paths, 1)
    assert result["previous"] == 2 and read_registry(paths)["production"] == 1
    assert hash_dir(production_dir(paths), "*.safetensors") == v1
    files = sorted(p.name for p in production_dir(paths).iterdir() if p.name != "production.json")
    archived = retrain_ws / "models" / "versions" / "v1"
    assert files == sorted(p.name for p in archived.iterdir())
    assert all(hash_file(archived / f) == hash_file(production_dir(paths) / f) for f in files)
    assert read_registry(paths)["events"][-1] == {**read_registry(paths)["events"][-1], "action": "rollback",
                                                  "from": 2, "to": 1}
    # the lineage follows production: version 1's memory no longer includes cycle 2's data
    from tasks.infra.registry_view import lineage

    assert [e["version"] for e in lineage(read_registry(paths), 1)] == [1]


def test_rollback_refuses_unknown_or_tampered_versions(retrain_ws, retrain_cfg):
    from tasks.infra.errors import DataError
    from tasks.lifecycle.registry import rollback

    from tasks.lifecycle.registry import transaction

    with pytest.raises(UserError, match="no version 9"):
        rollback(retrain_cfg, Paths(retrain_ws), 9)
    with transaction(Paths(retrain_ws), "test") as txn:  # a version 2 in production, so that 1 is a real rollback
        txn.add({"version": 2, "promoted": True, "reason": "test", "parent": 1}, Paths(retrain_ws).student)
    (retrain_ws / "models" / "versions" / "v1" / "config.json").write_text("{}")
    before = production_state(retrain_ws)
    with pytest.raises(DataError, match="differs from the registry"):
        rollback(retrain_cfg, Paths(retrain_ws), 1)
    assert production_state(retrain_ws) == before


def test_two_triggers_at_once_one_runs_the_other_is_skipped(retrain_ws, retrain_cfg, monkeypatch):
    from tasks.lifecycle.retrain import retrain

    with cycle_held(monkeypatch, retrain_cfg, Paths(retrain_ws)) as results:
        with pytest.raises(UserError, match=r"another retraining or rollback is running \(pid \d+, since .*retraining "
                                            r"\(drift\)\); this retraining \(schedule\) is skipped"):
            retrain(retrain_cfg, Paths(retrain_ws), "schedule")
    assert results["report"]["version"] == 2
    assert [v["version"] for v in read_registry(Paths(retrain_ws))["versions"]] == [1, 2]


def test_bad_batch_is_quarantined_and_the_others_go_on(retrain_ws, retrain_cfg):
    from tasks.lifecycle.retrain import retrain

    incoming = retrain_ws / "data" / "incoming" / "labelled"
    (incoming / "broken.csv").write_text("text,label\nfine text,positive\nanother,not-a-label\n")
    report = retrain(retrain_cfg, Paths(retrain_ws))
    status = {b["file"]: b["status"] for b in report["batches"]}
    assert status == {"broken.csv": "quarantined", "tweets-1.csv": "used"}
    reason = json.loads((incoming / "quarantine" / "broken.csv.reason.json").read_text())
    assert any("row 2" in e or "label" in e for e in reason["errors"]), reason
    assert (incoming / "quarantine" / "broken.csv").is_file() and report["promoted"]


def _versus(champion: float, challenger: float, rows: int):
    """Champion against challenger on `rows` constructed binary rows with the given accuracies,
    disagreeing on as few rows as possible: the right answer is known."""
    from tasks.infra.stats import paired_comparison

    labels = np.zeros(rows, dtype=int)
    a, b = np.ones(rows, dtype=int), np.ones(rows, dtype=int)
    a[:round(champion * rows)], b[:round(challenger * rows)] = 0, 0
    return paired_comparison(labels, a, b)


def test_decide_cycle_names_the_gate():
    from tasks.lifecycle.retrain import CycleGates, decide_cycle

    gates = CycleGates(min_gain=0.01, max_forgetting=0.02, min_retention=0.9)
    old_ok = _versus(0.85, 0.84, 1000)
    assert decide_cycle(_versus(0.60, 0.70, 1000), old_ok, 0.97, gates).promote
    assert decide_cycle(_versus(0.60, 0.605, 1000), old_ok, 0.97, gates).reason.startswith("gain gate")
    assert decide_cycle(_versus(0.60, 0.70, 1000), _versus(0.85, 0.80, 1000), 0.97,
                        gates).reason.startswith("forgetting gate")
    assert decide_cycle(_versus(0.60, 0.70, 1000), old_ok, 0.5, gates).reason.startswith("evaluate gate")


def test_a_gain_inside_the_noise_waits_for_more_labels():
    """The cycle of the issue: +4 points on a 125-row new test split is 5 rows, inside the noise."""
    from tasks.lifecycle.retrain import CycleGates, decide_cycle

    gates = CycleGates(min_gain=0.01, max_forgetting=0.02, min_retention=0.9)
    small = _versus(0.60, 0.64, 125)
    decision = decide_cycle(small, _versus(0.85, 0.85, 1000), 0.97, gates)
    assert not decision.promote
    assert decision.reason.startswith("gain gate: the gain is inside the noise of the 125-row new test split; "
                                      "waiting for more labels (about ")
    assert "McNemar p=" in decision.reason and small.rows_to_show() > 125
    # the same gain on 2,000 rows is significant and promoted
    assert decide_cycle(_versus(0.60, 0.64, 2000), _versus(0.85, 0.85, 1000), 0.97, gates).promote
    # with min_gain <= 0 no gain is demanded, so none has to be shown
    open_gates = CycleGates(min_gain=0.0, max_forgetting=0.02, min_retention=0.9)
    assert decide_cycle(small, _versus(0.85, 0.85, 1000), 0.97, open_gates).promote


def test_teacher_gate():
    from tasks.lifecycle.retrain import teacher_gate

    assert not teacher_gate({"old": 0.85, "new": 0.7}, {"old": 0.85, "new": 0.65}, 0.03).promote
    assert not teacher_gate({"old": 0.85, "new": 0.7}, {"old": 0.80, "new": 0.75}, 0.03).promote
    assert teacher_gate({"old": 0.85, "new": 0.7}, {"old": 0.83, "new": 0.75}, 0.03).promote


def test_cli_retrain_waits_for_labels_and_rollback_names_the_version(retrain_ws, capsys):
    from tasks.cli import main

    for file in (retrain_ws / "data" / "incoming" / "labelled").glob("*.csv"):
        file.unlink()
    args = ["--root", str(retrain_ws), "--params", str(retrain_ws / "params.yaml")]
    assert main([*args, "retrain"]) == 0
    assert "waiting for labels" in capsys.readouterr().out
    assert main([*args, "rollback", "5"]) == 2
    assert "models/registry.json: no version 5 (versions: 1)" in capsys.readouterr().err
    assert main([*args, "versions"]) == 0
    listing = capsys.readouterr().err.splitlines()
    assert listing[0].split()[:3] == ["version", "time", "promoted"] and listing[1].split()[:2] == ["*", "1"]


def test_the_api_serves_the_promoted_then_the_rolled_back_model_without_restart(retrain_ws, retrain_cfg):
    import os
    import time

    from fastapi.testclient import TestClient

    from tasks.production.api import create_app
    from tasks.infra.config import with_overrides
    from tasks.lifecycle.retrain import retrain
    from tasks.lifecycle.registry import rollback

    paths = Paths(retrain_ws)
    serving = with_overrides(retrain_cfg, {"inference": {"variant": "torch-fp32", "threads": 0}})

    def touch_registry():  # a coarse-mtime filesystem still sees the change
        os.utime(registry_path(paths), ns=(time.time_ns(), time.time_ns() + 10**9))

    with TestClient(create_app(serving, paths)) as client:
        assert client.post("/predict", json={"text": "good"}).json()["model_version"] == 1
        assert retrain(retrain_cfg, paths)["promoted"]
        touch_registry()
        assert client.post("/predict", json={"text": "good"}).json()["model_version"] == 2
        rollback(retrain_cfg, paths, 1)
        touch_registry()
        assert client.post("/predict", json={"text": "good"}).json()["model_version"] == 1
        assert client.get("/model").json()["version"] == 1


def _better_candidate():
    """A pipeline candidate clearly better than production on the current test split (0.5 -> 1.0 on 40 rows)."""
    from tasks.infra.stats import paired_comparison

    labels = np.zeros(40, dtype=int)
    return paired_comparison(labels, np.arange(40) % 2, labels)


def test_the_pipeline_cannot_promote_a_student_that_forgot_what_retraining_taught(retrain_ws, retrain_cfg,
                                                                                  monkeypatch):
    import tasks.promote as pm
    from tasks.lifecycle.retrain import retrain
    from tasks.infra.storage import write_json

    paths = Paths(retrain_ws)
    assert retrain(retrain_cfg, paths)["promoted"]
    before = production_state(retrain_ws)
    student = {"accuracy": 1.0, "f1_macro": 1.0, "latency_ms_b1": 1.0, "size_mb": 1.0}
    write_json(paths.reports / "metrics.json", {"retention": 1.0, "student": student, "test_rows": 40})
    monkeypatch.setattr(pm, "production_comparison", lambda *a: _better_candidate())

    def predictions(cfg, folder, names, frame):  # production right on 90% of the rows, the candidate on 60%
        labels = frame["label"].to_numpy()
        right = round((0.9 if folder == production_dir(paths) else 0.6) * len(labels))
        return np.where(np.arange(len(labels)) < right, labels, 1 - labels)

    monkeypatch.setattr(pm, "_predictions", predictions)
    report = pm.promote(retrain_cfg, paths)
    assert not report["promoted"]
    assert report["reason"].startswith("learned-data gate: candidate against production on "
                                       "data/cycles/v2/new_test.parquet (learned by retraining): -0.")
    assert "below -promote.tolerance" in report["reason"]
    assert production_state(retrain_ws)[0] == before[0] and read_registry(paths)["production"] == 2


def test_a_pipeline_promote_during_a_cycle_gets_its_own_version_and_wins(retrain_ws, retrain_cfg, monkeypatch,
                                                                          tiny_tokenizer):
    import tasks.promote as pm
    from tasks.core.student import build_student
    from tasks.models.loading import load_classifier
    from tasks.infra.storage import write_json

    paths = Paths(retrain_ws)
    teacher, _ = load_classifier(str(paths.teacher), ["negative", "positive"])
    build_student(teacher, [1, 3]).save_pretrained(paths.student)  # a new pipeline candidate
    student = {"accuracy": 1.0, "f1_macro": 1.0, "latency_ms_b1": 1.0, "size_mb": 1.0}
    write_json(paths.reports / "metrics.json", {"retention": 1.0, "student": student, "test_rows": 40})
    monkeypatch.setattr(pm, "production_comparison", lambda *a: _better_candidate())
    with cycle_held(monkeypatch, retrain_cfg, paths) as results:
        promoted = pm.promote(retrain_cfg, paths)  # not refused, not made to wait for the cycle
    assert promoted["promoted"] and promoted["version"] == 2
    report = results["report"]
    assert report["version"] == 3 and not report["promoted"]
    assert report["reason"].startswith("production changed from version 1 to version 2 (kdistill promote)")
    registry = read_registry(paths)
    assert [v["version"] for v in registry["versions"]] == [1, 2, 3] and registry["production"] == 2
    assert json.loads((production_dir(paths) / "production.json").read_text())["version"] == 2
    assert (retrain_ws / "data" / "cycles" / "v3" / "new_test.parquet").is_file()
    assert json.loads((retrain_ws / "models" / "cycles" / "v3" / "report.json").read_text())["version"] == 3


def test_cli_rollback_to_the_production_version_changes_nothing(retrain_ws, capsys, caplog):
    import logging

    from tasks.cli import main

    paths = Paths(retrain_ws)
    file = registry_path(paths)
    before = file.read_bytes(), file.stat().st_mtime_ns, hash_dir(production_dir(paths))
    with caplog.at_level(logging.INFO, logger="kd"):
        assert main(["--root", str(retrain_ws), "--params", str(retrain_ws / "params.yaml"), "rollback", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["changed"] is False and result["version"] == result["previous"] == 1
    assert "version 1 is already production: nothing changed" in caplog.text
    assert (file.read_bytes(), file.stat().st_mtime_ns, hash_dir(production_dir(paths))) == before


def test_cli_failed_rollbacks_leave_no_lock_behind(retrain_ws, capsys):
    from tasks.cli import main
    from tasks.lifecycle.registry import transaction

    paths = Paths(retrain_ws)
    args = ["--root", str(retrain_ws), "--params", str(retrain_ws / "params.yaml"), "rollback"]
    with transaction(paths, "test") as txn:  # a version 2 in production, so that 1 is a real rollback
        txn.add({"version": 2, "promoted": True, "reason": "test", "parent": 1}, paths.student)
    (retrain_ws / "models" / "versions" / "v1" / "config.json").write_text("{}")
    # refused before the write lock (unknown version), and under it (the archive's sha256 differs)
    for version, error in (("5", "no version 5"), ("1", "differs from the registry's")):
        assert main([*args, version]) == 2
        assert error in capsys.readouterr().err
        assert sorted(p.name for p in (retrain_ws / "models").iterdir() if p.name.endswith(".lock")) == []
    assert read_registry(paths)["production"] == 2


def test_a_labelled_batch_still_being_written_waits_for_the_next_cycle(retrain_ws, retrain_cfg):
    """Only complete labelled files, as score takes its files (score.settle_seconds): one being written
    is neither read half-written (nor quarantined as broken) but left for the next cycle."""
    import os

    from tasks.infra.config import with_overrides
    from tasks.models.loading import load_tokenizer
    from tasks.lifecycle.retrain import gather_labelled

    paths, folder = Paths(retrain_ws), retrain_ws / "data" / "incoming" / "labelled"
    cfg = with_overrides(retrain_cfg, {"score": {"settle_seconds": 2.0}})
    tokenizer, names = load_tokenizer(str(paths.teacher)), ["negative", "positive"]
    old = (folder / "tweets-1.csv").stat().st_mtime - 60
    os.utime(folder / "tweets-1.csv", (old, old))  # written long ago: complete
    rows = [f"{'a fine' if i % 2 else 'a dull'} film number {i},{'positive' if i % 2 else 'negative'}"
            for i in range(30)]
    growing = folder / "more.csv"
    growing.write_text("text,label\n" + "\n".join(rows[:10]) + "\na film cut mi")  # the writer is mid-row
    writer = threading.Timer(0.3, lambda: growing.write_text("text,label\n" + "\n".join(rows) + "\n"))
    writer.start()
    try:
        _, batches = gather_labelled(cfg, paths, names, tokenizer, set())
    finally:
        writer.join()
    assert {b["file"]: b["status"] for b in batches} == {"tweets-1.csv": "used", "more.csv": "pending"}
    assert growing.is_file() and not (folder / "quarantine").exists()
    os.utime(growing, (old, old))  # the writer has finished: the next cycle takes all of it
    gathered, batches = gather_labelled(cfg, paths, names, tokenizer, set())
    assert {b["file"]: b.get("rows") for b in batches} == {"tweets-1.csv": 80, "more.csv": 30}
    assert set(gathered["source"]) == {"tweets-1.csv", "more.csv"}


def test_a_student_with_its_own_tokenizer_is_refused_in_one_line(retrain_ws, retrain_cfg):
    """A pretrained student with another tokenizer than its teacher's (distill.student_model, issue 22): the
    cycle would hand it the teacher's token ids; it stops before writing anything."""
    from tests.code.test_mpnet import make_mpnet_tokenizer
    from tasks.lifecycle.retrain import retrain

    paths = Paths(retrain_ws)
    make_mpnet_tokenizer().save_pretrained(paths.teacher)  # the teacher now reads other tokens than the student
    registry, production = registry_path(paths).read_bytes(), hash_dir(production_dir(paths))
    with pytest.raises(UserError, match=r"^retrain: the production student reads its own tokenizer") as err:
        retrain(retrain_cfg, paths, "manual")
    assert "\n" not in str(err.value)
    assert registry_path(paths).read_bytes() == registry and hash_dir(production_dir(paths)) == production
