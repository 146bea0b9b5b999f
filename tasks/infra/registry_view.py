"""The registry's read side: where the production model and the registry live, and what they hold.

The write side (transactions, the archive, rollback) is tasks.lifecycle.registry; the readers (score,
the API, drift, the retraining cycle, promote) ask this module, so production never imports the
lifecycle. Readers take no lock: every file here is replaced by an atomic rename.
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
    """The registry, or an empty one: {"production": version | None, "versions": [...]}."""
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
