"""A bounded load test of the scoring API on loopback: requests/s and p50/p99 latency.

Starts `kdistill api` as a child process on 127.0.0.1 (a free port), waits for GET /health,
sends a fixed number of POST /predict requests (one held-out text each) from `--concurrency`
concurrent clients, stops early at `--seconds`, then stops the server by its PID.

    python bench/api_load.py                                   # /tmp/full's student if present, else the repo
    python bench/api_load.py --model models/production --requests 1000 --concurrency 32

Prints the numbers and writes reports/bench/api_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stamp import stamp  # noqa: E402
DEFAULT = Path("/tmp/full/models/student")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workspace(model: Path) -> Path:
    """A throw-away workspace whose production model is `model` (linked; the API only reads it)."""
    root = Path(tempfile.mkdtemp(prefix="kd-api-load-"))
    (root / "models").mkdir()
    os.symlink(model.resolve(), root / "models" / "production")
    (root / "models" / "registry.json").write_text(json.dumps({"production": 1, "versions": [{"version": 1}]}))
    return root


async def load(url: str, texts: list[str], requests: int, concurrency: int, seconds: float) -> tuple[list, int, float]:
    """Send `requests` POSTs from `concurrency` workers (stopping at `seconds`); latencies (s), errors, wall time."""
    import httpx

    latencies, errors, counter = [], 0, iter(range(requests))
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            if time.perf_counter() > deadline:
                return
            start = time.perf_counter()
            response = await client.post(f"{url}/predict", json={"text": texts[i % len(texts)]})
            latencies.append(time.perf_counter() - start)
            errors += response.status_code != 200

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - start


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).json().get("model_loaded"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the API was not ready within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT if DEFAULT.is_dir() else ROOT / "models" / "production")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60, help="time cap of the load loop")
    parser.add_argument("-S", "--set", action="append", default=[], help="param override for the API")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench" / "api_load.json")
    args = parser.parse_args()

    from tasks.infra.embedded import read_embedded
    from tasks.infra.storage import write_json

    texts = read_embedded("movies")["text"].sample(500, random_state=0).tolist()
    root, port = workspace(args.model), free_port()
    url = f"http://127.0.0.1:{port}"
    sets = [a for s in [f"api.port={port}", "api.host=127.0.0.1", *args.set] for a in ("-S", s)]
    cmd = [sys.executable, "-m", "tasks.cli", "--params", str(ROOT / "params.yaml"), "--root", str(root), "-q", *sets,
           "api"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        wait_ready(url, proc)
        latencies, errors, wall = asyncio.run(load(url, texts, args.requests, args.concurrency, args.seconds))
    finally:
        proc.terminate()  # our own child, by its PID
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)
    ms = sorted(1000 * x for x in latencies)
    report = {"model": str(args.model), "requests": len(ms), "errors": errors, "concurrency": args.concurrency,
              "seconds": round(wall, 2), "requests_per_s": round(len(ms) / wall, 1),
              "p50_ms": round(statistics.median(ms), 1), "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1),
              "cpu_count": os.cpu_count()}
    write_json(args.out, stamp(report))
    print(f"{report['requests']} requests ({errors} errors) in {wall:.1f} s at concurrency {args.concurrency}: "
          f"{report['requests_per_s']} req/s, p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
