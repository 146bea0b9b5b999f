"""Which pipeline stages re-run when a module changes: a markdown table generated from dvc.yaml's deps.

`dvc repro` re-runs a stage when one of its deps changed; dvc.yaml lists every module a stage imports
(tests/code/test_dvc_deps.py keeps that true), so the table below is what an edit costs. A folder in
deps (tasks/core) stands for each module in it.

    python docs/gen_stage_deps.py > docs/stage-deps.md     # or python -m docs.gen, with every generated page

tests/code/test_stage_deps.py (and `python -m docs.gen --check`) fail when docs/stage-deps.md is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CODE = ("tasks", "flows")  # the project's own code in deps; data and model deps are not code
HEADER = """# Which stages re-run when a module changes

Generated from dvc.yaml's deps by `python -m docs.gen` (docs/gen_stage_deps.py); do not edit by hand.
A mark means `dvc repro` re-runs that stage after an edit to that module (and then, through their data,
the stages after it). Modules no stage imports (the lifecycle cycle, production, the sweep, the CLI, the
flows) re-run nothing.
"""


def stage_modules(root: Path = ROOT) -> dict[str, set[str]]:
    """dvc.yaml stage -> the code files (relative, posix) its deps cover, folders expanded."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    out = {}
    for name, stage in stages.items():
        files = set()
        for dep in stage.get("deps", []):
            if dep.split("/")[0] not in CODE:
                continue
            path = root / dep
            found = sorted(path.rglob("*.py")) if path.is_dir() else [path]
            files.update(p.relative_to(root).as_posix() for p in found)
        out[name] = files
    return out


def package_of(module: str) -> str:
    """tasks/core/loop.py -> tasks/core; tasks/ingest.py -> tasks (the stage modules and leaves)."""
    return module.rsplit("/", 1)[0]


def stage_deps_table(root: Path = ROOT) -> str:
    """The markdown page: one row per module any stage runs, grouped by package, one column per stage."""
    stages = stage_modules(root)
    names = list(stages)
    modules = sorted(set().union(*stages.values()), key=lambda m: (package_of(m), m))
    lines = [HEADER, "| package | module | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for module in modules:
        marks = " | ".join("✓" if module in stages[s] else "" for s in names)
        lines.append(f"| `{package_of(module)}/` | `{module.rsplit('/', 1)[1]}` | {marks} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(stage_deps_table())
