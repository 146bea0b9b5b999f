"""The retrain and rollback flows under a temporary Prefect API, on the tiny retraining workspace."""

from __future__ import annotations

import os

import pytest
import yaml

from tasks.infra.registry_view import SOURCE_ENV, read_registry
from tasks.infra.storage import Paths

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def ws(retrain_ws, tiny_retrain_params, monkeypatch):
    from tasks.infra.config import merge

    params = merge(yaml.safe_load((retrain_ws / "params.yaml").read_text()), tiny_retrain_params)
    (retrain_ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (retrain_ws / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("KDISTILL_ROOT", str(retrain_ws))
    return retrain_ws


def test_retrain_flow_promotes_publishes_the_cycle_and_rollback_flow_restores(prefect_api, ws, monkeypatch):
    from prefect.artifacts import Artifact

    from flows.retrain import retrain, rollback

    monkeypatch.delenv(SOURCE_ENV, raising=False)
    state = retrain(trigger="manual", return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    assert report["promoted"] and state.message.startswith("version 2 promoted")
    entry = read_registry(Paths(ws))["versions"][-1]
    assert entry["source"].startswith("prefect flow run ")  # the registry names the run that made it
    # ... passed to the cycle, not set in this (worker) process's environment, where it would outlive the run
    assert SOURCE_ENV not in os.environ
    table = Artifact.get("retrain-cycle").data
    assert "| champion (production) |" in table and "Challenger" in table
    back = rollback(version=1, return_state=True)
    assert back.is_completed(), back.message
    assert read_registry(Paths(ws))["production"] == 1 and back.message.startswith("production is version 1 again")
    assert read_registry(Paths(ws))["events"][-1]["source"].startswith("prefect flow run ")
    assert SOURCE_ENV not in os.environ


def test_a_second_trigger_while_a_cycle_runs_is_skipped_with_a_log_line(prefect_api, ws, caplog):
    from flows.retrain import retrain
    from tasks.lifecycle.registry import cycle_lock

    with cycle_lock(Paths(ws), "retraining (drift)"):
        state = retrain(trigger="schedule", return_state=True)
    assert state.is_completed()
    assert state.result()["status"] == "skipped"
    assert "another retraining or rollback is running" in state.message and "retraining (drift)" in state.message
    assert any("this retraining (schedule) is skipped" in r.getMessage() for r in caplog.records)
    assert [v["version"] for v in read_registry(Paths(ws))["versions"]] == [1]


def test_only_a_cycle_lock_conflict_makes_a_skip_whatever_the_wording(prefect_api, ws, monkeypatch):
    import tasks.lifecycle.retrain
    from flows.retrain import retrain
    from tasks.infra.errors import DataError
    from tasks.lifecycle.registry import CycleRunning

    def busy(*args, **kwargs):
        raise CycleRunning("models/.retrain.lock: held by pid 1 (rollback to version 1)")

    monkeypatch.setattr(tasks.lifecycle.retrain, "retrain", busy)
    state = retrain(trigger="schedule", return_state=True)
    assert state.is_completed() and state.result()["status"] == "skipped" and "held by pid 1" in state.message

    def bad_batch(*args, **kwargs):  # a user's text that happens to quote the lock message is no lock conflict
        raise DataError("data/incoming/labelled/a.csv: row 3: 'another retraining or rollback is running' is no label")

    monkeypatch.setattr(tasks.lifecycle.retrain, "retrain", bad_batch)
    state = retrain(trigger="schedule", return_state=True)
    assert state.is_failed() and isinstance(state.result(raise_on_failure=False), DataError)
