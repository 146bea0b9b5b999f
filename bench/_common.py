"""What the benchmarks share: a scratch project that borrows a finished run's data and teacher."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tasks.infra.splits import load_split
from tasks.infra.storage import Paths, write_parquet


@contextlib.contextmanager
def scratch_project(paths: Paths, train_rows: int | None = None, seed: int = 0) -> Iterator[Paths]:
    """A temporary project root with a copy of `paths`' processed data (train optionally
    subsampled to `train_rows`) and a link to its teacher; removed afterwards."""
    if not paths.teacher.is_dir() or not paths.split("test").is_file():
        raise SystemExit(f"{paths.root}: no finished pipeline run (models/teacher, data/processed); run `make run`")
    scratch = Path(tempfile.mkdtemp(prefix="kdistill-bench-"))
    try:
        shutil.copytree(paths.processed, scratch / "data" / "processed")
        train = load_split(paths, "train")
        if train_rows and train_rows < len(train):
            write_parquet(scratch / "data" / "processed" / "train.parquet", train.sample(train_rows, random_state=seed))
        (scratch / "models").mkdir()
        os.symlink(paths.teacher.resolve(), scratch / "models" / "teacher")
        yield Paths(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
