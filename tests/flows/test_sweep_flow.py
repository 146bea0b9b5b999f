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


def test_trials_on_a_work_pool_run_as_sweep_trial_runs_in_the_workers_checkout(prefect_api, ws, tmp_path, monkeypatch,
                                                                              tiny_teacher_dir):
    """sweep.work_pool: each trial is a run of the sweep-trial deployment. Here `run_deployment` runs that flow
    in a second checkout (what a worker on another machine does); the record comes back through the server."""
    import os
    import shutil
    from types import SimpleNamespace

    import prefect.deployments
    from prefect.artifacts import Artifact

    from flows.sweep import TRIAL_DEPLOYMENT, SweepParams, sweep, sweep_trial
    from tasks.infra.storage import read_json, write_json

    worker = tmp_path / "worker"
    shutil.copytree(ws, worker)  # the worker's checkout: same commit, teacher and data pulled
    started = []

    def run_deployment(name, parameters, timeout):
        assert name == TRIAL_DEPLOYMENT and timeout is None and parameters["spec"]["pruning"] is None
        started.append(parameters["spec"]["id"])
        before, os.environ["KDISTILL_ROOT"] = os.environ["KDISTILL_ROOT"], str(worker)
        try:
            state = sweep_trial(**parameters, return_state=True)
        finally:
            os.environ["KDISTILL_ROOT"] = before
        return SimpleNamespace(name="worker-run", work_pool_name="gpu-pool", state=state)

    monkeypatch.setattr(prefect.deployments, "run_deployment", run_deployment)
    state = sweep(sweep=SweepParams(depths=[1, 2], temperatures=[2.0], work_pool="gpu-pool"), return_state=True)
    assert state.is_completed(), state.message
    assert len(started) == 2 and state.result()["trials"] == 2
    for tid in started:
        here, there = ws / "models" / "sweep" / tid, worker / "models" / "sweep" / tid
        assert (there / "model").is_dir() and not (here / "model").exists()  # trained on the worker
        assert read_json(here / "trial.json")["status"] == "done" and (here / "val_preds.npy").is_file()
        assert f'"id": "{tid}"' in Artifact.get(f"sweep-trial-{tid}").data
    assert load_config(ws / "params.yaml").distill.student_layers in (1, 2)

    # A worker whose data are not the sweep's refuses the trial in one line, and the sweep fails with it.
    shutil.rmtree(ws / "models" / "sweep")
    summary = read_json(worker / "data" / "processed" / "summary.json")
    write_json(worker / "data" / "processed" / "summary.json", {**summary, "data_hash": "other"})
    state = sweep(sweep=SweepParams(depths=[1], temperatures=[2.0], work_pool="gpu-pool"), return_state=True)
    assert state.is_failed() and "are not the sweep's" in state.message
