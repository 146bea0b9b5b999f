"""The production prediction log: `data/production/date=YYYY-MM-DD/part-<id>.parquet`, one part per
scored batch, each written atomically.

Writers: score (one part per file) and the API (one part per flushed buffer). Readers: drift (the
current window) and the retraining cycle (the texts logged since the last cycle).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pandas as pd

from tasks.infra.storage import Paths, atomic_path


def production_log_dir(paths: Paths) -> Path:
    """data/production/: the prediction log, one `date=YYYY-MM-DD/part-*.parquet` per scored batch."""
    return paths.root / "data" / "production"


def write_part(paths: Paths, frame: pd.DataFrame, part_id: str, day: datetime.date) -> Path:
    """Write rows as `data/production/date=DAY/part-<part_id>.parquet`, atomically; returns the path."""
    target = production_log_dir(paths) / f"date={day.isoformat()}" / f"part-{part_id}.parquet"
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)
    return target


def find_part(paths: Paths, part_id: str) -> Path | None:
    """The part a previous run wrote for `part_id` (a file's sha256), if any."""
    return next(iter(production_log_dir(paths).glob(f"date=*/part-{part_id}.parquet")), None)


def read_log(paths: Paths, days: int | None = None, rows: int | None = None,
             since: str | None = None) -> pd.DataFrame:
    """The production log, oldest first: the rows of the last `days` days, or else the last `rows` rows,
    or else every row; only rows logged after `since` (an ISO time) when given.

    Only the partitions a window needs are opened, so a workspace that has logged for a year does not
    read all of it on every drift check or retraining: a time window skips the days before it, and a
    row window reads days newest first (counting rows from the Parquet footers) until it holds `rows`.
    A part is filed under its first row's day, so one day before either limit is read as well: a
    buffer flushed after midnight holds rows of the next day.
    """
    dirs = _day_folders(production_log_dir(paths))
    start = None
    if days is not None:
        start = pd.Timestamp(datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days))
    elif since:
        start = pd.Timestamp(since)
        start = start.tz_localize("UTC") if start.tzinfo is None else start
    if start is not None:
        first_day = (start - pd.Timedelta(days=1)).date().isoformat()
        dirs = [d for d in dirs if d.name[5:] >= first_day]
    if rows and days is None:
        dirs = _newest_days_holding(dirs, rows)
    parts = [p for d in dirs for p in sorted(d.glob("part-*.parquet"))]
    if not parts:
        return pd.DataFrame(columns=["time", "text", "prediction", "confidence", "label"])
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
    if start is not None:
        keep = frame["time"] >= start if days is not None else frame["time"] > start
        frame = frame[keep].reset_index(drop=True)
    return frame.tail(rows).reset_index(drop=True) if rows and days is None else frame


def _day_folders(root: Path) -> list[Path]:
    """The log's `date=YYYY-MM-DD` folders, oldest first (the names sort as dates).

    os.scandir, not Path.glob: over years of days, glob's pattern matching was most of a window's cost.
    """
    if not root.is_dir():
        return []
    with os.scandir(root) as entries:
        return [root / name for name in sorted(e.name for e in entries if e.name.startswith("date=") and e.is_dir())]


def _newest_days_holding(dirs: list[Path], rows: int) -> list[Path]:
    """The newest day folders that hold at least `rows` rows, and the day before them (see read_log)."""
    import pyarrow.parquet as pq

    held = 0
    for i in range(len(dirs) - 1, -1, -1):
        held += sum(pq.read_metadata(p).num_rows for p in dirs[i].glob("part-*.parquet"))
        if held >= rows:
            return dirs[max(i - 1, 0):]
    return dirs
