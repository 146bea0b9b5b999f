"""The layers are declared in pyproject.toml ([tool.importlinter]) and checked by import-linter's
`lint-imports`: this test runs it, so `make test` fails on a broken contract.

Three checks: the contracts hold on the code as it is; every module of tasks/ has a floor in the layers
contract (a new module must be placed, not forgotten); and the check can fail: a copy of the code with
imports that break the layers, the lifecycle/production independence, the core's and infrastructure's
forbidden lists, bench's outside place and the no-cycle rule is refused, each contract by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"


def contracts() -> list[dict]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]


def lint(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the code below `root`, with its pyproject.toml (no cache: the copy is new)."""
    env = {**os.environ, "PYTHONPATH": str(root)}  # this checkout's code, not an installed copy
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_import_contracts_hold():
    proc = lint(REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert f"{len(contracts())} kept, 0 broken" in proc.stdout


def test_at_least_five_contracts_cover_tasks_flows_and_bench():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert {"tasks", "flows", "bench"} <= set(config["root_packages"])
    kinds = {c["type"] for c in contracts()}
    assert len(contracts()) >= 5 and {"layers", "independence", "forbidden", "acyclic_siblings"} <= kinds


def test_every_module_of_tasks_has_a_floor_in_the_layers():
    """Each module and package directly below tasks/ (and below tasks/lifecycle, which spans two floors)
    is named in the layers contract, so a new module cannot slip past every rule."""
    layers = next(c for c in contracts() if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.replace(":", "|").split("|")}

    def children(package: Path, dotted: str) -> set[str]:
        return {f"{dotted}.{p.stem}" for p in package.iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and any(p.glob("*.py")))}

    modules = children(REPO / "tasks", "tasks") - {"tasks.lifecycle"}
    modules |= children(REPO / "tasks" / "lifecycle", "tasks.lifecycle")
    assert sorted(modules - named) == []


BREAKS = {
    # file -> (a line that breaks a contract, the contract's id)
    "tasks/ingest.py": ("import tasks.validate", "layers"),  # a stage imports another stage
    "tasks/production/drift.py": ("import tasks.lifecycle.versions", "lifecycle-production"),
    "tasks/core/loss.py": ("import pandas", "core"),
    "tasks/infra/stats.py": ("import torch", "infra"),
    "flows/ui.py": ("import bench.serving", "bench-outside"),
    "tasks/infra/errors.py": ("import tasks.infra.tables", "acyclic"),  # tables imports errors: a cycle
}


def test_a_broken_contract_fails_the_check(tmp_path):
    for folder in ("tasks", "flows", "bench"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    for rel, (line, _) in BREAKS.items():
        path = tmp_path / rel
        path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")
    proc = lint(tmp_path)
    assert proc.returncode != 0
    names = {c["id"]: " ".join(c["name"].split()) for c in contracts()}
    report = " ".join(proc.stdout.split("Broken contracts", 1)[-1].split())  # the report wraps long names
    broken = {cid for cid, name in names.items() if name in report}
    assert broken == {cid for _, cid in BREAKS.values()}, proc.stdout[-4000:]
