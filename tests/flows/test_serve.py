"""The UI's path, for real: `prefect server start` on a free loopback port, `python -m flows.serve`
in a trained workspace, then a Custom run of training-pipeline through the REST API with a changed
parameter, exactly as the UI posts it. Every process is stopped by its own PID."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from flows.training import PIPELINE
from flows.ui import api_url, prefect_env, start_server, stop_pid, wait_healthy

pytestmark = pytest.mark.slow
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poll(fetch, done, timeout: float, what: str):
    """Call `fetch` until `done(result)`; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = fetch()
        if done(result):
            return result
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def server(tmp_path):
    """A Prefect server of its own on 127.0.0.1:<free port>; stopped by PID."""
    home, port = tmp_path / "prefect", free_port()
    proc = start_server(home, port, tmp_path / "server.log")
    try:
        wait_healthy(api_url(port), proc, timeout=120)
        yield api_url(port), home
    finally:
        stop_pid(proc.pid)
        assert proc.poll() is not None


def test_served_training_pipeline_runs_a_custom_run_from_the_api(server, trained, tmp_path):
    url, home = server
    env = {**prefect_env(home, url), "KDISTILL_ROOT": str(trained.root), "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    with open(tmp_path / "serve.log", "wb") as log:
        serve = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=trained.root, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=url, timeout=10) as api:
            # `serve` registers the deployment, then attaches its concurrency limit: wait for both.
            deployment = poll(lambda: api.get("/deployments/name/training-pipeline/training-pipeline"),
                              lambda r: r.status_code == 200 and (r.json().get("global_concurrency_limit") or {}).get(
                                  "limit") == 1, 120, "the served deployment and its concurrency limit").json()
            assert deployment["global_concurrency_limit"]["limit"] == 1
            # The Custom run form posts every field; the ones left empty are null.
            parameters = {"evaluate": {"min_retention": 0.0, "latency_runs": 7},
                          "distill": {"temperature": None, "epochs": None}, "promote": {"tolerance": 0.0}}
            # A loaded 2-core machine can make the SQLite-backed server answer 503 for a moment;
            # retry those (as a person would click again), never a 4xx.
            created = poll(lambda: api.post(f"/deployments/{deployment['id']}/create_flow_run",
                                            json={"parameters": parameters}),
                           lambda r: r.status_code < 500, 60, "the server to accept the run")
            assert created.status_code == 201, created.text
            run_id = created.json()["id"]
            run = poll(lambda: api.get(f"/flow_runs/{run_id}").json(),
                       lambda r: (r.get("state") or {}).get("type") in TERMINAL, 300, "the flow run to finish")
            assert run["state"]["type"] == "COMPLETED", (run["state"], (tmp_path / "serve.log").read_text()[-3000:])
            tasks = api.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}).json()
            assert set(PIPELINE) <= {t["name"] for t in tasks}
            assert all(t["state"]["type"] == "COMPLETED" for t in tasks)
        assert yaml.safe_load((trained.root / "params.yaml").read_text())["evaluate"]["latency_runs"] == 7
    finally:
        stop_pid(serve.pid)
    assert serve.poll() is not None
