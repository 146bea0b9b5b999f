"""Refresh the docs' screenshots from a real run, with headless Chromium (Debian: `apt-get install chromium`).

    .venv/bin/python docs/screenshots.py [--root runs/quick] [--port 4217]

`--root` is a finished run of the pipeline (`make quick` writes runs/quick/). The script then, in that
run folder only:

1. drops a file of texts (test-split movie reviews with a share of tweets mixed in) into its
   data/incoming/ and labels it with `kdistill score`, so the production log has a window;
2. starts a Prefect server on 127.0.0.1:PORT (its PREFECT_HOME inside the run folder) and runs the
   real drift-monitor flow on the run folder (`python -m flows.monitor`), which writes an Evidently
   report under reports/drift/;
3. photographs the Prefect UI's page of that flow run, the Great Expectations Data Docs (the
   validation result of the processed train split, under reports/validation/) and the Evidently
   report into docs/img/, then stops the server.

Data Docs load Bootstrap and jQuery from public CDNs; on a machine without that access the script
renders a copy of the page whose CDN links point at Debian's packaged copies instead
(`apt-get install -y libjs-bootstrap4 libjs-jquery`), and unstyled where those are missing too.

The sweep's Pareto chart is not a screenshot: `kdistill sweep` draws it (reports/sweep/pareto.png),
and the results pages show that file. A mistake (no run folder, no Chromium) is one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "img"
BIN = Path(sys.executable).parent
TWEET_SHARE = 0.3  # a partial drift: the share of the window that comes from another domain
WINDOW = 200  # rows dropped: params.yaml's drift.window_rows as shipped


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    fail("no Chromium on PATH; install it with `apt-get install -y chromium` (Debian)")
    return ""


def shoot(url: str, path: Path, width: int = 1440, height: int = 1000, wait_ms: int = 8000) -> None:
    """One PNG of `url` as headless Chromium renders it after `wait_ms` of virtual time (scripts included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--window-size={width},{height}", f"--virtual-time-budget={wait_ms}", f"--screenshot={path}", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0 or not path.is_file():
        fail(f"chromium could not photograph {url}: {proc.stderr.strip().splitlines()[-1:]}")
    print(f"wrote {path.relative_to(REPO)}")


# CDN assets of Great Expectations' Data Docs -> Debian's packaged copies (libjs-bootstrap4, libjs-jquery).
OFFLINE_ASSETS = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css":
        "/usr/share/javascript/bootstrap4/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js":
        "/usr/share/javascript/bootstrap4/js/bootstrap.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "/usr/share/javascript/jquery/jquery.min.js",
}


def data_docs(root: Path) -> None:
    """The Data Docs page of the processed train split's validation, its CDN assets served from disk."""
    pages = sorted((root / "reports" / "validation" / "validations" / "processed" / "train").rglob("*.html"),
                   key=lambda p: p.stat().st_mtime)
    if not pages:
        fail(f"{root}: no Data Docs page of the processed train split under reports/validation/validations/")
    html = pages[-1].read_text(encoding="utf-8")
    for url, local in OFFLINE_ASSETS.items():
        if Path(local).is_file():
            html = html.replace(url, Path(local).as_uri())
    copy = pages[-1].with_name(".screenshot.html")  # beside the original: its relative links still resolve
    copy.write_text(html, encoding="utf-8")
    try:
        shoot(copy.as_uri(), OUT / "data-docs.png", height=1100)
    finally:
        copy.unlink()


def kdistill(root: Path, *args: str) -> None:
    subprocess.run([str(BIN / "kdistill"), "--root", str(root), *args], check=True, cwd=REPO)


def production_log(root: Path) -> None:
    """A window of real traffic in the run's prediction log: test-split reviews plus tweets, via `kdistill score`."""
    import pandas as pd

    from tasks.infra.embedded import read_embedded

    tweets = int(WINDOW * TWEET_SHARE)
    movies = pd.read_parquet(root / "data" / "processed" / "test.parquet")["text"].sample(WINDOW - tweets, random_state=0)
    other = read_embedded("tweets")["text"].sample(tweets, random_state=0)
    incoming = root / "data" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    part = incoming / "screenshots.csv.part"
    pd.DataFrame({"text": pd.concat([movies, other]).sample(frac=1, random_state=0)}).to_csv(part, index=False)
    part.rename(incoming / f"screenshots-{int(time.time())}.csv")  # the drop folder's safe way in
    kdistill(root, "-S", "score.settle_seconds=0", "score")


def workspace(root: Path) -> None:
    """Make the run folder a workspace the flows accept: dvc.yaml and params.yaml, no retrain on drift
    (no retrain deployment is served here)."""
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params = (REPO / "params.yaml").read_text(encoding="utf-8")
    (root / "params.yaml").write_text(params.replace("on_drift: true", "on_drift: false"), encoding="utf-8")


def api(port: int, path: str, body: dict | None = None) -> object:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api{path}", method="POST" if body is not None else "GET",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/quick", help="a finished pipeline run (default: runs/quick)")
    parser.add_argument("--port", type=int, default=4217, help="port of the temporary Prefect server (127.0.0.1)")
    args = parser.parse_args(argv)
    root = (REPO / args.root).resolve()
    if not (root / "models" / "production").is_dir() or not (root / "reports" / "validation" / "index.html").is_file():
        fail(f"{args.root}: not a finished run (no models/production or reports/validation/index.html); run `make quick`")
    chromium()
    data_docs(root)
    production_log(root)
    workspace(root)
    env = {**os.environ, "PREFECT_HOME": str(root / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{args.port}/api", "KDISTILL_ROOT": str(root),
           # the UI asks the API at this address (else it asks the default port, 4200)
           "PREFECT_UI_API_URL": f"http://127.0.0.1:{args.port}/api"}
    subprocess.run([str(BIN / "python"), "-m", "flows.ui", "start", "--port", str(args.port)], check=True, cwd=REPO,
                   env=env)
    try:
        started = time.time()
        subprocess.run([str(BIN / "python"), "-m", "flows.monitor"], cwd=REPO, env=env)  # exit 4 = drift: fine
        runs = api(args.port, "/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})
        if not runs:
            fail("the drift-monitor flow left no flow run on the server")
        shoot(f"http://127.0.0.1:{args.port}/runs/flow-run/{runs[0]['id']}", OUT / "prefect-drift-monitor-run.png",
              wait_ms=15000)
        reports = sorted((root / "reports" / "drift").glob("*/report.html"), key=lambda p: p.stat().st_mtime)
        if not reports or reports[-1].stat().st_mtime < started:
            fail("the drift-monitor run wrote no new reports/drift/*/report.html")
        shoot(reports[-1].as_uri(), OUT / "evidently-drift-report.png", height=1100, wait_ms=15000)
    finally:
        subprocess.run([str(BIN / "python"), "-m", "flows.ui", "stop"], cwd=REPO, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
