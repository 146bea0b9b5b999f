"""The scoring API with FastAPI's TestClient on a tiny model: answers, clear 4xx errors, the log, hot reload."""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tasks.config import load_config
from tasks.storage import Paths, write_json

REPO = Path(__file__).resolve().parents[2]


def install(root: Path, model_dir: Path, version: int) -> None:
    """Make `model_dir` production version `version` (as promote would: folder swap, then registry)."""
    target = root / "models" / "production"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(model_dir, target)
    entry = {"version": version, "model_hash": f"hash{version}", "metrics": {"accuracy": 0.5 + version / 100}}
    write_json(target / "production.json", entry)
    write_json(root / "models" / "registry.json", {"production": version, "versions": [entry]})


@pytest.fixture
def client(tmp_path, tiny_teacher_dir):
    from fastapi.testclient import TestClient

    from tasks.api import create_app

    install(tmp_path, tiny_teacher_dir, 1)
    cfg = load_config(REPO / "params.yaml", ["serve.variant=torch-fp32", "serve.threads=0", "api.max_texts=8",
                                             "api.max_chars=200", "api.flush_rows=5"])
    with TestClient(create_app(cfg, Paths(tmp_path))) as c:
        c.root = tmp_path
        yield c


def log_rows(root: Path) -> int:
    from tasks.score import read_log

    return len(read_log(Paths(root)))


def test_predict_one_and_many(client):
    one = client.post("/predict", json={"text": "a great film"})
    assert one.status_code == 200
    (row,) = one.json()["predictions"]
    assert row["label"] in ("negative", "positive") and sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    many = client.post("/predict", json={"texts": ["a great film", "an awful movie", "dull"]})
    assert many.status_code == 200 and len(many.json()["predictions"]) == 3
    assert many.json()["predictions"][0] == row  # batching does not change an answer


@pytest.mark.parametrize("body,status,words", [
    (b"{not json", 400, "malformed JSON"),
    (b'{"text": ""}', 422, "empty"),
    (b'{"texts": []}', 422, "empty"),
    (b'{"texts": "one"}', 422, "texts"),
    (b'{"text": "a", "texts": ["b"]}', 422, "exactly one"),
    (b'{"text": "' + b"x" * 201 + b'"}', 413, "api.max_chars"),
    (b'{"texts": [' + b",".join([b'"t"'] * 10_000) + b"]}", 413, "10000 texts"),
])
def test_bad_requests_get_clear_4xx(client, body, status, words):
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status and words in response.json()["error"]


def test_health_and_model(client):
    assert client.get("/health").json() == {"status": "ok", "model_loaded": True, "model_version": 1}
    info = client.get("/model").json()
    assert info["version"] == 1 and info["metrics"]["accuracy"] == pytest.approx(0.51)
    assert info["labels"] == ["negative", "positive"]


def test_concurrent_requests_are_answered_and_logged(client):
    texts = [f"film number {i} was fine" for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda t: client.post("/predict", json={"text": t}), texts))
    assert all(a.status_code == 200 for a in answers)
    assert log_rows(client.root) >= 10  # flushed every api.flush_rows = 5 rows; the rest at shutdown


def test_log_is_flushed_at_shutdown(tmp_path, tiny_teacher_dir):
    from fastapi.testclient import TestClient

    from tasks.api import create_app

    install(tmp_path, tiny_teacher_dir, 1)
    cfg = load_config(REPO / "params.yaml", ["serve.variant=torch-fp32", "serve.threads=0"])
    with TestClient(create_app(cfg, Paths(tmp_path))) as c:
        assert c.post("/predict", json={"texts": ["good", "bad"]}).status_code == 200
        assert log_rows(tmp_path) == 0  # buffered
    assert log_rows(tmp_path) == 2


def test_a_newly_promoted_model_is_served_without_restart(client, tiny_teacher_dir):
    assert client.post("/predict", json={"text": "good"}).json()["model_version"] == 1
    time.sleep(0.01)
    install(client.root, tiny_teacher_dir, 2)
    registry = client.root / "models" / "registry.json"
    os.utime(registry, ns=(time.time_ns(), time.time_ns() + 10**9))  # a coarse-mtime filesystem still sees it
    assert client.post("/predict", json={"text": "good"}).json()["model_version"] == 2
    assert client.get("/model").json()["version"] == 2
