"""The API's two silent failures, made loud (issue 26 item 5) and its errors as JSON (issue 25 item 8), through
HTTP: a failed reload is reported in /health and retried with backoff; a failed log write keeps the rows."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tasks.infra.storage import write_json
from tests.code.test_api import install, log_rows, serving

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def wait_for(client, check, seconds: float = 15.0) -> dict:
    """/health's body once `check(body)` holds (the API's timer works in the background)."""
    deadline = time.monotonic() + seconds
    while True:
        body = client.get("/health").json()
        if check(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_a_failed_reload_is_reported_and_retried_until_it_loads(tmp_path, tiny_teacher_dir):
    with serving(tmp_path, tiny_teacher_dir) as client:
        production = tmp_path / "models" / "production"
        good_config = (production / "config.json").read_text()
        # Version 2 is registered, but its folder is broken: the reload fails.
        (production / "config.json").write_text("{ not json")
        entry = {"version": 2, "model_hash": "hash2", "metrics": {"accuracy": 0.52}}
        write_json(production / "production.json", entry)
        write_json(tmp_path / "models" / "registry.json", {"production": 2, "versions": [entry]})
        answer = client.post("/predict", json={"text": "a fine film"})
        assert answer.status_code == 200 and answer.json()["model_version"] == 1  # the old model still serves
        health = client.get("/health").json()
        assert health["status"] == "degraded" and health["model_version"] == 1
        assert "loading the production model failed" in health["problems"]["model"]["error"]
        # Repaired without touching the registry: only the retry can find it.
        (production / "config.json").write_text(good_config)
        health = wait_for(client, lambda b: b["status"] == "ok")
        assert health["status"] == "ok" and health["model_version"] == 2 and health["problems"] == {}
        assert client.post("/predict", json={"text": "a fine film"}).json()["model_version"] == 2


def test_a_failed_log_write_keeps_the_rows_spools_them_and_shows_it(tmp_path, tiny_teacher_dir):
    log_dir = tmp_path / "data" / "production"
    with serving(tmp_path, tiny_teacher_dir, "api.flush_seconds=0.2") as client:  # api.flush_rows=5
        log_dir.parent.mkdir(parents=True, exist_ok=True)
        log_dir.write_text("a file where the log's folder should be")  # every write of a part fails
        texts = [f"film number {i}" for i in range(6)]
        assert client.post("/predict", json={"texts": texts}).status_code == 200
        health = wait_for(client, lambda b: b["log"]["spooled_rows"] == 6)
        assert health["status"] == "degraded", health
        assert health["log"]["spooled_rows"] == 6 and health["log"]["failed_writes"] >= 3
        assert "writing the production log failed" in health["problems"]["log"]["error"]
        assert len(list((tmp_path / "data" / "production-spool").glob("*.parquet"))) == 1
        log_dir.unlink()  # the disk is back: the next write takes the spooled rows along
        assert client.post("/predict", json={"text": "one more"}).status_code == 200
        health = wait_for(client, lambda b: b["status"] == "ok")
        assert health["status"] == "ok" and health["log"]["spooled_rows"] == 0, health
        assert log_rows(tmp_path) == 7
    assert log_rows(tmp_path) == 7
    assert not list((tmp_path / "data" / "production-spool").glob("*.parquet"))


def test_rows_spooled_by_a_previous_process_reach_the_log_at_start(tmp_path, tiny_teacher_dir):
    import pandas as pd

    from tasks.production.api_log import spool_dir
    from tasks.infra.storage import Paths

    with serving(tmp_path, tiny_teacher_dir) as client:
        assert client.post("/predict", json={"texts": ["good", "bad"]}).status_code == 200
    frame = pd.concat([pd.read_parquet(p) for p in (tmp_path / "data" / "production").rglob("*.parquet")])
    shutil.rmtree(tmp_path / "data" / "production")
    spool_dir(Paths(tmp_path)).mkdir(parents=True)
    frame.to_parquet(spool_dir(Paths(tmp_path)) / "api-0123.parquet", index=False)
    with serving(tmp_path, tiny_teacher_dir):
        assert log_rows(tmp_path) == 2


def test_an_unreadable_registry_gets_a_json_answer_naming_it(tmp_path, tiny_teacher_dir):
    with serving(tmp_path, tiny_teacher_dir, raise_server_exceptions=False) as client:
        (tmp_path / "models" / "registry.json").write_text("{ not json")
        answer = client.get("/model")
        assert answer.status_code == 503 and answer.headers["content-type"] == "application/json", answer.text
        assert "models/registry.json: not valid JSON" in answer.json()["error"]
        assert client.post("/predict", json={"text": "still served"}).status_code == 200
