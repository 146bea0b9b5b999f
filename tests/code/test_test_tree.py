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
