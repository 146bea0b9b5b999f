"""Model versions: the archive of every promoted model, rollback, the retraining lock, and how a
cycle is recorded in DVC.

- Every promoted model is archived at `models/versions/v<N>/` (a copy of the student folder;
  its sha256 over files is the registry entry's `model_hash`). The folder is an output of the
  promote stage, so DVC caches it and `dvc push` backs it up; `dvc pull` brings it back.
- `rollback(N)` installs `models/versions/v<N>/` as `models/production/` in one atomic swap and
  points the registry at it. The API reloads when the registry changes: no restart.
- After a retraining cycle or a rollback changes production outside `dvc repro`, `record`
  runs `dvc commit -f promote` (dvc.lock and the cache then hold the new production, registry
  and archive, so a later `dvc repro` does not undo it), `dvc add`s the cycle's data snapshot and
  models, pushes to the default remote, and optionally makes a git commit (and `model-v<N>` tag).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tasks.errors import DataError, UserError
from tasks.promote import SOURCE_ENV, STAMP, production_dir, read_registry, registry_path
from tasks.storage import Paths, atomic_path, dvc_command, hash_dir, read_json, write_json

log = logging.getLogger("kd")


def versions_dir(paths: Paths) -> Path:
    """models/versions/: one folder per promoted version."""
    return paths.root / "models" / "versions"


def archive_dir(paths: Paths, version: int) -> Path:
    return versions_dir(paths) / f"v{version}"


def archive(paths: Paths, model_dir: Path, version: int) -> dict:
    """Copy a model folder to models/versions/v<version>/ (atomically), without its exported ONNX
    files (re-made on demand, and ignored by DVC).

    Returns:
        The registry fields {"archive": relative folder, "archive_hash": sha256 over its files}.
    """
    target = archive_dir(paths, version)
    with atomic_path(target) as tmp:
        shutil.copytree(model_dir, tmp, ignore=shutil.ignore_patterns(STAMP, "onnx"))
    return {"archive": str(target.relative_to(paths.root)), "archive_hash": hash_dir(target)}


def install(paths: Paths, model_dir: Path, entry: dict) -> None:
    """Make `model_dir` the production model in one atomic swap, stamped with its registry entry."""
    with atomic_path(production_dir(paths)) as tmp:
        shutil.copytree(model_dir, tmp, ignore=shutil.ignore_patterns(STAMP))
        (tmp / STAMP).write_text(json.dumps(entry, indent=2) + "\n")


def ensure_archived(paths: Paths, registry: dict) -> dict:
    """Archive the production model of a registry written before models/versions/ existed, so it
    can be rolled back to; returns the (updated, saved) registry."""
    current = registry.get("production")
    entry = next((v for v in registry["versions"] if v["version"] == current), None)
    if entry is None or entry.get("archive_hash") or not (production_dir(paths) / "config.json").is_file():
        return registry
    entry.update(archive(paths, production_dir(paths), current))
    write_json(registry_path(paths), registry)
    log.info("[versions] archived production (version %s) as %s", current, entry["archive"])
    return registry


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def find_version(registry: dict, version: int) -> dict:
    entry = next((v for v in registry["versions"] if v["version"] == version), None)
    if entry is None:
        known = ", ".join(str(v["version"]) for v in registry["versions"]) or "none"
        raise UserError(f"models/registry.json: no version {version} (versions: {known})")
    return entry


def lineage(registry: dict, version: int | None) -> list[dict]:
    """The promoted entries production's model descends from, oldest first (`parent` links)."""
    chain, seen = [], set()
    while version is not None and version not in seen:
        seen.add(version)
        entry = next((v for v in registry["versions"] if v["version"] == version), None)
        if entry is None:
            break
        chain.append(entry)
        version = entry.get("parent")
    return chain[::-1]


@contextlib.contextmanager
def exclusive(paths: Paths, what: str) -> Iterator[None]:
    """Hold models/.retrain.lock: one retraining or rollback at a time in a workspace.

    Raises:
        UserError: another process holds it (the message names its pid, start time and job).
    """
    path = paths.root / "models" / ".retrain.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise UserError(f"{path}: another retraining or rollback is running ({holder}); "
                            f"this {what} is skipped") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, since {now()}, {what}")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: list[str], root: Path) -> tuple[bool, str]:
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def record(paths: Paths, message: str, snapshots: list[Path], push: bool, git_commit: bool,
           tag: str | None = None) -> dict:
    """Record a change of production (and a cycle's snapshot folders) in DVC, and optionally git.

    Never raises: production has already changed when this runs; a failed step is logged and
    returned, with the command that would finish it by hand.
    """
    root = paths.root
    out: dict = {"dvc": False, "pushed": False, "git": None}
    if not (root / ".dvc").is_dir():
        log.warning("[versions] %s is not a DVC repository: nothing recorded in DVC", root)
        return out
    (dvc,) = dvc_command()
    rel = [str(p.relative_to(root)) for p in snapshots if p.exists()]
    steps = [[dvc, "commit", "-f", "promote"]] if (root / "dvc.lock").is_file() else []
    steps += [[dvc, "add", "-q", *rel]] if rel else []
    ok_all = True
    for cmd in steps:
        ok, text = _run(cmd, root)
        if not ok:
            ok_all = False
            log.warning("[versions] `%s` failed: %s", " ".join(cmd[1:]), text.splitlines()[-1] if text else "")
    out["dvc"] = ok_all
    if push and ok_all:
        ok, text = _run([dvc, "remote", "default"], root)
        if ok and text:
            ok, text = _run([dvc, "push", "-q"], root)
            out["pushed"] = ok
            if not ok:
                log.warning("[versions] `dvc push` failed (run it by hand): %s", text.splitlines()[-1] if text else "")
    if git_commit and (root / ".git").exists():
        files = ["dvc.lock", *(f"{r}.dvc" for r in rel)]
        files += [str(p.relative_to(root)) for p in (root / "data" / "cycles" / ".gitignore",
                                                     root / "models" / "cycles" / ".gitignore") if p.is_file()]
        ok, text = _run(["git", "add", *[f for f in files if (root / f).exists()]], root)
        ok = ok and _run(["git", "commit", "-q", "-m", message], root)[0]
        if ok and tag:
            ok = _run(["git", "tag", "-f", tag], root)[0]
        out["git"] = ok
        if not ok:
            log.warning("[versions] git commit failed; commit dvc.lock and the .dvc files by hand")
    return out


def rollback(cfg, paths: Paths, version: int, data: bool = False) -> dict:
    """Make registry version `version` the production model again; optionally restore its data.

    Args:
        cfg: the config (`retrain.push`, `retrain.git_commit`).
        paths: the workspace.
        version: a version that was promoted once (it has an archive).
        data: also check out the version's data snapshots from DVC (its cycles' folders).

    Returns:
        {"version", "previous", "model_hash", "data": [...restored], "recorded": {...}}.

    Raises:
        UserError: unknown version, one never promoted, or its archive missing and not in DVC.
    """
    with exclusive(paths, f"rollback to version {version}"):
        registry = read_registry(paths)
        entry = find_version(registry, version)
        if not entry.get("promoted"):
            raise UserError(f"version {version} was never promoted ({entry.get('reason')}); nothing to roll back to")
        if not entry.get("archive_hash"):
            raise UserError(f"version {version} has no archive (promoted before models/versions/ existed)")
        folder = archive_dir(paths, version)
        if not folder.is_dir():
            ok, _ = _run([*dvc_command(), "checkout", "-q", str(folder.relative_to(paths.root))], paths.root)
            if not ok or not folder.is_dir():
                raise DataError(f"{folder}: not in the workspace or the DVC cache; run `dvc pull` first")
        actual = hash_dir(folder)
        if actual != entry["archive_hash"]:
            raise DataError(f"{folder}: sha256 {actual[:12]} differs from the registry's {entry['archive_hash'][:12]} "
                            f"for version {version}; restore it with `dvc checkout` or `dvc pull`")
        restored = []
        if data:
            for snap in [e.get("data_snapshot") for e in lineage(registry, version)]:
                if snap:
                    ok, text = _run([*dvc_command(), "checkout", "-q", f"{snap}.dvc"], paths.root)
                    if not ok:
                        raise DataError(f"{snap}.dvc: could not restore the data snapshot ({text.splitlines()[-1]})")
                    restored.append(snap)
        previous = registry.get("production")
        install(paths, folder, {**entry, "rolled_back_at": now()})
        registry["production"] = version
        registry.setdefault("events", []).append({
            "time": now(), "action": "rollback", "from": previous, "to": version,
            "source": os.environ.get(SOURCE_ENV) or "kdistill rollback"})
        write_json(registry_path(paths), registry)
        log.info("[rollback] production is version %s again (was %s); model sha256 %s", version, previous, actual[:12])
        recorded = record(paths, f"rollback: production version {previous} -> {version}", [], cfg.retrain.push,
                          cfg.retrain.git_commit)
    return {"version": version, "previous": previous, "model_hash": actual, "data": restored, "recorded": recorded}


def production_version(paths: Paths) -> int | None:
    """The version models/production/ holds, by its stamp (None when there is none)."""
    stamp = production_dir(paths) / STAMP
    return read_json(stamp).get("version") if stamp.is_file() else None


def list_versions(cfg, paths: Paths) -> dict:
    """`kdistill versions`: the registry as a table on stderr; returns the registry."""
    registry = read_registry(paths)
    current = registry.get("production")
    print(f"{'':2}{'version':>7}  {'time':<25} {'promoted':<9} {'trigger':<9} {'accuracy':>8}  reason", file=sys.stderr)
    for v in registry["versions"]:
        mark = "*" if v["version"] == current else " "
        acc = v.get("metrics", {}).get("accuracy") or v.get("metrics", {}).get("new_accuracy")
        print(f"{mark:2}{v['version']:>7}  {v.get('time', ''):<25} {v.get('promoted')!s:<9} "
              f"{v.get('trigger', 'pipeline'):<9} {acc if acc is None else round(acc, 4)!s:>8}  {v.get('reason', '')}",
              file=sys.stderr)
    return {"production": current, "versions": len(registry["versions"])}
