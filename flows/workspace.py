"""The DVC workspace a Prefect run works in: its params file, and each stage run through DVC.

Why every Prefect task runs its stage with `dvc repro --single-item STAGE` rather than calling the
stage function in-process: DVC then decides, from dvc.lock, whether the stage is unchanged
(skipped, and said so in the task log), runs the very `cmd` that `dvc repro` runs, caches the
outputs and updates dvc.lock. A Prefect run and `dvc repro` therefore leave the same workspace,
and each sees the other's work as up to date. The stage functions stay in `tasks/`; nothing here
knows how a stage works.

Parameters from the Prefect UI are written into params.yaml before the stages run, as
`dvc exp run -S key=value` does in the workspace: the overrides are validated first (a typo fails
the run before anything changes), only changed keys are written, comments and layout are kept,
and every change is logged. That is what keeps `dvc repro` after a Prefect run at "nothing to
do": the run's parameters are the workspace's parameters. Undo one with git, like any edit.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.infra.errors import UserError
from tasks.infra.storage import Paths, dvc_command

ROOT_ENV = "KDISTILL_ROOT"  # the workspace a flow works in; default: the current directory
Log = Callable[[int, str], None]  # (logging level, message)

# DVC's own lines, and the stage CLI's `HH:MM:SS LEVEL message` log lines.
_RUNNING = re.compile(r"^Running stage '([^']+)'")
_UNCHANGED = re.compile(r"^(?:Stage )?'([^']+)' didn't change, skipping")
_RUN_CACHE = re.compile(r"^Stage '([^']+)' is cached - skipping run")
_EXIT = re.compile(r"exited with (-?\d+)")
_CLI_LOG = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$")
_NOISE = ("To track the changes with git", "To enable auto staging", "git add ", "dvc config core.autostage",
          "Use `dvc push`")
# Failures a second try can fix: DVC's repository lock held by another dvc command, and network
# I/O (a hub download of a dataset or model). A crash for any other reason would only repeat.
_TRANSIENT = re.compile(r"Unable to acquire lock|ConnectionError|ConnectTimeout|ReadTimeout|TimeoutError|"
                        r"Temporary failure in name resolution|Connection reset|HTTPError: 5\d\d|"
                        r"Server Error|RemoteDisconnected|IncompleteRead")
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
PROGRESS_EVERY_S = 15.0  # a training progress bar reaches the log at most this often


class StageFailed(Exception):
    """A stage's DVC run failed; the message is the stage's own one-line error when it printed one."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient  # worth a retry (I/O), unlike a user error or a failed gate


class GateFailed(StageFailed):
    """A quality gate stopped the pipeline (the stage exited with GateError's code)."""


@dataclass(frozen=True)
class Workspace:
    """A kdistill checkout: dvc.yaml, params.yaml, and the data/models/reports below it."""

    root: Path

    @classmethod
    def current(cls) -> Workspace:
        """The workspace in $KDISTILL_ROOT, else the current directory."""
        root = Path(os.environ.get(ROOT_ENV) or Path.cwd()).resolve()
        if not (root / "dvc.yaml").is_file() or not (root / "params.yaml").is_file():
            raise UserError(f"{root}: not a kdistill workspace (no dvc.yaml/params.yaml); "
                            f"start the flow from the project folder or set {ROOT_ENV}")
        return cls(root)

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def paths(self) -> Paths:
        return Paths(self.root)

    @property
    def slot_name(self) -> str:
        """The Prefect concurrency limit that lets one run at a time write this workspace.

        Named after the machine and the folder: two checkouts (on one machine or two) run in parallel.
        """
        where = f"{socket.gethostname()}:{self.root}"
        return f"kdistill-workspace-{hashlib.sha256(where.encode()).hexdigest()[:12]}"


@dataclass
class StageRun:
    """What `dvc repro --single-item STAGE` did."""

    stage: str
    status: str = "unknown"  # ran | skipped (unchanged) | restored (from DVC's run cache) | failed
    returncode: int | None = None
    stage_exit: int | None = None  # the stage command's own exit code, when DVC reported one
    error: str | None = None  # the stage CLI's `error: ...` line
    seconds: float = 0.0
    tail: list[str] = field(default_factory=list)  # the last lines, for a failure without an error line
    traceback: bool = False  # inside a Python traceback of the stage (a crash, not a user error)

    def failure(self) -> StageFailed:
        """The exception that stands for this failed run."""
        from tasks.infra.errors import GateError

        if self.stage_exit == GateError.exit_code:
            return GateFailed(self.error or f"{self.stage}: a gate failed")
        if self.error:
            # A user error (bad param, bad input) would fail the same way again: no retry.
            return StageFailed(self.error, transient=False)
        detail = self.tail[-1] if self.tail else "no output"
        return StageFailed(f"{self.stage}: dvc repro failed ({detail})",
                           transient=any(_TRANSIENT.search(line) for line in self.tail))


def stage_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a stage run: this venv first on PATH, since DVC runs `python -m tasks.cli`."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **(extra or {})}


def _lines(stream) -> Any:
    """(text, is_progress) for each line of a byte stream; `\\r`-ended pieces are progress bars."""
    buffer, read = b"", (stream.read1 if hasattr(stream, "read1") else stream.read)
    while chunk := read(65536):
        buffer += chunk
        # A lone \r at the end may be the first half of \r\n: wait for the next chunk to tell.
        while (cut := re.search(rb"\r\n|\r(?=.)|\n", buffer, re.DOTALL)) is not None:
            piece, sep, buffer = buffer[:cut.start()], cut.group(), buffer[cut.end():]
            yield piece.decode(errors="replace"), sep == b"\r"
    if buffer.rstrip(b"\r\n"):
        yield buffer.rstrip(b"\r\n").decode(errors="replace"), False


def classify(run: StageRun, line: str, log: Log) -> None:
    """Update `run` from one output line and pass the line on to `log` at a fitting level."""
    text = line.rstrip()
    if not text.strip() or text.lstrip().startswith(_NOISE):
        return
    level = 20
    if (m := _CLI_LOG.match(text)) is not None:
        level, text = _LEVELS[m.group(1)], m.group(2)
    elif text.startswith("error: "):
        run.error, level = text[len("error: "):], 40
    elif (m := _RUNNING.match(text)) is not None:
        run.status = "ran"
    elif _UNCHANGED.match(text):
        run.status = "skipped"
    elif _RUN_CACHE.match(text):
        run.status = "restored"
    elif text.startswith("ERROR"):
        level = 40
        if (m := _EXIT.search(text)) is not None:
            run.stage_exit = int(m.group(1))
    elif text.startswith("Traceback (most recent call last)") or run.traceback:
        run.traceback, level = True, 40
    run.tail = (run.tail + [text])[-20:]
    log(level, text)


def run_dvc_stage(root: Path, stage: str, log: Log, env: dict[str, str] | None = None) -> StageRun:
    """Run one stage through DVC, streaming its output to `log` as it comes.

    Args:
        root: the workspace (DVC repo root).
        stage: a dvc.yaml stage name.
        log: receives (level, line) for every line of DVC's and the stage's output.
        env: extra environment variables for the stage.

    Returns:
        The run's outcome; check `status == "failed"`, then `failure()`.
    """
    run, start, last_progress = StageRun(stage), time.monotonic(), 0.0
    proc = subprocess.Popen([*dvc_command(), "repro", "--single-item", stage], cwd=root, env=stage_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        for line, progress in _lines(proc.stdout):
            if progress:
                now = time.monotonic()
                if line.strip() and now - last_progress >= PROGRESS_EVERY_S:
                    last_progress = now
                    log(20, line.strip())
                continue
            classify(run, line, log)
        run.returncode = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted (e.g. the flow run was cancelled): stop DVC too
            proc.terminate()
            proc.wait()
    run.seconds = time.monotonic() - start
    if run.returncode != 0:
        run.status = "failed"
    elif run.status == "unknown":
        run.status = "ran"
    return run


def describe(run: StageRun) -> str:
    """One line for the task log: what happened to the stage and how long it took."""
    what = {"ran": "ran", "skipped": "skipped: unchanged since the last run (dvc.lock)",
            "restored": "skipped: outputs restored from DVC's run cache", "failed": "failed"}[run.status]
    return f"[{run.stage}] {what} ({run.seconds:.1f} s)"

