"""The API as a real process (`kdistill api`, uvicorn) under a crash and hostile connections: the log's loss
window after `kill -9` and the read deadlines (issue 25 items 5 and 8)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tasks.infra.storage import Paths
from tests.code.test_api import install

REPO = Path(__file__).resolve().parents[2]
FLUSH_SECONDS = 1.0
READ_TIMEOUT = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def api_process(root: Path, model_dir: Path):
    """`kdistill api` on a free port of 127.0.0.1, serving `model_dir` as version 1; yields (process, base URL)."""
    install(root, model_dir, 1)
    port = free_port()
    cmd = [sys.executable, "-m", "tasks.cli", "--params", str(REPO / "params.yaml"), "--root", str(root), "-q",
           "-S", f"api.port={port}", "-S", f"api.flush_seconds={FLUSH_SECONDS}", "-S", "api.flush_rows=100000",
           "-S", f"api.read_timeout_seconds={READ_TIMEOUT}", "-S", "inference.variant=torch-fp32",
           "-S", "inference.threads=1", "api"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if get(url + "/health")["model_loaded"]:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the API did not start in 120 s"
            time.sleep(0.3)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        proc.stderr.close()


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_teacher_dir):
    """One API process for the module (its start-up is most of the cost); the last test kills it."""
    root = tmp_path_factory.mktemp("api")
    with api_process(root, tiny_teacher_dir) as (proc, url):
        yield root, proc, url


def log_rows(root: Path) -> int:
    from tasks.infra.prodlog import read_log

    return len(read_log(Paths(root)))


def read_answer(sock: socket.socket) -> bytes:
    sock.settimeout(READ_TIMEOUT + 8)
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(4096):
            data += chunk
    return data


@pytest.mark.slow
def test_slow_or_short_requests_get_408_and_are_closed(server):
    _, _, url = server
    port = int(url.rsplit(":", 1)[1])
    # A body shorter than its Content-Length, 20 connections sending half their headers, one sending nothing.
    short = socket.create_connection(("127.0.0.1", port))
    short.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: 100\r\n\r\n{\"text\": ")
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    for sock in slow:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHo")
    silent = socket.create_connection(("127.0.0.1", port))
    start = time.monotonic()
    assert post(url + "/predict", {"text": "others are still answered"})["predictions"]
    for sock in [short, *slow, silent]:
        answer = read_answer(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"application/json" in answer and b"api.read_timeout_seconds" in answer, answer
    assert time.monotonic() - start < READ_TIMEOUT + 8


@pytest.mark.slow
def test_kill_9_after_an_idle_pause_loses_no_answered_row(server):
    root, proc, url = server  # last in this module: it kills the server
    before = log_rows(root)
    answered = sum(len(post(url + "/predict", {"texts": [f"film {i}", f"show {i}", "fine"]})["predictions"])
                   for i in range(10))
    assert answered == 30
    time.sleep(FLUSH_SECONDS + 1.5)  # idle: no request arrives to trigger a flush; the timer must
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert log_rows(root) == before + answered
