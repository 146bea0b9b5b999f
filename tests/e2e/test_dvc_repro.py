"""`dvc repro` in a throw-away copy of the repo: every stage runs, then nothing re-runs, then a
distillation parameter re-runs only distill and what follows. A tiny teacher keeps it fast."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).with_name("dvc"))


def sh(args: list[str], cwd: Path) -> str:
    """Run a command with the venv's python first on PATH; fail loudly with its output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def ran(output: str) -> set[str]:
    """Stages `dvc repro` ran, from its log."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.mark.slow
def test_dvc_repro_then_exp_run_reruns_only_what_changed(repo_copy):
    out = sh([DVC, "repro"], repo_copy)
    assert ran(out) == {"ingest", "validate", "teacher", "distill", "finetune", "evaluate", "promote"}
    assert (repo_copy / "dvc.lock").is_file()
    assert (repo_copy / "reports" / "metrics.json").is_file()
    assert (repo_copy / "models" / "production" / "model.safetensors").is_file()
    assert "up to date" in sh([DVC, "status"], repo_copy).lower()
    assert ran(sh([DVC, "repro"], repo_copy)) == set()

    # One distillation parameter changed: distill and what follows re-run, nothing before it.
    sh(["git", "add", "-A"], repo_copy)
    sh(["git", "commit", "-qm", "baseline"], repo_copy)
    out = sh([DVC, "exp", "run", "-S", "distill.temperature=4"], repo_copy)
    assert ran(out) == {"distill", "finetune", "evaluate", "promote"}
    assert yaml.safe_load((repo_copy / "params.yaml").read_text())["distill"]["temperature"] == 4
    # The teacher-logit cache is persisted across runs and was hit (same teacher, same data).
    assert '"cache": "hit"' in (repo_copy / "reports" / "distill.json").read_text()
    assert "distill.temperature" in sh([DVC, "exp", "show", "--no-pager", "--md"], repo_copy)
    metrics = sh([DVC, "metrics", "show"], repo_copy)
    assert "student.accuracy" in metrics and "retention" in metrics
    assert "confusion" in sh([DVC, "plots", "show", "--json"], repo_copy)

    # The default remote works out of the box: push, lose the cache, pull everything back.
    sh([DVC, "push"], repo_copy)
    assert any((repo_copy / ".dvc" / "storage").rglob("*"))
    student = (repo_copy / "models" / "student" / "model.safetensors").read_bytes()
    shutil.rmtree(repo_copy / ".dvc" / "cache")
    shutil.rmtree(repo_copy / "models" / "student")
    sh([DVC, "pull"], repo_copy)
    assert (repo_copy / "models" / "student" / "model.safetensors").read_bytes() == student
