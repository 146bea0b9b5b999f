"""`make ui` / `make ui-stop`: the local Prefect server and UI on 127.0.0.1, in the background.

The server keeps its SQLite database, log and PID file in the project's own PREFECT_HOME
(.prefect/, git-ignored), with analytics off. `start` returns once the API answers; `stop` ends
the process by the PID it recorded, and nothing else.

Not `prefect server start --background` / `prefect server stop` (Prefect 3.9.1), which do keep a
PID file in PREFECT_HOME and honour --host 127.0.0.1: the background server's output goes to
pipes that close when the command exits, so there is no log file to read when it fails; `start`
returns before the API answers; the server stays in the caller's process group, so a terminal's
hang-up can end it; and `stop` sends one SIGTERM to whatever process now holds the recorded PID,
without checking that it is still the server or waiting for it to exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"  # loopback only; see the README before exposing it to workers elsewhere
PORT = 4200


def prefect_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """The environment of every Prefect process of this project."""
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def api_url(port: int) -> str:
    """The API address of the server on `port`."""
    return f"http://{HOST}:{port}/api"


def start_server(home: Path, port: int, log_file: Path) -> subprocess.Popen:
    """Start `prefect server start` on 127.0.0.1:`port` in its own session; output goes to `log_file`."""
    home.mkdir(parents=True, exist_ok=True)
    prefect = Path(sys.executable).with_name("prefect")
    with open(log_file, "ab") as log:
        return subprocess.Popen([str(prefect), "server", "start", "--host", HOST, "--port", str(port)],
                                env=prefect_env(home), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 90.0) -> None:
    """Return once `url`/health answers; fail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM one process (and its session, which it leads), then SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
                if finished:
                    return
            except ChildProcessError:
                pass
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.2)


def _is_our_server(pid: int) -> bool:
    # A stale PID file may name a process that has since been reused by something else.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"prefect" in part for part in cmdline) and b"server" in cmdline


def start(home: Path, port: int) -> int:
    """Start the server unless ours already runs; print where the UI is."""
    pid_file = home / "server.pid"
    if pid_file.is_file() and _is_our_server(int(pid_file.read_text())):
        print(f"Prefect server already running (PID {pid_file.read_text().strip()}): http://{HOST}:{port}")
        return 0
    proc = start_server(home, port, home / "server.log")
    pid_file.write_text(f"{proc.pid}\n")
    try:
        wait_healthy(api_url(port), proc)
    except (RuntimeError, TimeoutError) as err:
        stop_pid(proc.pid)
        pid_file.unlink(missing_ok=True)
        print(f"error: {err}; see {home / 'server.log'}", file=sys.stderr)
        return 1
    print(f"Prefect UI: http://{HOST}:{port}  (PID {proc.pid}, log {home / 'server.log'}; stop: make ui-stop)")
    return 0


def stop(home: Path) -> int:
    """Stop the server `start` recorded, by its PID."""
    pid_file = home / "server.pid"
    if not pid_file.is_file():
        print("no Prefect server recorded in " + str(pid_file))
        return 0
    pid = int(pid_file.read_text())
    if _is_our_server(pid):
        stop_pid(pid)
        print(f"stopped the Prefect server (PID {pid})")
    pid_file.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.ui start|stop [--port N]`."""
    parser = argparse.ArgumentParser(prog="python -m flows.ui", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("PREFECT_HOME", ".prefect")))
    args = parser.parse_args(argv)
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    return start(home, args.port) if args.action == "start" else stop(home)


if __name__ == "__main__":
    sys.exit(main())
