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


@pytest.mark.slow
def test_retrain_cycle_is_versioned_by_dvc_and_rollback_restores_from_the_cache(repo_copy):
    import json

    from tasks.infra.embedded import read_embedded
    from tasks.infra.storage import hash_dir

    sh([DVC, "repro"], repo_copy)
    sh(["git", "add", "-A"], repo_copy)
    sh(["git", "commit", "-qm", "pipeline"], repo_copy)
    incoming = repo_copy / "data" / "incoming" / "labelled"
    incoming.mkdir(parents=True)
    read_embedded("tweets").sample(80, random_state=1)[["text", "label"]].to_csv(incoming / "t.csv", index=False)
    kd = [sys.executable, "-m", "tasks.cli"]
    tiny = ["-S", "retrain.min_new_labelled=20", "-S", "retrain.teacher_epochs=1", "-S", "retrain.student_epochs=1",
            "-S", "retrain.min_gain=-1", "-S", "retrain.max_forgetting=1", "-S", "retrain.teacher_max_forgetting=1",
            "-S", "retrain.git_commit=true", "-S", "base.max_length=32"]
    out = sh([*kd, *tiny, "retrain"], repo_copy)
    assert '"status": "promoted"' in out, out
    # The cycle is a DVC version: snapshot and models added, production/registry/archive committed to
    # dvc.lock (so `dvc repro` does not undo it), everything pushed, one git commit and a tag.
    for rel in ("data/cycles/v2.dvc", "models/cycles/v2.dvc"):
        assert (repo_copy / rel).is_file(), rel
    assert "up to date" in sh([DVC, "status"], repo_copy).lower()
    assert ran(sh([DVC, "repro"], repo_copy)) == set()
    assert "in sync" in sh([DVC, "status", "--cloud"], repo_copy)  # pushed
    assert "model-v2" in sh(["git", "tag"], repo_copy)
    assert "retrain: version 2 promoted" in sh(["git", "log", "-1", "--format=%s"], repo_copy)
    registry = json.loads((repo_copy / "models" / "registry.json").read_text())
    assert registry["production"] == 2 and registry["versions"][-1]["trigger"] == "manual"
    v1 = registry["versions"][0]["archive_hash"]
    # Version 1's archive is gone from the workspace: rollback brings it back from the DVC cache.
    shutil.rmtree(repo_copy / "models" / "versions" / "v1")
    out = sh([*kd, *tiny, "rollback", "1"], repo_copy)
    assert '"previous": 2' in out
    assert hash_dir(repo_copy / "models" / "versions" / "v1") == v1
    assert json.loads((repo_copy / "models" / "registry.json").read_text())["production"] == 1
    assert json.loads((repo_copy / "models" / "production" / "production.json").read_text())["version"] == 1
    assert "up to date" in sh([DVC, "status"], repo_copy).lower()
