"""Drift's log-reading cost as the production log grows 1x -> 100x: flat, not linear (issue 16, item 6).

`kdistill drift` takes its window from the production log (data/production/date=YYYY-MM-DD/part-*.parquet):
the last `drift.window_rows` rows, or the last `drift.window_days` days; retrain's unlabelled pool
takes the rows since the last cycle. Before, every part file of the log was read and the window
cut afterwards, so a workspace that had scored for a year paid for the whole year on every run.
tasks.infra.prodlog.read_log now opens only the day partitions the window needs.

This bench writes a synthetic log in the production schema (score.log_rows' columns: time, text,
prediction, confidence, prob_<label>, model_version, model_hash, source, label), `--rows-per-day`
rows a day in two parts, `--days` days at 1x; grows it to 10x and 100x by adding older days; and
times, at each size, the reads a drift run and a retraining make, against the old full read. Only
the log reading is timed: the monitor's scoring of the window (the same 200 rows whatever the log's
size) needs a production model and does not grow with the log.

    env OMP_NUM_THREADS=1 .venv/bin/python bench/drift_log_growth.py --threads 1

Prints a table and writes reports/bench/drift_log_growth.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stamp import stamp  # noqa: E402

import numpy as np
import pandas as pd

from tasks.infra.storage import Paths
from tasks.infra.prodlog import production_log_dir, read_log, write_part

WORDS = ["the", "a", "film", "movie", "plot", "acting", "great", "awful", "boring", "brilliant", "slow", "moving", "cast", "script", "story"]


def day_rows(day: datetime.date, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """One day of production-log rows, spread over the day, in score.log_rows' schema."""
    start = datetime.datetime.combine(day, datetime.time(0), datetime.UTC)
    times = sorted(start + datetime.timedelta(seconds=int(s)) for s in rng.integers(0, 86_400, rows))
    prob = rng.random(rows)
    return pd.DataFrame({
        "time": pd.Series(times, dtype="datetime64[us, UTC]"),
        "text": [" ".join(rng.choice(WORDS, rng.integers(5, 30))) for _ in range(rows)],
        "prediction": np.where(prob >= 0.5, "positive", "negative"), "confidence": np.maximum(prob, 1 - prob),
        "prob_negative": 1 - prob, "prob_positive": prob,
        "model_version": pd.Series([1] * rows, dtype="Int64"), "model_hash": "0" * 64, "source": "bench",
        "label": pd.Series([None] * rows, dtype="string")})


def grow(paths: Paths, today: datetime.date, first_age: int, last_age: int, rows: int, seed: int) -> None:
    """Write the days aged first_age..last_age-1 (0 = today), two parts a day."""
    rng = np.random.default_rng(seed + first_age)
    for age in range(first_age, last_age):
        day = today - datetime.timedelta(days=age)
        frame = day_rows(day, rows, rng)
        half = len(frame) // 2
        write_part(paths, frame.iloc[:half], f"{age}-a", day)
        write_part(paths, frame.iloc[half:], f"{age}-b", day)


def read_everything(paths: Paths, rows: int) -> pd.DataFrame:
    """The reader before this change: every part, then the last `rows` rows."""
    parts = sorted(production_log_dir(paths).glob("date=*/part-*.parquet"))
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return frame.sort_values("time", kind="stable").reset_index(drop=True).tail(rows).reset_index(drop=True)


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls (after one warm-up call), and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=30, help="days of log at 1x")
    parser.add_argument("--rows-per-day", type=int, default=200)
    parser.add_argument("--factors", default="1,10,100")
    parser.add_argument("--window-rows", type=int, default=200, help="drift.window_rows")
    parser.add_argument("--window-days", type=int, default=7, help="drift.window_days, when set")
    parser.add_argument("--since-days", type=int, default=7, help="retrain: days since the last cycle")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="recorded; reading Parquet here is single-threaded")
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench" / "drift_log_growth.json"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    today = datetime.datetime.now(datetime.UTC).date()
    since = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=args.since_days)).isoformat()
    factors = [int(f) for f in args.factors.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="kdistill-log-") as root:
        paths, written = Paths(Path(root)), 0
        for factor in factors:
            grow(paths, today, written, args.days * factor, args.rows_per_day, seed=0)
            written = args.days * factor
            row_s, window = timed(lambda: read_log(paths, rows=args.window_rows), args.repeats)
            day_s, _ = timed(lambda: read_log(paths, days=args.window_days), args.repeats)
            since_s, _ = timed(lambda: read_log(paths, since=since), args.repeats)
            full_s, old = timed(lambda: read_everything(paths, args.window_rows), max(1, args.repeats // 2))
            pd.testing.assert_frame_equal(window, old)  # the same window as the old reader's
            row = {"factor": factor, "days": written, "parts": 2 * written, "log_rows": written * args.rows_per_day,
                   "window_rows_s": round(row_s, 4), "window_days_s": round(day_s, 4),
                   "retrain_since_s": round(since_s, 4), "before_full_read_s": round(full_s, 4)}
            results.append(row)
            print(f"{factor:>4}x {row['parts']:>6} parts {row['log_rows']:>8} rows: window_rows {row_s * 1e3:7.1f} ms"
                  f"  window_days {day_s * 1e3:7.1f} ms  retrain since {since_s * 1e3:7.1f} ms"
                  f"  | before (every part) {full_s * 1e3:8.1f} ms", flush=True)
    first, last = results[0], results[-1]
    growth = {k: round(last[k] / max(first[k], 1e-9), 2)
              for k in ("window_rows_s", "window_days_s", "retrain_since_s", "before_full_read_s")}
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                          "python": platform.python_version(), "pandas": pd.__version__},
              "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "results": results, "growth_first_to_last": growth,
              "note": "log reading only (tasks.infra.prodlog.read_log); the monitor's scoring of the "
                      "window does not depend on the log's size"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(stamp(report), indent=2) + "\n")
    print(f"time at {last['factor']}x / at {first['factor']}x: {growth}")


if __name__ == "__main__":
    main()
