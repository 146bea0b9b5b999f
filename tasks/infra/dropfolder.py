"""The drop folder: files users drop into a folder (data/incoming/, its labelled/ subfolder), taken only
once complete, and moved aside to quarantine/ with a reason when bad.

Scoring (tasks.production.score) and the retraining cycle (tasks.lifecycle.retrain) both read a drop
folder; the rules for when a file is complete and how a bad one is set aside live here, once.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import time
from pathlib import Path

from tasks.infra.storage import hash_file, write_json

log = logging.getLogger("kd")

SUFFIXES = {".csv", ".tsv", ".txt", ".jsonl", ".json", ".parquet"}


def new_files(incoming: Path) -> list[Path]:
    """The files waiting in `incoming` (not in its subfolders), by name.

    Only data suffixes count: a file being written as `x.csv.part`, `x.tmp` or `.x.csv` is ignored.
    """
    if not incoming.is_dir():
        return []
    return sorted(p for p in incoming.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES
                  and not p.name.startswith("."))


def outside_link(path: Path, folder: Path) -> str | None:
    """Why `path` must not be read, when it is a symbolic link to a file outside `folder` (a drop folder is
    not a way to read /etc/passwd into the log or a quarantine reason); None otherwise. The reason names
    neither the target nor anything in it."""
    if not path.is_symlink():
        return None
    if path.resolve().is_relative_to(folder.resolve()):
        return None
    return f"{path.name}: a symbolic link to a file outside {folder}; drop the file itself (not read)"


def check_own_folder(key: str, folder: Path, log_dir: Path) -> None:
    """Refuse a drop folder that is the production log's folder or inside it (`score.incoming=data/production`:
    score would take its own scored.json and parts as new files).

    Raises:
        ConfigError: naming the key and both folders.
    """
    from tasks.infra.errors import ConfigError

    if folder.resolve().is_relative_to(log_dir.resolve()):
        raise ConfigError(f"{key}: {folder} is inside the production log ({log_dir}); expected a folder of its own, "
                          "e.g. data/incoming")


def _signature(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns): what changes while a file is written; None once it is gone."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


def settled(files: list[Path], seconds: float) -> tuple[dict[Path, tuple[int, int]], list[Path]]:
    """Split files into (complete, each with the signature it held still at; still being written).

    A file whose last change is older than `seconds` is complete. Younger ones are watched for
    `seconds` (once, for all of them): those whose size and mtime held still are complete too.
    A file gone meanwhile is in neither.
    """
    before = {p: sig for p in files if (sig := _signature(p)) is not None}
    now = time.time_ns()
    young = {p for p, sig in before.items() if seconds > 0 and now - sig[1] < seconds * 1e9}
    if young:
        time.sleep(seconds)
    after = {p: _signature(p) for p in young}
    complete = {p: sig for p, sig in before.items() if p not in young or after[p] == sig}
    return complete, [p for p in young if after[p] is not None and p not in complete]


def change_since(path: Path, signature: tuple[int, int]) -> str | None:
    """None while `path` still holds the (size, mtime) `signature` it settled at; else "pending" (written to
    since: not complete after all, left for the next run) or "gone" (renamed or deleted)."""
    now = _signature(path)
    return None if now == signature else "pending" if now else "gone"


def quarantine(path: Path, incoming: Path, reasons: list[str], report: dict | None = None) -> Path | None:
    """Move a bad file to incoming/quarantine/ with `<name>.reason.json` beside it; returns its new path,
    or None when the file was gone before it could be moved (renamed or deleted by its owner).

    A name already taken there (an earlier bad file of the same name) is never overwritten: this file
    then becomes `<stem>.<UTC time>-<sha256[:8]><suffix>`, with its own `.reason.json`.
    """
    folder = incoming / "quarantine"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        target = _free_name(folder, path)
    except FileNotFoundError:
        return None
    reason = folder / f"{target.name}.reason.json"
    write_json(reason, {
        "file": path.name, "quarantined_as": target.name,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "errors": reasons, "validation": report})
    try:
        shutil.move(str(path), target)
    except FileNotFoundError:
        reason.unlink(missing_ok=True)
        log.warning("[score] %s was gone before it could be quarantined", path.name)
        return None
    log.warning("[score] quarantined %s%s: %s", path.name, f" as {target.name}" if target.name != path.name else "",
                "; ".join(reasons))
    return target


def _free_name(folder: Path, path: Path) -> Path:
    """`folder/<name>` when neither it nor its reason file exists, else a name made unique by time and hash."""
    def taken(target: Path) -> bool:
        return target.exists() or target.with_name(f"{target.name}.reason.json").exists()

    target = folder / path.name
    if not taken(target):
        return target
    stamp = f"{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%S}-{hash_file(path)[:8]}"
    target, n = folder / f"{path.stem}.{stamp}{path.suffix}", 1
    while taken(target):  # the same bytes quarantined twice within a second
        n += 1
        target = folder / f"{path.stem}.{stamp}-{n}{path.suffix}"
    return target
