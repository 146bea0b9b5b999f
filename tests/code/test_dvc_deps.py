"""dvc.yaml sees every module a stage runs: each stage's code deps are derived from the import graph.

`dvc repro` re-runs a stage only when one of its deps changed, so a module the stage imports but
dvc.yaml omits leaves a stale model behind after a code change. The import graph is read statically
(ast), transitively, over the project's own packages; every import counts, also one inside a function
(the stages import lazily). A listed folder (tasks/core) covers every module below it.

Where the graph starts: the stage's own module, the one `python -m tasks.cli STAGE` calls
(tasks.cli.STAGES), plus tasks.infra.config. Not tasks/cli.py itself: the CLI is a thin shell that parses
arguments, builds the Config, checks that input files exist (it can stop a run, never change what a
stage writes) and calls the stage function; and it imports every other command's module (retrain,
the API, ...), so listing it would make every stage depend on every module and a help-text edit
re-run the whole pipeline. A re-wiring of STAGES is still caught, because the roots are read from it.
tasks.infra.config is a root because the CLI builds the Config every stage receives: its defaults and
checks feed every stage even if a stage module stopped importing it.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tasks", "flows")  # the project's own code; everything else is a library
EXTRA_ROOTS = ("tasks.infra.config",)


def module_path(root: Path, name: str) -> Path | None:
    """The file (or, for a namespace package, folder) of project module `name` below `root`, or None."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py", base):
        if candidate.exists():
            return candidate
    return None


def imported_names(root: Path, file: Path) -> set[str]:
    """Every module name `file` imports, anywhere in it (`from a import b` yields a and a.b)."""
    package = ".".join(file.relative_to(root).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parent = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            base = ".".join([*parent, node.module] if node.module else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def runs_code(file: Path) -> bool:
    """False for a package __init__.py that is only a docstring: importing it runs nothing."""
    body = ast.parse(file.read_text()).body
    return any(not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)) for s in body)


def code_closure(root: Path, start: list[str]) -> set[Path]:
    """The project files that importing the modules `start` runs, transitively (package __init__s included)."""
    seen: set[str] = set()
    todo = list(start)
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            init = root.joinpath(*parts[:depth], "__init__.py")
            if depth < len(parts) and init.is_file() and runs_code(init):
                files.add(init)
        path = module_path(root, name)
        if path is None or path.is_dir():
            continue
        if path.name != "__init__.py" or runs_code(path):
            files.add(path)
        todo.extend(n for n in imported_names(root, path) if module_path(root, n) is not None)
    return files


def uncovered(root: Path, files: set[Path], deps: list[str]) -> list[str]:
    """The files no dep covers (a dep covers itself and, for a folder, everything below it)."""
    listed = [root / d for d in deps]
    return sorted(str(f.relative_to(root)) for f in files
                  if not any(f == d or d in f.parents for d in listed))


def stage_roots() -> dict[str, list[str]]:
    """dvc.yaml stage -> the modules its command runs (see the module docstring)."""
    from tasks.cli import STAGES

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    roots = {}
    for name, stage in stages.items():
        cmd = stage["cmd"].split()
        assert cmd[:3] == ["python", "-m", "tasks.cli"] and cmd[3] in STAGES, (
            f"dvc.yaml stage {name}: `{stage['cmd']}` is not `python -m tasks.cli STAGE`; teach this test its entry")
        roots[name] = [STAGES[cmd[3]][0], *EXTRA_ROOTS]
    return roots


@pytest.mark.parametrize("stage", sorted(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]))
def test_each_stage_lists_every_module_it_runs(stage):
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage].get("deps", [])
    roots = stage_roots()[stage]
    missing = uncovered(ROOT, code_closure(ROOT, roots), deps)
    assert not missing, f"dvc.yaml stage {stage}: deps lack {', '.join(missing)} (imported from {roots[0]})"


@pytest.mark.parametrize("stage", sorted(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]))
def test_each_stage_lists_no_code_it_does_not_run(stage):
    """A module listed but never run only costs re-runs, but a stale list hides which code matters."""
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage].get("deps", [])
    runs = code_closure(ROOT, stage_roots()[stage])
    code = [d for d in deps if d.split("/")[0] in PACKAGES]
    unused = [d for d in code if not any(f == ROOT / d or ROOT / d in f.parents for f in runs)]
    assert not unused, f"dvc.yaml stage {stage}: deps list {', '.join(unused)}, which the stage never imports"


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))


def test_the_closure_follows_lazy_relative_and_package_imports(tmp_path):
    write_tree(tmp_path, {
        "tasks/__init__.py": '"""only a docstring"""\n',
        "tasks/stage.py": "from tasks import helper\n\ndef run():\n    from tasks.core.loop import train\n",
        "tasks/helper.py": "import numpy\nfrom .stats import paired\n",
        "tasks/stats.py": "X = 1\n",
        "tasks/core/loop.py": "from tasks.core import loss\n",
        "tasks/core/loss.py": "",
        "tasks/unused.py": "",
        "flows/__init__.py": "import os\n",
    })
    files = {str(p.relative_to(tmp_path)) for p in code_closure(tmp_path, ["tasks.stage"])}
    assert files == {"tasks/stage.py", "tasks/helper.py", "tasks/stats.py", "tasks/core/loop.py", "tasks/core/loss.py"}
    closure = code_closure(tmp_path, ["tasks.stage"])
    # a module the lead adds later (tasks/stats.py) and forgets in dvc.yaml is named; a folder covers its modules
    assert uncovered(tmp_path, closure, ["tasks/stage.py", "tasks/helper.py", "tasks/core"]) == ["tasks/stats.py"]
    # a package __init__ that runs code is part of what an import runs
    write_tree(tmp_path, {"tasks/__init__.py": "import logging\n"})
    assert tmp_path / "tasks/__init__.py" in code_closure(tmp_path, ["tasks.stage"])
