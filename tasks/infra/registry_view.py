"""The registry's read side: where the production model and the registry live, and what they hold.

The write side (transactions, the archive, rollback) is tasks.lifecycle.registry; the readers (score,
the API, drift, the retraining cycle, promote) ask this module, so production never imports the
lifecycle. Readers take no lock while nothing was interrupted: every file here is replaced by an atomic
rename, and a swap of production and the registry is one recoverable transaction (`recover`, below).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tasks.infra.errors import DataError, UserError
from tasks.infra.storage import Paths, hash_dir, read_json

STAMP = "production.json"  # inside models/production/: which registry entry the folder holds
# Who asked for a change, recorded in the registry: the training flow sets it in the environment of
# the `dvc repro` it starts; in-process callers pass `source=` instead (see `run_source`).
SOURCE_ENV = "KDISTILL_RUN_SOURCE"


def production_dir(paths: Paths) -> Path:
    """models/production/: the folder the scoring side loads."""
    return paths.root / "models" / "production"


def registry_path(paths: Paths) -> Path:
    """models/registry.json: every promotion decision, in order."""
    return paths.root / "models" / "registry.json"


def run_source(source: str | None, default: str) -> str:
    """Who made a change: the caller's `source`, else $KDISTILL_RUN_SOURCE, else `default`."""
    return source or os.environ.get(SOURCE_ENV) or default


def read_registry(paths: Paths) -> dict:
    """The registry, or an empty one: {"production": version | None, "versions": [...]}. A swap a killed
    writer left is first completed or rolled back (`recover`), so what is read agrees with production."""
    recover(paths)
    return read_registry_file(paths)


def read_registry_file(paths: Paths) -> dict:
    """The registry file as it is (a writer under the write lock reads it so, after `recover_locked`)."""
    path = registry_path(paths)
    if not path.is_file():
        return {"production": None, "versions": []}
    try:
        return read_json(path)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err}); restore it from git or DVC") from None


def find_version(registry: dict, version: int) -> dict:
    """The entry of `version`.

    Raises:
        UserError: the registry has no such version (the message lists the known ones).
    """
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


def production_version(paths: Paths) -> int | None:
    """The version models/production/ holds, by its stamp (None when there is none)."""
    stamp = production_dir(paths) / STAMP
    return read_json(stamp).get("version") if stamp.is_file() else None


def model_hash(folder: Path) -> str:
    """Which model a folder holds: the key of the prediction log, the drift caches and the API's answer.

    The `model_hash` its stamp recorded, else the folder's hash without the stamp: the same value, since
    promote records `hash_dir` of the student folder that it copies here.
    """
    stamp = folder / STAMP
    recorded = read_json(stamp).get("model_hash") if stamp.is_file() else None
    return recorded or hash_dir(folder, exclude=(STAMP,))


# ----------------------------------------------------------------- the swap, as one recoverable transaction
#
# A promotion or rollback changes two things, the production folder and the registry; a `kill -9` between
# them left no production model, or a registry naming another model than the one served (issue 25). So a
# writer (tasks.lifecycle.registry, under models/.registry.lock) first prepares the new folder as
# models/.production.next/, then writes the intent record models/.swap.json (atomically: the commit point)
# holding the registry to be, then `complete_swap`s: production -> .production.old, .production.next ->
# production, the registry written, the intent removed. Every command that reads the lifecycle asks
# `read_registry`, which first `recover`s: an intent found means a writer was killed after its commit
# point, so the swap is completed (every step may be redone); without one, a prepared folder is rolled
# back (removed). Either way the temporaries of killed writers go.

SWAP = ".swap.json"  # the intent record, in models/
NEXT, OLD = ".production.next", ".production.old"
RECOVER_WAIT_S = 60.0  # a writer holds the lock about a second; readers wait for it rather than read half a swap


def models_dir(paths: Paths) -> Path:
    return paths.root / "models"


def write_lock_path(paths: Paths) -> Path:
    """models/.registry.lock: held by every writer of the registry, production and the archive."""
    return models_dir(paths) / ".registry.lock"


def swap_path(paths: Paths) -> Path:
    """models/.swap.json: the intent record of a swap under way (see above)."""
    return models_dir(paths) / SWAP


def _stale(paths: Paths) -> list[Path]:
    """Temporaries only a killed writer leaves: atomic writes' (.<name>.tmp-*) of production, the registry, the
    intent and the archive, and the swap's own folders."""
    models = models_dir(paths)
    if not models.is_dir():
        return []
    found = [p for pattern in (".production.tmp-*", ".registry.json.tmp-*", f".{SWAP}.tmp-*", NEXT, OLD)
             for p in models.glob(pattern)]
    versions = models / "versions"
    return found + (list(versions.glob(".v*.tmp-*")) if versions.is_dir() else [])


def needs_recovery(paths: Paths) -> bool:
    """Whether a killed writer left anything (cheap: two folder listings, no lock)."""
    return swap_path(paths).is_file() or bool(_stale(paths))


def recover(paths: Paths, wait_s: float = RECOVER_WAIT_S) -> str | None:
    """Complete or roll back a swap a killed writer left, and remove its temporaries (takes the write lock).

    Returns:
        What was done ("completed", "rolled back", "cleaned"), or None when there was nothing to do or a
        live writer held the lock past `wait_s` (its swap is not interrupted: it is under way).
    """
    from tasks.infra.locks import file_lock

    if not needs_recovery(paths):
        return None
    with file_lock(write_lock_path(paths), "recovering an interrupted registry write", wait_s) as holder:
        return None if holder else recover_locked(paths)


def recover_locked(paths: Paths) -> str | None:
    """`recover` for a caller that holds the write lock (a writer, before it reads the registry)."""
    import logging
    import shutil

    log = logging.getLogger("kd")
    done = None
    if swap_path(paths).is_file():
        complete_swap(paths)
        done = "completed"
    elif (models_dir(paths) / NEXT).exists():
        done = "rolled back"  # prepared, never committed: production and the registry are the old ones
    _restore_moved_aside(paths)
    stale = _stale(paths)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    if done or stale:
        done = done or "cleaned"
        log.warning("[registry] an interrupted registry write was %s; removed %s", done,
                    ", ".join(p.name for p in stale) or "nothing")
    return done


def complete_swap(paths: Paths) -> None:
    """Carry out the intent record models/.swap.json (the caller holds the write lock). Each step checks
    what is already done, so a swap killed anywhere in here is completed by running it again."""
    import shutil

    from tasks.infra.storage import rename, write_json

    intent = read_json(swap_path(paths))
    models, production = models_dir(paths), production_dir(paths)
    if intent.get("install") and (models / NEXT).is_dir():
        if production.exists():
            if (models / OLD).exists():  # a swap before this one was killed after its second rename
                shutil.rmtree(models / OLD)
            rename(production, models / OLD)
        rename(models / NEXT, production)
    write_json(registry_path(paths), intent["registry"])  # the API reloads on this write
    swap_path(paths).unlink()
    shutil.rmtree(models / OLD, ignore_errors=True)


def _restore_moved_aside(paths: Paths) -> None:
    """A workspace killed under the old two-rename swap (before the intent record) has no production folder:
    the old model waits as models/.production.tmp-*, stamped with the version the registry still names."""
    from tasks.infra.storage import rename

    production, registry = production_dir(paths), read_registry_file(paths)
    if production.exists() or registry.get("production") is None:
        return
    for folder in sorted(models_dir(paths).glob(".production.tmp-*")) + [models_dir(paths) / OLD]:
        stamp = folder / STAMP
        if (folder / "config.json").is_file() and stamp.is_file() and \
                read_json(stamp).get("version") == registry["production"]:
            rename(folder, production)
            return
