"""The API's production-log buffer: answered rows kept in memory, written as one atomic part file now
and then, and never dropped when a write fails.

- A part file is written when `api.flush_rows` rows are buffered, when the oldest buffered row is
  `api.flush_seconds` old (checked by the API's timer every `TICK_S`, whether or not requests arrive),
  before a model reload, and at shutdown. So a crash (`kill -9`) loses at most the rows answered in the
  last `api.flush_seconds` + `TICK_S` seconds (and fewer than `api.flush_rows` of them).
- A failed write keeps the rows and is retried with backoff (`backoff_s`: 0.5 s, 1 s, 2 s, ... up to
  `MAX_BACKOFF_S`); after `SPOOL_AFTER` failures in a row the rows are spooled to disk
  (data/production-spool/, `spool_dir`), and the next write that succeeds moves every spooled part
  into the log (as does the next start of the API). `state()` says all of it for /health.

Called from worker threads, never from the event loop (a Parquet write would stall every request
meanwhile); a lock keeps the timer's, a reload's and the shutdown's flushes from racing a batch's.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

import pandas as pd

from tasks.infra.storage import Paths, atomic_path
from tasks.infra.tables import shorten
from tasks.infra.prodlog import write_part

log = logging.getLogger("kd")

TICK_S = 0.5  # how often the API's timer looks at the buffer (and at a reload waiting for its retry)
SPOOL_AFTER = 3  # failed writes in a row before the rows go to the spool folder
MAX_BACKOFF_S = 30.0


def backoff_s(failures: int) -> float:
    """The wait before the next try after `failures` failures in a row: 0.5 s doubling, at most MAX_BACKOFF_S."""
    return min(0.5 * 2 ** max(failures - 1, 0), MAX_BACKOFF_S)


def spool_dir(paths: Paths) -> Path:
    """data/production-spool/: rows the log could not take yet (outside data/production/, which may be the fault)."""
    return paths.root / "data" / "production-spool"


class LogBuffer:
    """Production-log rows in memory, flushed by size, by age (the API's timer) and at shutdown (see the module)."""

    def __init__(self, paths: Paths, max_rows: int, max_seconds: float):
        self.paths, self.max_rows, self.max_seconds = paths, max_rows, max_seconds
        self.frames: list[pd.DataFrame] = []
        self.rows, self.since = 0, time.monotonic()
        self.lock = threading.Lock()
        self.failures, self.error, self.retry_at = 0, None, 0.0
        self.spooled_rows = 0  # rows in the spool folder, as this process last counted them

    def add(self, frame: pd.DataFrame) -> None:
        """Buffer rows; flush when the buffer is full or old enough (and no retry is waiting)."""
        with self.lock:
            if not self.frames:
                self.since = time.monotonic()
            self.frames.append(frame)
            self.rows += len(frame)
            if self._due():
                self._flush()

    def tick(self) -> None:
        """The timer's call: flush rows that are old enough, retry a failed write whose backoff is over, or move
        spooled rows into the log."""
        with self.lock:
            if self._due():
                self._flush()
            elif self._drain_due():
                self._drain()

    def due(self) -> bool:
        """Whether `tick` would write now (read without the lock: the timer's cheap look)."""
        return self._due() or self._drain_due()

    def flush(self) -> Path | None:
        """Write the buffered rows now (a reload, the shutdown); returns the part, None when nothing was written."""
        with self.lock:
            return self._flush()

    def state(self) -> dict:
        """For /health: ok, or degraded with the last error, what is buffered and spooled, and the next retry."""
        degraded = self.error is not None or self.spooled_rows > 0
        return {"status": "degraded" if degraded else "ok", "buffered_rows": self.rows,
                "spooled_rows": self.spooled_rows, "failed_writes": self.failures, "error": self.error,
                "retry_in_s": round(max(self.retry_at - time.monotonic(), 0.0), 2) if self.error else None}

    def _due(self) -> bool:
        if not self.frames or time.monotonic() < self.retry_at:
            return False
        return self.rows >= self.max_rows or time.monotonic() - self.since >= self.max_seconds

    def _drain_due(self) -> bool:
        return not self.frames and self.spooled_rows > 0 and time.monotonic() >= self.retry_at

    def _flush(self) -> Path | None:
        if not self.frames:
            return None
        frame = pd.concat(self.frames, ignore_index=True)
        part_id = f"api-{uuid.uuid4().hex}"
        try:
            part = write_part(self.paths, frame, part_id, frame["time"].iloc[0].date())
        except Exception as err:  # noqa: BLE001 - whatever the disk says, the rows stay
            self._failed(err, frame, part_id)
            return None
        self.frames, self.rows, self.failures, self.error, self.retry_at = [], 0, 0, None, 0.0
        self._drain()
        return part

    def _failed(self, err: Exception, frame: pd.DataFrame, part_id: str) -> None:
        """Keep the rows and schedule a retry; after SPOOL_AFTER failures, move them to the spool folder."""
        self.failures += 1
        self.error = f"writing the production log failed: {type(err).__name__}: {shorten(err, 200)}"
        self.retry_at = time.monotonic() + backoff_s(self.failures)
        log.error("api: %s (%d rows kept; try %d, next in %.1f s)", self.error, len(frame), self.failures,
                  backoff_s(self.failures))
        if self.failures < SPOOL_AFTER:
            return
        try:
            with atomic_path(spool_dir(self.paths) / f"{part_id}.parquet") as tmp:
                frame.to_parquet(tmp, index=False)
        except Exception as spool_err:  # noqa: BLE001 - the rows stay in memory; the next try spools again
            log.error("api: spooling %d rows failed too (%s); they stay in memory", len(frame), spool_err)
            return
        self.frames, self.rows = [], 0
        self.spooled_rows += len(frame)
        log.warning("api: %d rows spooled to %s until the log can be written", len(frame), spool_dir(self.paths))

    def drain(self) -> None:
        """Move spooled parts into the log (at start-up: what a previous process spooled)."""
        with self.lock:
            self._drain()

    def _drain(self) -> None:
        folder = spool_dir(self.paths)
        files = sorted(folder.glob("api-*.parquet")) if folder.is_dir() else []
        left = 0
        for i, file in enumerate(files):
            try:
                frame = pd.read_parquet(file)
                # The spooled part keeps its id: a drain killed between the write and the unlink rewrites it.
                write_part(self.paths, frame, file.stem, frame["time"].iloc[0].date())
                file.unlink()
            except Exception as err:  # noqa: BLE001 - the log failed again: the rest waits for the next try
                left = sum(_rows(f) for f in files[i:])
                self.failures += 1
                self.retry_at = time.monotonic() + backoff_s(self.failures)
                self.error = (f"moving spooled rows into the production log failed: {type(err).__name__}: "
                              f"{shorten(err, 200)}")
                break
        self.spooled_rows = left
        if not left and not self.frames:
            self.error = None


def _rows(file: Path) -> int:
    """Rows of a spooled part, from its footer (0 when it cannot be read)."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(file).metadata.num_rows
    except Exception:  # noqa: BLE001 - a count for /health, not a reason to fail
        return 0
