"""Every import of our own code resolves, the lazy ones inside functions included.

import-linter checks which layer may import which, but a bench or a flow that imports inside a function
(to start fast, or to load torch only when needed) fails only when that function runs: a module moved
by a refactor left bench/base_teacher.py importing tasks.infra.common, and the bench stopped an hour
into its first task. This reads every `from tasks|flows|docs... import name` and `import tasks...` in
bench/, flows/, tasks/ and docs/, and checks that the module imports and has each name.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OURS = ("tasks", "flows", "docs")


def unresolved(files: list[Path]) -> list[str]:
    """`file:line: what is missing` for each import of our packages that does not resolve."""
    bad = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                wanted = [(a.name, None) for a in node.names if a.name.split(".")[0] in OURS]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in OURS:
                wanted = [(node.module, a.name) for a in node.names if a.name != "*"]
            else:
                continue
            for module_name, name in wanted:
                where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{node.lineno}"
                try:
                    module = importlib.import_module(module_name)
                except ImportError as err:
                    bad.append(f"{where}: {module_name}: {err}")
                    continue
                if name and not hasattr(module, name):
                    try:
                        importlib.import_module(f"{module_name}.{name}")
                    except ImportError:
                        bad.append(f"{where}: {module_name} has no {name}")
    return bad


def our_files() -> list[Path]:
    return sorted(p for folder in ("bench", "flows", "tasks", "docs") for p in (REPO / folder).rglob("*.py"))


def test_every_import_of_our_code_resolves_lazy_ones_included():
    # in a process of its own: importing every flow and stage must not leave state in this one
    proc = subprocess.run([sys.executable, __file__], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["files"] > 80 and report["unresolved"] == []


def test_a_lazy_import_of_a_moved_module_or_name_is_caught(tmp_path):
    script = tmp_path / "bench_like.py"
    script.write_text("def main():\n"
                      "    from tasks.infra.common import load_split\n"
                      "    from tasks.infra.splits import load_split, no_such_name\n"
                      "    import tasks.no_such_module\n")
    bad = unresolved([script])
    assert [line.split(": ", 1)[0].rsplit(":", 1)[1] for line in bad] == ["2", "3", "4"]
    assert "tasks.infra.splits has no no_such_name" in bad[1]


if __name__ == "__main__":
    sys.path[:0] = [str(REPO), str(REPO / "bench")]
    files = our_files()
    print(json.dumps({"files": len(files), "unresolved": unresolved(files)}))
