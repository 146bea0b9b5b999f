"""The retrain and rollback flows under a temporary Prefect API, on the tiny retraining workspace."""

from __future__ import annotations

import pytest
import yaml

from tasks.promote import read_registry
from tasks.storage import Paths

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def ws(retrain_ws, tiny_retrain_params, monkeypatch):
    from tasks.config import merge

    params = merge(yaml.safe_load((retrain_ws / "params.yaml").read_text()), tiny_retrain_params)
    (retrain_ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (retrain_ws / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("KDISTILL_ROOT", str(retrain_ws))
    return retrain_ws


def test_retrain_flow_promotes_publishes_the_cycle_and_rollback_flow_restores(prefect_api, ws):
    from prefect.artifacts import Artifact

    from flows.retrain import retrain, rollback

    state = retrain(trigger="manual", return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    assert report["promoted"] and state.message.startswith("version 2 promoted")
    entry = read_registry(Paths(ws))["versions"][-1]
    assert entry["source"].startswith("prefect flow run ")  # the registry names the run that made it
    table = Artifact.get("retrain-cycle").data
    assert "| champion (production) |" in table and "Challenger" in table
    back = rollback(version=1, return_state=True)
    assert back.is_completed(), back.message
    assert read_registry(Paths(ws))["production"] == 1 and back.message.startswith("production is version 1 again")


def test_a_second_trigger_while_a_cycle_runs_is_skipped_with_a_log_line(prefect_api, ws, caplog):
    from flows.retrain import retrain
    from tasks.storage import Paths as P
    from tasks.versions import exclusive

    with exclusive(P(ws), "retraining (drift)"):
        state = retrain(trigger="schedule", return_state=True)
    assert state.is_completed()
    assert state.result()["status"] == "skipped"
    assert "another retraining or rollback is running" in state.message and "retraining (drift)" in state.message
    assert any("this retraining (schedule) is skipped" in r.getMessage() for r in caplog.records)
    assert [v["version"] for v in read_registry(Paths(ws))["versions"]] == [1]
