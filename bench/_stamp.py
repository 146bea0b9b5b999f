"""What every results file records about its own making: the command, the machine and the date.

The docs' results pages (docs/gen) print these with each table; a file without them says so there.
Standard library only, so that any bench (the GPU one included) can stamp its output.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu() -> str | None:
    torch = sys.modules.get("torch")  # only when the bench already imported it: stamping loads nothing
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return None


def command() -> str:
    """The command line that ran this process, paths inside the repository made relative to it."""
    words = [Path(sys.executable).name] + sys.argv
    out = []
    for word in words:
        path = Path(word)
        if path.is_absolute() and path.is_relative_to(ROOT):
            word = str(path.relative_to(ROOT))
        out.append(word)
    return shlex.join(out)


def stamp(report: dict) -> dict:
    """`report` with `command`, `date` (UTC, ISO 8601) and, unless it has one, `machine` set."""
    machine = {"cpu": _cpu(), "cores": os.cpu_count(), "gpu": _gpu(), "platform": platform.platform(),
               "python": platform.python_version()}
    report["command"] = command()
    report["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    report.setdefault("machine", machine)
    return report
