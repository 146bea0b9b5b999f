"""promote: the decision rule, and the stage's bookkeeping with the production model's score stubbed."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from tasks import promote as P
from tasks.infra import registry_view as V
from tasks.infra.locks import LockBusy
from tasks.lifecycle import registry as R
from tasks.infra.config import Config
from tasks.infra.stats import Comparison, paired_comparison
from tasks.infra.storage import Paths, hash_dir

GATES = P.Gates(min_retention=0.9, tolerance=0.0)


def candidate(acc: float, retention: float = 1.0) -> dict:
    return {"retention": retention, "student": {"accuracy": acc}}


def versus(production: float, cand: float, rows: int = 1000) -> Comparison:
    """Constructed predictions on `rows` binary rows where production gets `production` right and the
    candidate `cand`, disagreeing on as few rows as the accuracies allow (the answer is known)."""
    labels = np.zeros(rows, dtype=int)
    right_a, right_b = round(production * rows), round(cand * rows)
    a, b = np.ones(rows, dtype=int), np.ones(rows, dtype=int)
    a[:right_a], b[:right_b] = 0, 0
    return paired_comparison(labels, a, b)


def test_first_candidate_is_promoted_when_it_passes_the_gate():
    assert P.decide(candidate(0.8), None, GATES).promote


def test_a_failed_evaluate_gate_is_never_promoted():
    decision = P.decide(candidate(0.99, retention=0.5), None, GATES)
    assert not decision.promote and "evaluate.min_retention" in decision.reason


@pytest.mark.parametrize("acc, tolerance, promoted", [
    (0.80, 0.0, True),     # equal is "no worse"
    (0.79, 0.0, False),    # worse
    (0.79, 0.02, True),    # worse, within the tolerance
    (0.81, -0.05, False),  # better, but not by the required margin
    (0.86, -0.05, True),   # +6 points on 1000 rows: significant
])
def test_candidate_against_production(acc, tolerance, promoted):
    decision = P.decide(candidate(acc), versus(0.80, acc), P.Gates(0.9, tolerance))
    assert decision.promote is promoted
    assert f"{acc - 0.80:+.4f} accuracy (95% CI" in decision.reason and "current test split" in decision.reason


def test_a_required_gain_inside_the_noise_is_not_promoted():
    # +6 points, above the required 5, but on 50 rows (3 rows): the interval reaches 0.
    small = versus(0.80, 0.86, rows=50)
    assert small.diff >= 0.05 and not small.significant_gain
    decision = P.decide(candidate(0.86), small, P.Gates(0.9, -0.05))
    assert not decision.promote and "inside the noise" in decision.reason and "50 rows" in decision.reason


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A workspace with a fake student folder, metrics and summary; production scoring stubbed."""
    paths = Paths(tmp_path)
    paths.student.mkdir(parents=True)
    (paths.student / "config.json").write_text("{}")
    (paths.student / "model.safetensors").write_bytes(b"v1")
    paths.processed.mkdir(parents=True)
    paths.summary.write_text(json.dumps({"labels": ["negative", "positive"], "data_hash": "abc"}))
    scores = {"production": None}
    monkeypatch.setattr(P, "production_comparison", lambda cfg, p, names: scores["production"])
    monkeypatch.setenv(V.SOURCE_ENV, "test")

    def evaluate(acc: float) -> None:
        student = {"accuracy": acc, "f1_macro": acc, "latency_ms_b1": 1.0, "size_mb": 1.0}
        (paths.reports).mkdir(exist_ok=True)
        (paths.reports / "metrics.json").write_text(json.dumps(
            {"student": student, "teacher": student, "retention": 1.0, "test_rows": 10}))

    return paths, scores, evaluate


def test_promote_installs_the_student_and_records_it(workspace):
    paths, _, evaluate = workspace
    evaluate(0.8)
    report = P.promote(Config(), paths)
    assert report["promoted"] and report["version"] == report["production_version"] == 1
    prod = V.production_dir(paths)
    assert (prod / "model.safetensors").read_bytes() == b"v1"
    stamp = json.loads((prod / V.STAMP).read_text())
    registry = json.loads(V.registry_path(paths).read_text())
    assert registry["production"] == 1 and registry["versions"][0] == stamp
    assert stamp["data_hash"] == "abc" and stamp["source"] == "test" and stamp["metrics"]["accuracy"] == 0.8


def test_promote_refuses_a_worse_student_and_leaves_production_untouched(workspace):
    paths, scores, evaluate = workspace
    evaluate(0.8)
    P.promote(Config(), paths)
    before = hash_dir(V.production_dir(paths))
    (paths.student / "model.safetensors").write_bytes(b"v2")
    evaluate(0.7)
    scores["production"] = versus(0.8, 0.7)
    report = P.promote(Config(), paths)
    assert not report["promoted"] and report["version"] == 2 and report["production_version"] == 1
    assert "-0.1000 accuracy (95% CI" in report["reason"] and "below -promote.tolerance 0.0" in report["reason"]
    assert report["comparison"]["diff"] == -0.1 and report["comparison"]["significant_loss"]
    assert hash_dir(V.production_dir(paths)) == before
    registry = json.loads(V.registry_path(paths).read_text())
    assert registry["production"] == 1
    assert [(v["version"], v["promoted"]) for v in registry["versions"]] == [(1, True), (2, False)]


def test_the_production_model_itself_is_not_promoted_twice(workspace):
    paths, _, evaluate = workspace
    evaluate(0.8)
    P.promote(Config(), paths)
    report = P.promote(Config(), paths)
    assert not report["promoted"] and "already the production model" in report["reason"]
    assert len(json.loads(V.registry_path(paths).read_text())["versions"]) == 1


def test_promote_waits_briefly_for_another_writer_then_fails_with_one_line(workspace, monkeypatch):
    paths, _, evaluate = workspace
    evaluate(0.8)
    held, done = threading.Event(), threading.Event()

    def writer():  # e.g. a retraining cycle writing its version
        with R.transaction(paths, "retraining (drift)"):
            held.set()
            done.wait(60)

    thread = threading.Thread(target=writer)
    thread.start()
    assert held.wait(30)
    monkeypatch.setattr(R, "WRITE_WAIT_S", 0.3)
    try:
        with pytest.raises(LockBusy, match=r"^\S+/models/.registry.lock: held for more than 0.3 s by pid \d+, since "
                                             r"\S+, retraining \(drift\); nothing was written by this promote, run it "
                                             r"again$"):
            P.promote(Config(), paths)
    finally:
        done.set()
        thread.join(60)
    assert not V.registry_path(paths).exists() and not V.production_dir(paths).exists()
    report = P.promote(Config(), paths)  # once the writer let go, the same promote goes through
    assert report["promoted"] and report["version"] == 1
