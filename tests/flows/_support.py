"""Helpers the flow tests share (plain functions; the fixtures are in conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DVC = str(Path(sys.executable).with_name("dvc"))
# Gates open and production replaceable: each flow test states the few values it needs on top.
RELAXED = {"evaluate": {"min_retention": 0.0}, "promote": {"tolerance": 0.0}}


def dvc(args: list[str], root: Path) -> str:
    """Run a dvc command in `root` (venv first on PATH); fail with its output."""
    from flows.workspace import stage_env

    proc = subprocess.run([DVC, *args], cwd=root, env=stage_env(), capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def ran(output: str) -> set[str]:
    """Stages `dvc repro` ran, from its output."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
