"""The workspace's one lock helper: an exclusive flock on a file that names its holder.

The registry's write lock and the retraining cycle's lock (tasks.lifecycle.registry) and score's run
lock (tasks.production.score) all take it, so a lock's behaviour (waiting, the holder's line, the
file removed on every way out) is written once.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tasks.infra.errors import UserError


class LockBusy(UserError):
    """A workspace lock is held by someone else (the message names the file and the holder)."""


_held = threading.local()  # lock files this thread holds: a nested take would wait on itself


def _try_lock(path: Path) -> tuple[IO[str] | None, str]:
    """One attempt at an exclusive flock on `path`: (the open file, "") or (None, the holder's line)."""
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        return None, holder
    # The holder removes the file when it lets go: a lock taken on a removed file guards nothing.
    try:
        current = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
    except FileNotFoundError:
        current = False
    if not current:
        fh.close()
        return None, ""
    return fh, ""


@contextlib.contextmanager
def file_lock(path: Path, what: str, wait_s: float) -> Iterator[str]:
    """Hold `path` exclusively (flock), waiting up to `wait_s`: the workspace's one lock helper (the registry's
    write lock, the retraining cycle's lock, score's run lock). The file names the holder and is removed on
    every way out.

    Args:
        path: the lock file (its folder is created).
        what: who holds it, written into the file for a waiting caller's message.
        wait_s: how long to wait for a busy lock; 0: look once.

    Yields:
        "" when held, else the holder's line (and holds nothing).

    Raises:
        RuntimeError: this thread already holds `path` and would wait on itself.
    """
    held = getattr(_held, "paths", set())
    if path in held and wait_s > 0:  # without a wait, a second take just finds the lock busy
        raise RuntimeError(f"{path} is already held by this thread, which would wait on itself; do not nest")
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        fh, holder = _try_lock(path)
        if fh is not None or (holder and time.monotonic() >= deadline):
            break
        if holder:
            time.sleep(0.05)
    if fh is None:
        yield holder
        return
    _held.paths = held | {path}
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, since {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}, {what}")
        fh.flush()
        yield ""
    finally:
        _held.paths = getattr(_held, "paths", set()) - {path}
        path.unlink(missing_ok=True)  # before the unlock: a waiter then retries on a fresh file
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()
