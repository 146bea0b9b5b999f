"""Where every stage reads and writes, and how it writes: atomically, so a crash never leaves
a half-written dataset, report or model behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("kd")


@dataclass(frozen=True)
class Paths:
    """The project's file layout below one root (the repo, or a `tmp_path` in tests)."""

    root: Path

    @property
    def processed(self) -> Path:
        return self.root / "data" / "processed"

    def split(self, name: str) -> Path:
        return self.processed / f"{name}.parquet"

    @property
    def summary(self) -> Path:
        return self.processed / "summary.json"

    @property
    def raw_validation(self) -> Path:
        """What ingest recorded of the raw-input suite, for the validate stage's reports."""
        return self.processed / "raw_validation.json"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def plots(self) -> Path:
        return self.reports / "plots"

    @property
    def teacher(self) -> Path:
        return self.root / "models" / "teacher"

    @property
    def distilled(self) -> Path:
        return self.root / "models" / "distilled"

    @property
    def student(self) -> Path:
        return self.root / "models" / "student"

    @property
    def cache(self) -> Path:
        return self.root / "models" / "cache"

    def checkpoints(self, stage: str) -> Path:
        return self.root / "models" / "checkpoints" / stage


# Fault injection for the crash tests (tests/lifecycle/test_crash.py): with KDISTILL_KILL_AT_RENAME=N this
# process SIGKILLs itself as it enters its Nth `rename` (as `strace -e inject=rename:signal=KILL:when=N`
# does, on machines without strace). Unset, `rename` is os.replace.
KILL_ENV = "KDISTILL_KILL_AT_RENAME"
_renames = 0


def rename(src: str | Path, dst: str | Path) -> None:
    """os.replace, counted for the crash tests' kill hook (`KILL_ENV`): every atomic write's one step."""
    global _renames
    _renames += 1
    if os.environ.get(KILL_ENV) == str(_renames):
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace(src, dst)


def _tmp_sibling(path: Path) -> Path:
    # Same directory, so the final rename is atomic on one filesystem.
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename.

    Works for files and folders. On an exception the temporary is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            # Two renames: a folder cannot replace a non-empty folder in one step. The old one
            # is moved aside first, so at every instant one complete version exists.
            old = _tmp_sibling(path)
            rename(path, old)
            rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if path.is_dir():
                shutil.rmtree(path)
            rename(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temporaries a killed `atomic_path(path)` left next to `path`; returns them.

    Only for a stage's own output, at its start: a second writer of the same path at the same
    time would lose its temporary.
    """
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.tmp-*")) if path.parent.is_dir() else []
    for tmp in stale:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    return stale


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON (indented, keys in insertion order) atomically."""
    write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy and torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def write_parquet(path: str | Path, frame: Any) -> None:
    """Write a pandas frame to Parquet atomically (no index)."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def hash_file(path: str | Path, h: Any = None) -> str:
    """sha256 of a file's bytes (streamed)."""
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_dir(path: str | Path, pattern: str = "*", exclude: tuple[str, ...] = ()) -> str:
    """sha256 over a folder's file names and contents, in sorted order: the project's one folder hash.

    Args:
        path: the folder.
        pattern: which files, searched recursively (e.g. "*.safetensors" for a model's weights).
        exclude: names of top-level entries to leave out (e.g. a stamp written into the folder).
    """
    h = hashlib.sha256()
    files = (p for p in Path(path).rglob(pattern) if p.is_file() and p.relative_to(path).parts[0] not in exclude)
    for file in sorted(files):
        h.update(str(file.relative_to(path)).encode())
        hash_file(file, h)
    return h.hexdigest()


def dir_size_mb(path: str | Path, pattern: str = "*.safetensors") -> float:
    """Size on disk in MB of the files matching `pattern` below `path`."""
    return sum(p.stat().st_size for p in Path(path).rglob(pattern)) / 1e6


def dvc_command() -> list[str]:
    """The venv's dvc, next to this interpreter (falls back to the one on PATH)."""
    local = Path(sys.executable).with_name("dvc")
    return [str(local)] if local.exists() else [shutil.which("dvc") or "dvc"]


@contextlib.contextmanager
def stage_log(stage: str) -> Iterator[dict]:
    """Log a stage's start and end with its duration; the yielded dict collects what it read/wrote."""
    info: dict = {"read": [], "wrote": []}
    start = time.perf_counter()
    log.info("[%s] start", stage)
    yield info
    took = time.perf_counter() - start
    for key in ("read", "wrote"):
        if info[key]:
            log.info("[%s] %s: %s", stage, key, ", ".join(str(p) for p in info[key]))
    log.info("[%s] done in %.1f s", stage, took)
