"""One model identity: the scoring side (the prediction log's `model_hash`) and the drift monitor (its
cached reference and held-out splits) name the same production folder with the same key, stamped or not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from tasks.infra.config import load_config
from tasks.infra.storage import Paths, hash_dir, write_json

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["a great film with a wonderful cast", "an awful boring movie", "the plot is dull and slow",
         "brilliant acting and a moving story", "a tedious mess", "the best film this year"] * 4


@pytest.fixture(scope="module")
def cfg():
    return load_config(REPO / "params.yaml", ["drift.embedder=student", "inference.variant=torch-fp32",
                                              "inference.threads=0"])


@pytest.fixture
def ws(tmp_path, tiny_teacher_dir) -> Paths:
    """The tiny model in models/production/ with no stamp; 24-row training and val splits for the monitor."""
    shutil.copytree(tiny_teacher_dir, tmp_path / "models" / "production")
    (tmp_path / "data" / "processed").mkdir(parents=True)
    rows = pd.DataFrame({"text": TEXTS, "label": [i % 2 for i in range(len(TEXTS))]})
    for split in ("train", "val"):
        rows.to_parquet(tmp_path / "data" / "processed" / f"{split}.parquet", index=False)
    return Paths(tmp_path)


def keys(cfg, paths: Paths) -> tuple[str, str, list[str]]:
    """(score's model_hash, the drift monitor's, the drift caches' file names) for the production folder."""
    from tasks.models.monitor import drift_dir, load_monitor
    from tasks.production.score import load_production

    scored, monitored = load_production(cfg, paths).model_hash, load_monitor(cfg, paths).model_hash
    return scored, monitored, sorted(p.name for p in drift_dir(paths).glob("*.parquet"))


def test_an_unstamped_folder_has_one_key_the_one_promote_records(cfg, ws, tiny_teacher_dir):
    scored, monitored, caches = keys(cfg, ws)
    # promote records hash_dir(models/student) for the folder it copies into production
    assert scored == monitored == hash_dir(tiny_teacher_dir)
    assert caches and all(monitored[:16] in name for name in caches)


def test_a_stamp_without_a_hash_is_not_part_of_the_key(cfg, ws, tiny_teacher_dir):
    write_json(ws.root / "models" / "production" / "production.json", {"version": 1})
    scored, monitored, _ = keys(cfg, ws)
    assert scored == monitored == hash_dir(tiny_teacher_dir)


def test_a_stamped_folder_is_named_by_its_stamp(cfg, ws):
    write_json(ws.root / "models" / "production" / "production.json", {"version": 1, "model_hash": "abc123"})
    assert keys(cfg, ws)[:2] == ("abc123", "abc123")
