"""The drift monitor on a tiny random-weight model: the text and descriptor signals still see a domain shift.

Window counts and the bound they are checked against: if the monitor's false-alarm rate is at most
5% (the calibration target), P(2 or more alarms in 5 independent windows) = 1 - 0.95^5 - 5 * 0.05 *
0.95^4 = 2.3%, so "at most 1 of 5" fails a correctly calibrated monitor at most 2.3% of the time,
and a monitor alarming on half the windows passes it only 19% of the time. With detection >= 95%,
all 3 shifted windows are flagged with probability >= 86%; measured detection here is 100%, and the
windows are seeded, so the test is deterministic. bench/drift_calibration.py checks 20 + 20 windows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import load_config
from tasks.storage import Paths, write_json

REPO = Path(__file__).resolve().parents[2]
WINDOW = 100
OVERRIDES = [f"drift.min_window={WINDOW}", f"drift.window_rows={WINDOW}", "drift.max_reference_rows=600",
             "serve.variant=torch-fp32", "serve.threads=0"]


@pytest.fixture(scope="module")
def cfg():
    return load_config(REPO / "params.yaml", OVERRIDES)


@pytest.fixture(scope="module")
def movies():
    from tasks.ingest import read_embedded

    return read_embedded("movies").sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_teacher_dir, movies) -> Paths:
    """A workspace: the tiny model in production, 600 movie snippets as its training split."""
    root = tmp_path_factory.mktemp("drift_ws")
    shutil.copytree(tiny_teacher_dir, root / "models" / "production")
    entry = {"version": 3, "model_hash": "tinyhash", "metrics": {"accuracy": 0.5}}
    write_json(root / "models" / "production" / "production.json", entry)
    write_json(root / "models" / "registry.json", {"production": 3, "versions": [entry]})
    train = movies.iloc[:600].assign(label=lambda f: (f["label"] == "positive").astype(int))
    (root / "data" / "processed").mkdir(parents=True)
    train.to_parquet(root / "data" / "processed" / "train.parquet", index=False)
    return Paths(root)


@pytest.fixture(scope="module")
def monitor(ws, cfg):
    from tasks.drift import load_monitor

    return load_monitor(cfg, ws)


def verdict_for(monitor, frame: pd.DataFrame, cfg) -> dict:
    from tasks.drift import check_window, predictions_frame

    return check_window(monitor, predictions_frame(monitor, frame["text"].tolist()), cfg.drift)


def test_descriptors(monitor):
    from tasks.drift import add_descriptors

    frame = add_descriptors(pd.DataFrame({"text": ["the film", "zzqx 123!", ""]}), {"the", "film"})
    assert frame["length"].tolist() == [8, 9, 0] and frame["words"].tolist() == [2, 2, 0]
    assert frame["oov_share"].tolist() == [0.0, 1.0, 1.0]
    assert frame["nonletter_share"].iloc[1] == pytest.approx(4 / 9)


def test_reference_is_cached_per_model(ws, monitor):
    cached = list((ws.reports / "drift").glob("reference-tinyhash*.parquet"))
    assert len(cached) == 1 and len(pd.read_parquet(cached[0])) == 600


def test_few_false_alarms_on_held_out_movies(monitor, movies, cfg):
    held = movies.iloc[600:]
    verdicts = [verdict_for(monitor, held.sample(WINDOW, random_state=i), cfg) for i in range(5)]
    assert sum(v["drift_detected"] for v in verdicts) <= 1, [v["fired"] for v in verdicts]


@pytest.mark.parametrize("domain", ["tweets", "amazon", "nyt"])
def test_other_domains_are_flagged(monitor, domain, cfg):
    from tasks.ingest import read_embedded

    verdict = verdict_for(monitor, read_embedded(domain).sample(WINDOW, random_state=1), cfg)
    assert verdict["drift_detected"], verdict["signals"]
    assert verdict["window_rows"] == WINDOW and verdict["model_version"] == 3


def _log(ws: Paths, frame: pd.DataFrame, monitor) -> None:
    import numpy as np

    from tasks.score import ProductionModel, log_rows, write_part

    model = ProductionModel(monitor.tokenizer, None, monitor.labels, 3, "tinyhash", 64)
    probs = np.tile([0.3, 0.7], (len(frame), 1)).astype("float32")
    rows = log_rows(model, frame["text"].tolist(), probs, "x.csv", frame["label"].tolist())
    write_part(ws, rows, f"test{len(frame)}", rows["time"].iloc[0].date())


def test_drift_writes_report_and_verdict(ws, cfg, monitor, movies):
    from tasks.drift import drift

    shutil.rmtree(ws.root / "data" / "production", ignore_errors=True)
    _log(ws, movies.iloc[600:640], monitor)
    small = drift(cfg, ws)
    assert small["status"] == "not enough data" and small["drift_detected"] is None
    _log(ws, movies.iloc[640:740], monitor)
    verdict = drift(cfg, ws)
    assert verdict["status"] == "ok" and verdict["window_rows"] == WINDOW
    assert set(verdict["signals"]) == {"descriptors", "text", "embedding", "labels", "confidence", "quality"}
    out = Path(verdict["report_dir"])
    assert (out / "report.html").stat().st_size > 100_000
    stored = json.loads((out / "verdict.json").read_text())
    assert stored["drift_detected"] == verdict["drift_detected"] and stored["model_version"] == 3
