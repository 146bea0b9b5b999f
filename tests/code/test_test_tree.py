"""The test tree imports as a whole: test files from several folders collect in one pytest command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"


def test_every_test_folder_is_a_package():
    """Without an __init__.py, pytest imports a folder's conftest.py as the top-level module `conftest`,
    and a second such folder collides with the first."""
    folders = {p.parent for p in TESTS.rglob("test_*.py")} | {p.parent for p in TESTS.rglob("conftest.py")}
    missing = sorted(str(f.relative_to(REPO)) for f in folders if not (f / "__init__.py").is_file())
    assert not missing, f"no __init__.py in {', '.join(missing)}"


def test_files_from_every_folder_collect_in_one_command():
    # One file from each folder; tests/code and tests/flows each hold a conftest-importing module.
    files = [sorted(folder.glob("test_*.py"))[0] for folder in sorted({p.parent for p in TESTS.rglob("test_*.py")})]
    files += [TESTS / "code" / "test_loss.py", TESTS / "flows" / "test_training_flow.py"]
    args = sorted({str(f.relative_to(REPO)) for f in files})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]  # a collection error exits 2


def test_make_tests_workers_keep_a_file_and_tests_flows_each_on_one_worker():
    """`make test` runs `pytest -n --dist loadgroup`: a file's module fixtures, and tests/flows' session fixtures,
    are built on one worker only (pytest-xdist's own loadgroup scatters them under pytest 9)."""
    from tests.conftest import worker_group

    assert worker_group("tests/flows/test_serve.py::test_x") == worker_group("tests/flows/test_promote.py::t[1]")
    assert worker_group("tests/code/test_loss.py::test_x[2.0]") == "tests/code/test_loss.py"
    files = ["tests/code/test_loss.py", "tests/code/test_config.py"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p",
                           "no:cacheprovider", *files], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    workers = {f: {line.split("]")[0] for line in proc.stdout.splitlines() if line.startswith("[gw") and f in line}
               for f in files}
    assert all(len(w) == 1 for w in workers.values()), workers
