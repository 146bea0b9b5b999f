"""Shared pieces of the drift tests: the tiny-model workspace's settings, window helpers, a log writer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.infra.storage import Paths

WINDOW = 100
OVERRIDES = [f"drift.min_window={WINDOW}", f"drift.window_rows={WINDOW}", "drift.max_reference_rows=600",
             "drift.embedder=student", "inference.variant=torch-fp32", "inference.threads=0"]
TRAIN, VAL, HELD_OUT = slice(0, 600), slice(600, 850), slice(850, None)  # rows of the shuffled movie snippets


def foreign_texts(n: int, seed: int = 0) -> list[str]:
    """`n` texts unlike any movie review: strings of long numbers (a stand-in for a new kind of traffic)."""
    rng = np.random.default_rng(seed)
    return [" ".join(str(v) for v in rng.integers(10_000, 10_000_000, size=rng.integers(6, 14))) for _ in range(n)]


def verdict_for(monitor, texts: list[str], cfg, labels: list | None = None) -> dict:
    """The monitor's verdict on a window of `texts`, scored by the model as the production log would be."""
    from tasks.models.monitor import predictions_frame
    from tasks.production.drift import check_window

    return check_window(monitor, predictions_frame(monitor, texts, labels), cfg.drift)


def write_log(ws: Paths, texts: list[str], monitor, labels: list | None = None, name: str = "test") -> None:
    """Append `texts` to the workspace's production log (a fixed 0.3/0.7 prediction each)."""
    from tasks.infra.prodlog import write_part
    from tasks.production.score import ProductionModel, log_rows

    model = ProductionModel(monitor.tokenizer, None, monitor.labels, 3, "tinyhash", 64)
    probs = np.tile([0.3, 0.7], (len(texts), 1)).astype("float32")
    rows = log_rows(model, texts, probs, "x.csv", labels)
    write_part(ws, rows, f"{name}{len(texts)}", rows["time"].iloc[0].date())


def mixed(held: pd.DataFrame, share: float, rows: int, seed: int) -> list[str]:
    """A window of `rows` texts: `share` of them foreign, the rest held-out movie snippets, shuffled."""
    k = round(share * rows)
    texts = held.sample(rows - k, random_state=seed)["text"].tolist() + foreign_texts(k, seed)
    return [texts[i] for i in np.random.default_rng(seed).permutation(len(texts))]
