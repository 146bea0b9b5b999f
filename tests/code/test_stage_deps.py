"""What an edit re-runs, seen by DVC itself: each stage's deps are what it runs and no more (issue 26).

In a copy of the code with dvc.yaml's stages reduced to their code deps (and params), `dvc commit`
records the current hashes; after an edit, `dvc status` names the stages whose deps changed. An edit
to a validation rule concerns the two stages that run the rules, never distillation; an edit to the
training loop re-runs the training stages, never ingest or validate. docs/stage-deps.md, the table of
which stages each module re-runs, is checked against its generator.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DVC = Path(sys.executable).parent / "dvc"
CODE = ("tasks", "flows")


def dvc(root: Path, *args: str) -> str:
    proc = subprocess.run([str(DVC), *args], cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The code, params.yaml and a dvc.yaml of the real stages with only their code deps and params,
    committed (dvc.lock holds every dep's hash as it is now)."""
    root = tmp_path_factory.mktemp("stage-deps")
    shutil.copytree(REPO / "tasks", root / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "params.yaml", root)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    reduced = {name: {"cmd": stage["cmd"], "params": stage.get("params", []),
                      "deps": [d for d in stage["deps"] if d.split("/")[0] in CODE]} for name, stage in stages.items()}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": reduced}, sort_keys=False), encoding="utf-8")
    dvc(root, "init", "--no-scm", "-q")
    dvc(root, "commit", "-f", "-q")
    assert json.loads(dvc(root, "status", "--json")) == {}
    return root


def stages_rerun_after_editing(root: Path, module: str) -> set[str]:
    """The stages `dvc status` reports changed after a comment is appended to `module` (then undone)."""
    path = root / module
    text = path.read_text(encoding="utf-8")
    path.write_text(text + "\n# an edit\n", encoding="utf-8")
    try:
        return set(json.loads(dvc(root, "status", "--json")))
    finally:
        path.write_text(text, encoding="utf-8")


def test_editing_a_validation_rule_reruns_only_the_stages_that_run_the_rules(workspace):
    rerun = stages_rerun_after_editing(workspace, "tasks/quality/suites.py")
    assert rerun == {"ingest", "validate"}  # ingest runs the raw rules before it writes anything


def test_editing_the_training_loop_never_reruns_ingest_or_validate(workspace):
    rerun = stages_rerun_after_editing(workspace, "tasks/core/loop.py")
    assert rerun == {"teacher", "distill", "finetune", "evaluate", "promote"}


def test_the_stage_deps_page_is_its_generators_output():
    sys.path.insert(0, str(REPO / "docs"))
    try:
        from gen_stage_deps import stage_deps_table
    finally:
        sys.path.remove(str(REPO / "docs"))
    assert (REPO / "docs" / "stage-deps.md").read_text(encoding="utf-8") == stage_deps_table(), (
        "docs/stage-deps.md is stale: run `python docs/gen_stage_deps.py > docs/stage-deps.md`")
