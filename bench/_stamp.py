"""What every results file records about its own making: the command, the machine and the date.

The docs' results pages (docs/gen) print these with each table; a file without them says so there.
The fields are made by tasks/infra/provenance.py (standard library only, also the sweep's home for
them); this names the repository as the root the command's paths are relative to.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tasks.infra import provenance  # noqa: E402


def command() -> str:
    """The command line that ran this process, paths inside the repository made relative to it."""
    return provenance.command(ROOT)


def stamp(report: dict) -> dict:
    """`report` with `command`, `date` (UTC, ISO 8601) and, unless it has one, `machine` set."""
    return provenance.stamp(report, ROOT)


def save(out: Path, results: dict) -> None:
    """Write `results`, stamped, to `out` atomically: an interrupted bench keeps every finished run."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(stamp(results), indent=1) + "\n")
    tmp.replace(out)
