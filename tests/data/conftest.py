"""Fixtures the data tests share."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.infra.storage import Paths, write_json


@pytest.fixture
def ws(tmp_path: Path, tiny_teacher_dir: Path) -> Paths:
    """A workspace whose production model (version 1) is the tiny teacher, with empty drop folders."""
    shutil.copytree(tiny_teacher_dir, tmp_path / "models" / "production")
    entry = {"version": 1, "model_hash": "tiny"}
    write_json(tmp_path / "models" / "production" / "production.json", entry)
    write_json(tmp_path / "models" / "registry.json", {"production": 1, "versions": [entry]})
    (tmp_path / "data" / "incoming" / "labelled").mkdir(parents=True)
    return Paths(tmp_path)
