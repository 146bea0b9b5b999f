"""The registry's write side: the registry, the production folder, the version archive, the locks,
version numbers and rollback. promote and retrain decide; every write goes through this module. The
read side (where things live, what the registry holds) is tasks.infra.registry_view and the flock
helper is tasks.infra.locks, so that readers (score, the API, drift) never import the lifecycle.

- `models/registry.json`: {"production": version | None, "versions": [entry, ...], "events": [...]}.
  Every decision of promote or of a retraining cycle is one entry, promoted or not.
- `models/production/`: a copy of the promoted model, stamped with its entry (`production.json`).
- `models/versions/v<N>/`: every promoted model (an output of the promote stage, so DVC caches it);
  what `rollback(N)` restores.

Two locks, because they guard two different things (see `cycle_lock` and `transaction`):

- `models/.retrain.lock`, the cycle lock: one retraining cycle or rollback at a time per workspace,
  held for the whole cycle (minutes). A second cycle is refused at once (`CycleRunning`).
- `models/.registry.lock`, the write lock: held only while the registry, production and the archive
  are written (about a second), by every writer: promote, a cycle's last step, rollback. A writer
  waits up to `WRITE_WAIT_S` for it, then fails with one line (`LockBusy`). The next version number
  is allocated under it, at write time, so two writers can neither share a number nor lose an entry.

One reentrant lock could not do both: a pipeline promote landing during a cycle would be refused
(or wait minutes) for the whole cycle. With two, it waits at most for the cycle's last write; the
cycle then sees, under the write lock, that production moved (`Transaction.moved_since`) and its
decision code refuses to replace a model it was never compared with.

Readers (the API, score, drift; tasks.infra.registry_view) take no lock: every file here is replaced by an
atomic rename.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tasks.infra.errors import DataError, UserError
from tasks.infra.locks import LockBusy, file_lock
from tasks.infra.registry_view import (
    NEXT,
    STAMP,
    complete_swap,
    find_version,
    lineage,
    models_dir,
    production_dir,
    production_version,
    read_registry,
    read_registry_file,
    recover_locked,
    registry_path,
    run_source,
    swap_path,
    write_lock_path,
)
from tasks.infra.storage import Paths, atomic_path, dvc_command, hash_dir, write_json
from tasks.lifecycle.versions import record, run_tool

log = logging.getLogger("kd")

WRITE_WAIT_S = 60.0  # a registry write takes about a second; a minute of waiting means something is stuck


def archive_dir(paths: Paths, version: int) -> Path:
    """models/versions/v<version>/: the archived copy of a promoted model."""
    return paths.root / "models" / "versions" / f"v{version}"


def now() -> str:
    """The current UTC time as the registry writes it."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Decision:
    """Whether to promote, and the one-line reason a person reads in the log and the registry: what promote
    and a retraining cycle each decide, and what their registry entry records (`promoted`, `reason`)."""

    promote: bool
    reason: str


def new_entry(version: int, promoted: bool, reason: str, *, trigger: str, source: str, parent: int | None,
              **fields) -> dict:
    """A registry entry: the fields every writer records, then the writer's own (`fields` may set `time`)."""
    return {"version": version, "time": now(), "promoted": promoted, "reason": reason, "trigger": trigger,
            "source": source, "parent": parent, **fields}


# ------------------------------------------------------------------------------------------ locks

class CycleRunning(LockBusy):
    """Another retraining cycle or rollback holds models/.retrain.lock: this one is skipped."""


@contextlib.contextmanager
def cycle_lock(paths: Paths, what: str) -> Iterator[None]:
    """Hold models/.retrain.lock for a whole retraining cycle or rollback: one at a time per workspace.

    Raises:
        CycleRunning: another cycle or rollback holds it (the message names its pid, start and job).
    """
    path = paths.root / "models" / ".retrain.lock"
    with file_lock(path, what, 0.0) as holder:
        if holder:
            raise CycleRunning(f"{path}: another retraining or rollback is running ({holder}); this {what} is skipped")
        yield


@dataclass
class Transaction:
    """The registry as read under the write lock; each method writes at once (atomically)."""

    paths: Paths
    registry: dict = field(default_factory=dict)

    @property
    def production(self) -> int | None:
        """The production version now, under the lock."""
        return self.registry.get("production")

    def next_version(self) -> int:
        """The version the next `add` writes: one more than any in the registry."""
        return max((v["version"] for v in self.registry["versions"]), default=0) + 1

    def moved_since(self, version: int | None) -> str | None:
        """Why a candidate judged against production `version` may no longer replace it, or None."""
        if self.production == version:
            return None
        by = next((v.get("source") for v in self.registry["versions"] if v["version"] == self.production), None)
        return (f"production changed from version {version} to version {self.production} ({by or 'unknown source'}) "
                f"while this candidate was judged; it was never compared with version {self.production}")

    def add(self, entry: dict, model_dir: Path | None = None) -> dict:
        """Append `entry`, whose version must be `next_version()`. With `model_dir`, the model is archived
        as models/versions/v<N>/ and installed as production, stamped with the entry.

        Returns:
            The entry as written (with `archive` and `archive_hash` when installed).
        """
        if entry.get("version") != self.next_version():
            raise ValueError(f"entry version {entry.get('version')} is not the next one ({self.next_version()})")
        if model_dir is not None:
            entry.update(_archive(self.paths, model_dir, entry["version"]))
            _prepare(self.paths, model_dir, entry)
            self.registry["production"] = entry["version"]
        self.registry["versions"].append(entry)
        self._commit(install=model_dir is not None)
        return entry

    def restore(self, version: int, source: str) -> None:
        """Make archived `version` production again (its archive must be checked); records the event."""
        entry = find_version(self.registry, version)
        previous = self.production
        _prepare(self.paths, archive_dir(self.paths, version), {**entry, "rolled_back_at": now()})
        self.registry["production"] = version
        self.registry.setdefault("events", []).append(
            {"time": now(), "action": "rollback", "from": previous, "to": version, "source": source})
        self._commit(install=True)

    def archive_production(self) -> None:
        """Archive the production model of a registry written before models/versions/ existed."""
        entry = next((v for v in self.registry["versions"] if v["version"] == self.production), None)
        if entry is None or entry.get("archive_hash") or not (production_dir(self.paths) / "config.json").is_file():
            return
        entry.update(_archive(self.paths, production_dir(self.paths), self.production))
        self._save()
        log.info("[registry] archived production (version %s) as %s", self.production, entry["archive"])

    def _save(self) -> None:
        write_json(registry_path(self.paths), self.registry)  # the API reloads on this write

    def _commit(self, install: bool) -> None:
        """Write the registry, and with `install` swap in the prepared production folder, as one transaction:
        the intent record first (its atomic write is the commit point), then the swap it describes
        (tasks.infra.registry_view: a kill anywhere after the intent is completed by the next reader)."""
        if not install:
            self._save()  # one atomic rename: nothing to keep together
            return
        write_json(swap_path(self.paths), {"install": True, "time": now(), "registry": self.registry})
        complete_swap(self.paths)


@contextlib.contextmanager
def transaction(paths: Paths, what: str, wait_s: float | None = None) -> Iterator[Transaction]:
    """Hold models/.registry.lock and yield the registry read under it: the only way to write the
    registry, production or the archive. Keep the body short; never nest it.

    Raises:
        LockBusy: another writer held it for more than `wait_s` (default `WRITE_WAIT_S`); nothing was written.
    """
    path = write_lock_path(paths)
    wait = WRITE_WAIT_S if wait_s is None else wait_s
    with file_lock(path, what, wait) as holder:
        if holder:
            raise LockBusy(f"{path}: held for more than {wait:g} s by {holder}; nothing was written by this {what}, "
                           f"run it again")
        recover_locked(paths)  # a killed writer's swap first: this one starts from a consistent state
        yield Transaction(paths, read_registry_file(paths))


def _archive(paths: Paths, model_dir: Path, version: int) -> dict:
    """Copy a model folder to models/versions/v<version>/ (atomically), without its stamp and exported
    ONNX files (re-made on demand, and ignored by DVC); returns the entry's `archive` fields."""
    target = archive_dir(paths, version)
    with atomic_path(target) as tmp:
        shutil.copytree(model_dir, tmp, ignore=shutil.ignore_patterns(STAMP, "onnx"))
    return {"archive": str(target.relative_to(paths.root)), "archive_hash": hash_dir(target)}


def _prepare(paths: Paths, model_dir: Path, entry: dict) -> None:
    """Copy `model_dir` to models/.production.next/, stamped with its registry entry: the folder `_commit`
    swaps in (until the intent record is written, a kill leaves only this, which the next reader removes)."""
    target = models_dir(paths) / NEXT
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(model_dir, target, ignore=shutil.ignore_patterns(STAMP))
    (target / STAMP).write_text(json.dumps(entry, indent=2) + "\n")


def ensure_archived(paths: Paths, what: str = "archiving production") -> dict:
    """Archive production if an old registry never did (so it can be rolled back to); returns the registry."""
    registry = read_registry(paths)
    entry = next((v for v in registry["versions"] if v["version"] == registry.get("production")), None)
    if entry is None or entry.get("archive_hash"):
        return registry
    with transaction(paths, what) as txn:
        txn.archive_production()
        return txn.registry


# --------------------------------------------------------------------------------------- rollback

def _checked_archive(paths: Paths, entry: dict) -> Path:
    """The archive folder of a promoted entry, checked out from DVC if absent, its sha256 verified."""
    version = entry["version"]
    if not entry.get("promoted"):
        raise UserError(f"version {version} was never promoted ({entry.get('reason')}); nothing to roll back to")
    if not entry.get("archive_hash"):
        raise UserError(f"version {version} has no archive (promoted before models/versions/ existed)")
    folder = archive_dir(paths, version)
    if not folder.is_dir():
        ok, _ = run_tool([*dvc_command(), "checkout", "-q", str(folder.relative_to(paths.root))], paths.root)
        if not ok or not folder.is_dir():
            raise DataError(f"{folder}: not in the workspace or the DVC cache; run `dvc pull` first")
    actual = hash_dir(folder)
    if actual != entry["archive_hash"]:
        raise DataError(f"{folder}: sha256 {actual[:12]} differs from the registry's {entry['archive_hash'][:12]} "
                        f"for version {version}; restore it with `dvc checkout` or `dvc pull`")
    return folder


def _restore_data(paths: Paths, registry: dict, version: int) -> list[str]:
    """Check out the data snapshots of `version`'s lineage from DVC; returns them."""
    restored = []
    for snap in [e.get("data_snapshot") for e in lineage(registry, version)]:
        if snap:
            ok, text = run_tool([*dvc_command(), "checkout", "-q", f"{snap}.dvc"], paths.root)
            if not ok:
                raise DataError(f"{snap}.dvc: could not restore the data snapshot ({text.splitlines()[-1]})")
            restored.append(snap)
    return restored


def rollback(cfg, paths: Paths, version: int, data: bool = False, source: str | None = None) -> dict:
    """Make registry version `version` the production model again; optionally restore its data.

    Rolling back to the version production already holds changes nothing (and says so).

    Args:
        cfg: the config (`retrain.push`, `retrain.git_commit`).
        paths: the workspace.
        version: a version that was promoted once (it has an archive).
        data: also check out the version's data snapshots from DVC (its cycles' folders).
        source: who asks (recorded in the registry's event); default $KDISTILL_RUN_SOURCE or the CLI.

    Returns:
        {"version", "previous", "changed", "model_hash", "data": [...restored], "recorded": {...}}.

    Raises:
        UserError: unknown version, one never promoted, or its archive missing and not in DVC.
        CycleRunning: a retraining cycle or another rollback is running.
    """
    what = f"rollback to version {version}"
    with cycle_lock(paths, what):
        registry = read_registry(paths)
        entry = find_version(registry, version)
        if registry.get("production") == version and production_version(paths) == version:
            restored = _restore_data(paths, registry, version) if data else []
            log.info("[rollback] version %s is already production: nothing changed", version)
            return {"version": version, "previous": version, "changed": False, "model_hash": entry.get("model_hash"),
                    "data": restored, "recorded": None}
        # The archive is checked (and checked out) under the write lock: a checkout of models/versions
        # must not race a promote writing v<N+1>. With `data`, the snapshots follow only a sound archive.
        with transaction(paths, what) as txn:
            folder = _checked_archive(paths, find_version(txn.registry, version))
            restored = _restore_data(paths, txn.registry, version) if data else []
            previous = txn.production
            txn.restore(version, run_source(source, "kdistill rollback"))
        actual = hash_dir(folder)
        log.info("[rollback] production is version %s again (was %s); model sha256 %s", version, previous, actual[:12])
        recorded = record(paths, f"rollback: production version {previous} -> {version}", [], cfg.retrain.push,
                          cfg.retrain.git_commit)
    return {"version": version, "previous": previous, "changed": True, "model_hash": actual, "data": restored,
            "recorded": recorded}


def list_versions(cfg, paths: Paths) -> dict:
    """`kdistill versions`: the registry as a table on stderr; returns {"production", "versions": count}."""
    registry = read_registry(paths)
    current = registry.get("production")
    print(f"{'':2}{'version':>7}  {'time':<25} {'promoted':<9} {'trigger':<9} {'score':>8}  reason", file=sys.stderr)
    for v in registry["versions"]:
        mark = "*" if v["version"] == current else " "
        m = v.get("metrics", {})  # a pipeline entry's test score, or a cycle's new-split score
        acc = next((m[k] for k in ("accuracy", "new_score", "new_accuracy") if m.get(k) is not None), None)
        print(f"{mark:2}{v['version']:>7}  {v.get('time', ''):<25} {v.get('promoted')!s:<9} "
              f"{v.get('trigger', 'pipeline'):<9} {acc if acc is None else round(acc, 4)!s:>8}  {v.get('reason', '')}",
              file=sys.stderr)
    return {"production": current, "versions": len(registry["versions"])}
