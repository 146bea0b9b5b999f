"""The drift tests' workspace: the tiny model in production; 600 movie snippets as its training split
and 250 as its val split (the held-out split that sets the per-row outlier cut)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.infra.config import load_config
from tasks.infra.storage import Paths, write_json
from tests.drift._support import OVERRIDES, TRAIN, VAL

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="package")
def cfg():
    return load_config(REPO / "params.yaml", OVERRIDES)


@pytest.fixture(scope="package")
def movies():
    from tasks.infra.embedded import read_embedded

    return read_embedded("movies").sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="package")
def ws(tmp_path_factory, tiny_teacher_dir, movies) -> Paths:
    """A workspace: the tiny model in production (version 3), the training and val splits."""
    root = tmp_path_factory.mktemp("drift_ws")
    shutil.copytree(tiny_teacher_dir, root / "models" / "production")
    entry = {"version": 3, "model_hash": "tinyhash", "metrics": {"accuracy": 0.5}}
    write_json(root / "models" / "production" / "production.json", entry)
    write_json(root / "models" / "registry.json", {"production": 3, "versions": [entry]})
    encoded = movies.assign(label=lambda f: (f["label"] == "positive").astype(int))
    (root / "data" / "processed").mkdir(parents=True)
    encoded.iloc[TRAIN].to_parquet(root / "data" / "processed" / "train.parquet", index=False)
    encoded.iloc[VAL].to_parquet(root / "data" / "processed" / "val.parquet", index=False)
    return Paths(root)


@pytest.fixture(scope="package")
def monitor(ws, cfg):
    from tasks.models.monitor import load_monitor

    return load_monitor(cfg, ws)
