"""drift-monitor under a temporary Prefect API: returns the verdict and publishes it as an artifact."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from flows.serve import build_deployments
from tasks.infra.storage import Paths, write_json

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def monitored(tmp_path, tiny_teacher_dir, monkeypatch) -> Paths:
    """A workspace with the tiny model in production, 300 training rows, 60 val rows and a 60-row production log."""
    from tasks.infra.embedded import read_embedded
    from tasks.models.loading import load_tokenizer
    from tasks.infra.prodlog import write_part
    from tasks.production.score import ProductionModel, log_rows

    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["drift"].update(min_window=50, window_rows=60, max_reference_rows=300, embedder="student")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(tiny_teacher_dir, tmp_path / "models" / "production")
    write_json(tmp_path / "models" / "registry.json", {"production": 1, "versions": [{"version": 1}]})
    movies = read_embedded("movies").sample(360, random_state=0).assign(
        label=lambda f: (f["label"] == "positive").astype(int))
    (tmp_path / "data" / "processed").mkdir(parents=True)
    movies.iloc[:300].to_parquet(tmp_path / "data" / "processed" / "train.parquet")
    movies.iloc[300:].to_parquet(tmp_path / "data" / "processed" / "val.parquet")
    model = ProductionModel(load_tokenizer(str(tiny_teacher_dir)), None, ["negative", "positive"], 1, "h", 64)
    texts = read_embedded("tweets")["text"].iloc[:60].tolist()
    rows = log_rows(model, texts, np.tile([0.4, 0.6], (60, 1)).astype("float32"), "t.csv")
    write_part(Paths(tmp_path), rows, "t", rows["time"].iloc[0].date())
    monkeypatch.setenv("KDISTILL_ROOT", str(tmp_path))
    return Paths(tmp_path)


def test_drift_monitor_flow_returns_verdict_and_artifact(prefect_api, monitored):
    from prefect.artifacts import Artifact

    from flows.monitor import drift_monitor

    state = drift_monitor(return_state=True)
    assert state.is_completed(), state.message
    verdict = state.result()
    assert verdict["status"] == "ok" and verdict["window_rows"] == 60
    assert (Path(verdict["report_dir"]) / "verdict.json").is_file()
    artifact = Artifact.get("drift-verdict")
    assert artifact is not None and "| text |" in artifact.data and "report.html" in artifact.data
    assert "| outliers |" in artifact.data and verdict["summary"] in artifact.data  # the per-row share


def test_drift_monitor_without_enough_data(prefect_api, monitored):
    from flows.monitor import drift_monitor

    shutil.rmtree(monitored.root / "data" / "production")
    verdict = drift_monitor(return_state=True).result()
    assert verdict["status"] == "not enough data" and verdict["drift_detected"] is None


def test_drift_monitor_is_deployed_on_its_params_schedule(monitored):
    (deployment,) = [d for d in build_deployments(monitored.root) if d.name == "drift-monitor"]
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == yaml.safe_load((REPO / "params.yaml").read_text())["schedule"]["drift_monitor"]
    assert deployment.entrypoint == "flows.monitor.drift_monitor"


def test_verdict_markdown_quotes_outlying_texts_on_one_line():
    from flows.monitor import verdict_markdown

    outliers = {"fired": True, "score": 0.31, "threshold": 0.07, "examples": [
        {"text": "a | b\nc *d*", "distance": 0.5}]}
    verdict = {"status": "ok", "drift_detected": True, "model_version": 1, "window_rows": 200, "reference_rows": 5000,
               "rule": "r", "signals": {"outliers": outliers}, "report_dir": "/tmp/r", "partial": True,
               "summary": "31% of this window looks unlike the training data"}
    text = verdict_markdown(verdict)
    assert "| outliers | yes | 0.31 | 0.07 |" in text and "**31% of this window looks unlike" in text
    assert "- “a \\| b c \\*d\\*” (0.500)" in text


def _drift_on_any_strong_signal(root: Path, **retrain) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["drift"].update(min_signals=1, text_auc=0.55)
    params["retrain"].update(retrain)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_drift_starts_the_retrain_deployment_as_the_monitor_runs_child(prefect_api, monitored):
    from uuid import UUID

    from prefect.artifacts import Artifact
    from prefect.client.orchestration import get_client

    from flows.monitor import drift_monitor
    from flows.retrain import retrain

    _drift_on_any_strong_signal(monitored.root)
    deployment_id = retrain.to_deployment(name="retrain").apply()
    state = drift_monitor(return_state=True)
    verdict = state.result()
    assert verdict["drift_detected"], verdict
    started = verdict["retrain"]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(started["flow_run_id"]))
        parent = client.read_task_run(run.parent_task_run_id)
    assert run.deployment_id == deployment_id and run.name == started["flow_run_name"]
    assert run.parameters["trigger"] == "drift" and run.parameters["detail"].startswith(verdict["report_dir"])
    assert f"outlier share {verdict['outlier_share']:.0%}" in run.parameters["detail"]
    assert parent.flow_run_id == state.state_details.flow_run_id  # the UI links monitor run -> retraining run
    assert started["flow_run_name"] in Artifact.get("drift-verdict").data


def test_drift_with_on_drift_off_starts_nothing(prefect_api, monitored):
    from flows.monitor import drift_monitor

    _drift_on_any_strong_signal(monitored.root, on_drift=False)
    verdict = drift_monitor(return_state=True).result()
    assert verdict["drift_detected"] and verdict["retrain"] == {"skipped": "retrain.on_drift is false"}


def test_retrain_and_rollback_are_deployed_retrain_on_its_params_schedule(monitored):
    params = yaml.safe_load((monitored.root / "params.yaml").read_text())
    params["schedule"]["retrain"] = "0 4 * * 1"
    (monitored.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    deployments = {d.name: d for d in build_deployments(monitored.root)}
    (schedule,) = deployments["retrain"].schedules
    assert schedule.schedule.cron == "0 4 * * 1" and schedule.parameters == {"trigger": "schedule"}
    assert deployments["retrain"].concurrency_limit == 1 and deployments["rollback"].schedules == []
    assert {"trigger", "detail"} <= set(deployments["retrain"]._parameter_openapi_schema.properties)
    assert "version" in deployments["rollback"]._parameter_openapi_schema.required
