"""What a results file records about its own making: the command, the machine and the date.

One home for the benches (bench/_stamp.py) and the compression sweep (reports/sweep/trials.json); the docs'
results pages print these fields under each table, and say so where a file has none. Standard library
only, so any process (the GPU bench included) can stamp its output without loading anything.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path


def cpu() -> str:
    """The CPU's model name (Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu() -> str | None:
    torch = sys.modules.get("torch")  # only when the process already imported it: stamping loads nothing
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return None


def machine() -> dict:
    return {"cpu": cpu(), "cores": os.cpu_count(), "gpu": gpu(), "platform": platform.platform(),
            "python": platform.python_version()}


def command(root: Path, program: str | None = None) -> str:
    """The command line that ran this process: the program by its name (`python`, or `program`, e.g.
    `kdistill`, in place of the script's path), paths inside `root` made relative to it."""
    words = [Path(sys.executable).name, *sys.argv] if program is None else [program, *sys.argv[1:]]
    out = []
    for word in words:
        path = Path(word)
        if path.is_absolute() and path.is_relative_to(root):
            word = str(path.relative_to(root))
        out.append(word)
    return shlex.join(out)


def stamp(report: dict, root: Path, program: str | None = None) -> dict:
    """`report` with `command`, `date` (UTC, ISO 8601) and, unless it has one, `machine` set."""
    report["command"] = command(root, program)
    report["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    report.setdefault("machine", machine())
    return report
