"""The sweep flow under a temporary Prefect API: each trial a task with its log, the table as an
artifact, the choice written into params.yaml; nothing within budget fails the run with the gate's line."""

from __future__ import annotations

import pytest

from tasks.infra.config import load_config
from tests.code.test_sweep import make_workspace

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def ws(tmp_path, tiny_teacher_dir, monkeypatch):
    root = make_workspace(tmp_path / "ws", tiny_teacher_dir)
    (root / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("KDISTILL_ROOT", str(root))
    return root


def task_runs(flow_run_id) -> dict[str, str]:
    """Task run name -> its log text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterTaskRunId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        return {r.name: "\n".join(log.message for log in client.read_logs(
            log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[r.id])))) for r in runs}


def test_sweep_flow_runs_each_trial_as_a_task_and_applies_the_choice(prefect_api, ws):
    from prefect.artifacts import Artifact

    from flows.sweep import SweepParams, sweep

    state = sweep(sweep=SweepParams(depths=[1, 2], temperatures=[2.0]), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["trials"] == 2 and state.message.startswith("chosen: trial ")
    runs = task_runs(state.state_details.flow_run_id)
    trials = [name for name in runs if name.startswith("trial ")]
    assert len(trials) == 2 and f"trial {summary['chosen']}" in trials
    assert all("[distill]" in runs[name] for name in trials), "the trial process's log is not in its task's log"
    assert f"**{summary['chosen']}**" in Artifact.get("sweep").data
    assert load_config(ws / "params.yaml").distill.student_layers in (1, 2)

    # Nothing within budget: the run fails with the gate's line; the finished trials are not rerun.
    before = (ws / "params.yaml").read_text()
    state = sweep(sweep=SweepParams(depths=[1, 2], temperatures=[2.0], max_latency_ms=1e-6), return_state=True)
    assert state.is_failed() and "no trial within budget" in state.message
    assert not [n for n in task_runs(state.state_details.flow_run_id) if n.startswith("trial ")]
    assert (ws / "params.yaml").read_text() == before
    assert "no trial within budget" in Artifact.get("gate-failure").data
