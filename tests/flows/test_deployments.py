"""How the flows are configured: deployments and schedules, retries, timeouts, the workspace slot."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from flows.serve import DEPLOYMENTS, build_deployments
from flows.training import PIPELINE, STAGE_TASKS, retry_only_transient, training_pipeline, workspace_slot
from flows.workspace import GateFailed, StageFailed, Workspace
from tasks.cli import STAGES
from tasks.infra.params_file import apply_overrides

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path) -> Path:
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def test_the_pipeline_is_the_dvc_pipeline():
    import yaml

    assert set(PIPELINE) <= set(STAGES)
    assert list(PIPELINE) == [s for s in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"] if s in PIPELINE]


def test_deployments_are_manual_by_default_with_one_run_at_a_time(root):
    (deployment,) = [d for d in build_deployments(root) if d.name == "training-pipeline"]
    assert deployment.schedules == []
    assert deployment.concurrency_limit == 1
    assert deployment.entrypoint == "flows.training.training_pipeline"
    assert {"base", "ingest", "teacher", "distill", "finetune", "evaluate", "promote"} <= set(
        deployment._parameter_openapi_schema.properties)
    assert len(DEPLOYMENTS) == len({spec.name for spec in DEPLOYMENTS})
    # A sweep's trials on a work pool run side by side: the sweep-trial deployment has no limit.
    limits = {d.name: d.concurrency_limit for d in build_deployments(root)}
    assert limits["sweep"] == 1 and limits["sweep-trial"] is None


def test_cron_schedules_come_from_params_yaml(root):
    apply_overrides(root / "params.yaml", {"schedule": {"training_pipeline": "0 3 * * 0", "timezone": "Europe/Paris"}})
    (deployment,) = [d for d in build_deployments(root) if d.name == "training-pipeline"]
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "0 3 * * 0" and schedule.schedule.timezone == "Europe/Paris"


def test_a_work_pool_deployment_runs_in_the_workers_checkout(root):
    (deployment,) = [d for d in build_deployments(root, "gpu-pool", "/srv/kdistill") if d.name == "training-pipeline"]
    assert deployment.work_pool_name == "gpu-pool"
    assert deployment.job_variables == {"working_dir": "/srv/kdistill", "env": {"KDISTILL_ROOT": "/srv/kdistill"}}


def test_no_stage_or_flow_has_a_timeout_and_only_transient_failures_retry():
    assert training_pipeline.timeout_seconds is None
    for name in PIPELINE:
        task = STAGE_TASKS[name]
        assert task.name == name and task.timeout_seconds is None
        assert task.retry_condition_fn is retry_only_transient
    state = lambda exc: SimpleNamespace(data=exc)
    assert retry_only_transient(None, None, state(StageFailed("dvc lock held", transient=True)))
    assert not retry_only_transient(None, None, state(GateFailed("evaluate gate: retention 0.5 < 0.9")))
    assert not retry_only_transient(None, None, state(StageFailed("teacher.model: not found")))
    assert not retry_only_transient(None, None, state(ValueError("bug")))


def test_one_run_at_a_time_per_workspace(prefect_api, root):
    from prefect.client.orchestration import get_client

    ws = Workspace(root)
    held, release = threading.Event(), threading.Event()

    def first_run():
        with workspace_slot(ws):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=first_run)
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(TimeoutError), workspace_slot(ws, timeout_seconds=2):
            pass
    finally:
        release.set()
        thread.join(30)
    with workspace_slot(ws, timeout_seconds=10):  # free again once the first run is done
        pass
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(ws.slot_name).limit == 1
    assert Workspace(root / "other").slot_name != ws.slot_name
