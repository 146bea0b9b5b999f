"""The scoring API with FastAPI's TestClient on a tiny model: answers, clear 4xx errors, the log, hot reload."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tasks.infra.config import load_config
from tasks.infra.storage import Paths, write_json

REPO = Path(__file__).resolve().parents[2]


def install(root: Path, model_dir: Path, version: int) -> None:
    """Make `model_dir` production version `version` (as promote would: folder swap, then registry)."""
    target = root / "models" / "production"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(model_dir, target)
    entry = {"version": version, "model_hash": f"hash{version}", "metrics": {"accuracy": 0.5 + version / 100}}
    write_json(target / "production.json", entry)
    write_json(root / "models" / "registry.json", {"production": version, "versions": [entry]})


BASE = ["inference.variant=torch-fp32", "inference.threads=0", "api.max_texts=8", "api.max_chars=200", "api.flush_rows=5"]


@contextlib.contextmanager
def serving(root: Path, model_dir: Path, *overrides: str, raise_server_exceptions: bool = True):
    """A TestClient on the API of a workspace at `root` whose production model is `model_dir`."""
    from fastapi.testclient import TestClient

    from tasks.production.api import create_app

    install(root, model_dir, 1)
    cfg = load_config(REPO / "params.yaml", [*BASE, *overrides])
    with TestClient(create_app(cfg, Paths(root)), raise_server_exceptions=raise_server_exceptions) as c:
        c.root = root
        yield c


@pytest.fixture
def client(tmp_path, tiny_teacher_dir):
    with serving(tmp_path, tiny_teacher_dir) as c:
        yield c


def log_rows(root: Path) -> int:
    from tasks.infra.prodlog import read_log

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
    (b'{"texts": ["fine", "\\u200b \\u200b"]}', 422, "text 1 is empty or blank"),  # zero-width spaces only
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
    health = client.get("/health").json()
    assert {k: health[k] for k in ("status", "model_loaded", "model_version", "problems")} == {
        "status": "ok", "model_loaded": True, "model_version": 1, "problems": {}}
    info = client.get("/model").json()
    assert info["version"] == 1 and info["metrics"]["accuracy"] == pytest.approx(0.51)
    assert info["labels"] == ["negative", "positive"]


def test_concurrent_requests_are_answered_and_logged(tmp_path, tiny_teacher_dir):
    texts = [f"film number {i} was fine" for i in range(12)]
    with serving(tmp_path, tiny_teacher_dir) as client:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda t: client.post("/predict", json={"text": t}), texts))
        assert all(a.status_code == 200 for a in answers)
        assert log_rows(tmp_path) >= 5  # flushed once api.flush_rows = 5 rows are buffered ...
    assert log_rows(tmp_path) == 12  # ... and the rest at shutdown


def test_log_is_flushed_at_shutdown(tmp_path, tiny_teacher_dir):
    from fastapi.testclient import TestClient

    from tasks.production.api import create_app

    install(tmp_path, tiny_teacher_dir, 1)
    cfg = load_config(REPO / "params.yaml", ["inference.variant=torch-fp32", "inference.threads=0"])
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


def post_together(client, bodies: list[bytes]) -> list:
    """POST the bodies at once (batch_wait_ms is long in these tests, so they share one batch)."""
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: client.post("/predict", content=b,
                                                   headers={"content-type": "application/json"}), bodies))


GOOD = [b'{"text": "a great film"}', b'{"texts": ["dull", "warm and funny"]}', b'{"text": "the plot is slow"}']


def test_a_lone_surrogate_fails_only_its_own_request(tmp_path, tiny_teacher_dir):
    # JSON allows "\ud800"; Python keeps it as a lone surrogate, which the tokenizer cannot encode.
    poisoned = b'{"texts": ["fine", "a \\ud800 b"]}'
    with serving(tmp_path, tiny_teacher_dir, "api.batch_wait_ms=300", raise_server_exceptions=False) as c:
        answers = post_together(c, [*GOOD, poisoned])
        assert [a.status_code for a in answers] == [200, 200, 200, 422], [a.text for a in answers]
        assert "text 1" in answers[-1].json()["error"] and "surrogate" in answers[-1].json()["error"]
        assert [len(a.json()["predictions"]) for a in answers[:3]] == [1, 2, 1]
        assert c.post("/predict", json={"text": "a great film"}).status_code == 200


def test_an_error_inside_a_batch_fails_only_the_request_it_belongs_to(tmp_path, tiny_teacher_dir, tiny_tokenizer):
    # A token of the poisoned text that no good text has.
    good = {i for b in GOOD for t in json.loads(b).get("texts", [json.loads(b).get("text")])
            for i in tiny_tokenizer(t)["input_ids"]}
    poison = next(i for i in tiny_tokenizer("an awful movie")["input_ids"] if i not in good)
    with serving(tmp_path, tiny_teacher_dir, "api.batch_wait_ms=300", raise_server_exceptions=False) as c:
        predictor = c.app.state.batcher.model.predictor
        real = predictor.predict_logits

        def fragile(input_ids, attention_mask):  # a model that breaks on one input, whatever batch it is in
            if (input_ids == poison).any():
                raise RuntimeError("kernel failed")
            return real(input_ids, attention_mask)
        predictor.predict_logits = fragile
        answers = post_together(c, [*GOOD, b'{"text": "an awful movie"}'])
        assert [a.status_code for a in answers] == [200, 200, 200, 500], [a.text for a in answers]
        assert "RuntimeError" in answers[-1].json()["error"]


def test_version_and_probabilities_come_from_the_same_model(client):
    # A hot reload that lands while a batch runs must not give the new version the old model's answer.
    batcher = client.app.state.batcher
    old = batcher.model
    new = dataclasses.replace(old, version=99, labels=["spam", "ham"])
    real = old.predictor.predict_logits

    def reload_midway(input_ids, attention_mask):
        batcher.model = new
        return real(input_ids, attention_mask)
    old.predictor.predict_logits = reload_midway
    body = client.post("/predict", json={"text": "a great film"}).json()
    assert body["model_version"] == 1
    assert set(body["predictions"][0]["probabilities"]) == {"negative", "positive"}


def test_the_log_is_written_off_the_event_loop(tmp_path, tiny_teacher_dir, monkeypatch):
    from tasks.production import api_log

    on_loop = []
    real = api_log.write_part

    def spy(*args, **kwargs):  # Parquet on the event loop would stall every request meanwhile
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return real(*args, **kwargs)
    monkeypatch.setattr(api_log, "write_part", spy)
    with serving(tmp_path, tiny_teacher_dir) as c:  # api.flush_rows=5
        assert c.post("/predict", json={"texts": [f"film {i}" for i in range(6)]}).status_code == 200
        assert on_loop == [False]
        assert c.post("/predict", json={"text": "one more"}).status_code == 200
    assert on_loop == [False, False]  # the shutdown flush too
    assert log_rows(tmp_path) == 7


@pytest.mark.parametrize("body, words", [
    (b'{"text": "caf\xe9"}', "malformed JSON: byte 13 is not UTF-8 (invalid continuation byte)"),  # Latin-1
    (b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "malformed JSON: nested too deeply"),
    (b'{"text": ' + b"9" * 5000 + b"}", "malformed JSON: Exceeds the limit (4300 digits) for integer string"),
])
def test_a_body_that_cannot_be_parsed_gets_a_400_that_says_why(client, body, words):
    # FastAPI answered {"detail": "There was an error parsing the body"}: not the API's one-line shape.
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json() == {"error": response.json()["error"]}
    assert response.json()["error"].startswith(words), response.json()


def test_a_body_larger_than_any_valid_request_is_refused_before_it_is_read(tmp_path, tiny_teacher_dir):
    # Every body was read and parsed whole before any limit was checked (a padding field of any size
    # was even answered): gigabytes from one client would take the memory every request needs.
    from tasks.production.api import max_body_bytes

    limit = max_body_bytes(8, 200)  # BASE: api.max_texts=8, api.max_chars=200
    padded = json.dumps({"text": "a great film", "padding": "x" * limit}).encode()  # an unknown field, ignored
    with serving(tmp_path, tiny_teacher_dir) as c:
        for body in (padded, iter([padded[:limit // 2], padded[limit // 2:]])):  # declared length, then chunked
            response = c.post("/predict", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 413, response.text
            assert response.json() == {"error": f"the request body is larger than {limit} bytes, more than the "
                                                "largest valid request (api.max_texts texts of api.max_chars characters)"}
        assert c.post("/predict", json={"text": "a great film"}).status_code == 200
    assert log_rows(tmp_path) == 1  # only the good request


@pytest.mark.parametrize("text", ["\u200f\u200e", "\u0301\u0301", "\u202a\u202c"])
def test_a_text_with_no_tokens_gets_422_as_score_quarantines_it(tmp_path, tiny_teacher_dir, text):
    # Bidi marks or lone combining accents leave nothing once tokenised: the API answered 200 with the
    # prediction of an empty input and logged it, while `kdistill score` quarantines the same text.
    with serving(tmp_path, tiny_teacher_dir) as c:
        response = c.post("/predict", json={"texts": ["a great film", text]})
        assert response.status_code == 422
        assert response.json() == {"error": "text 1 has no tokens once tokenised (marks or control characters only); "
                                            "expected some words"}
        assert c.post("/predict", json={"text": "a great film"}).status_code == 200
    assert log_rows(tmp_path) == 1
