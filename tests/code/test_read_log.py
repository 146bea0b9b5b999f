"""The production log is read by window, not whole: drift's window and retrain's unlabelled pool open
only the day partitions they need, and get the same rows as a full read would."""

from __future__ import annotations

import datetime
from pathlib import Path

import pandas as pd
import pytest

from tasks.infra.storage import Paths
from tasks.infra.prodlog import production_log_dir, read_log, write_part

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def part(times: list[datetime.datetime], tag: str) -> pd.DataFrame:
    """Production-log rows (the columns drift and retrain read) at `times`."""
    return pd.DataFrame({"time": pd.Series(times, dtype="datetime64[us, UTC]"),
                         "text": [f"{tag} text {i}" for i in range(len(times))],
                         "prediction": ["positive"] * len(times), "confidence": [0.9] * len(times),
                         "label": pd.Series([None] * len(times), dtype="string")})


@pytest.fixture
def log(tmp_path) -> Paths:
    """60 days of log, two parts a day (5 + 3 rows), the newest day yesterday... today."""
    paths = Paths(tmp_path)
    for age in range(60, -1, -1):
        noon = NOW.replace(hour=12, minute=0, second=0) - datetime.timedelta(days=age)
        day = noon.date()
        write_part(paths, part([noon + datetime.timedelta(minutes=i) for i in range(5)], f"d{age}a"), f"a{age}", day)
        write_part(paths, part([noon + datetime.timedelta(hours=1, minutes=i) for i in range(3)], f"d{age}b"),
                   f"b{age}", day)
    return paths


def full_read(paths: Paths) -> pd.DataFrame:
    """The old reader: every part, sorted by time (the result a window must equal)."""
    parts = sorted(production_log_dir(paths).glob("date=*/part-*.parquet"))
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def corrupt_days_before(paths: Paths, day: datetime.date) -> int:
    """Overwrite every part filed before `day` with bytes no Parquet reader accepts; returns how many."""
    hit = 0
    for p in production_log_dir(paths).glob("date=*/part-*.parquet"):
        if p.parent.name[5:] < day.isoformat():
            p.write_bytes(b"not parquet")
            hit += 1
    return hit


def test_a_row_window_reads_only_the_newest_days(log):
    expected = full_read(log).tail(20).reset_index(drop=True)
    # 20 rows = the last 2.5 days; with the day before as margin, nothing older than 3 days is needed.
    assert corrupt_days_before(log, (NOW - datetime.timedelta(days=3)).date()) > 100
    pd.testing.assert_frame_equal(read_log(log, rows=20), expected)


def test_a_day_window_reads_only_its_days(log):
    full = full_read(log)
    corrupt_days_before(log, (NOW - datetime.timedelta(days=4)).date())
    # `days` is measured from the call's own now, not NOW (taken when the module was collected, maybe minutes
    # before): a row logged between the edge just before the call and the edge just after may go either way.
    before = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=3)
    got = read_log(log, days=3)
    after = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=3)
    surely, maybe = set(full.loc[full["time"] >= after, "text"]), set(full.loc[full["time"] >= before, "text"])
    assert len(surely) >= 20 and surely <= set(got["text"]) <= maybe and len(got) == got["text"].nunique()
    assert got["time"].is_monotonic_increasing


def test_retrains_pool_reads_only_the_days_after_its_last_cycle(log):
    from tasks.lifecycle.retrain import unlabelled_texts

    since = (NOW - datetime.timedelta(days=2)).isoformat()
    full = full_read(log)
    expected = set(full.loc[full["time"] > pd.Timestamp(since), "text"])
    corrupt_days_before(log, (NOW - datetime.timedelta(days=3)).date())
    pd.testing.assert_frame_equal(read_log(log, since=since),
                                  full[full["time"] > pd.Timestamp(since)].reset_index(drop=True))
    assert set(unlabelled_texts(log, since, exclude=set(), limit=10_000, seed=0)) == expected


def test_a_part_flushed_after_midnight_is_still_in_the_window(tmp_path):
    """The API files a buffer under its first row's day: the newest row can sit in yesterday's folder."""
    paths = Paths(tmp_path)
    midnight = NOW.replace(hour=0, minute=0, second=0)
    old_day = (midnight - datetime.timedelta(days=5)).date()
    write_part(paths, part([midnight - datetime.timedelta(days=5, hours=-1)] * 4, "old"), "old", old_day)
    write_part(paths, part([midnight - datetime.timedelta(seconds=10), midnight + datetime.timedelta(seconds=30)],
                           "spill"), "spill", (midnight - datetime.timedelta(seconds=10)).date())
    write_part(paths, part([midnight + datetime.timedelta(seconds=20)], "today"), "today", midnight.date())
    assert read_log(paths, rows=1)["text"].tolist() == ["spill text 1"]
    assert read_log(paths, rows=3)["text"].tolist() == ["spill text 0", "today text 0", "spill text 1"]
    assert len(read_log(paths)) == 7


def test_an_empty_log_is_an_empty_frame(tmp_path):
    assert read_log(Paths(tmp_path), rows=10).empty and read_log(Paths(tmp_path), days=2).empty


def test_the_log_growth_bench_runs_and_its_window_matches_the_old_reader(tmp_path, monkeypatch):
    import json
    import runpy
    import sys

    out = tmp_path / "growth.json"
    monkeypatch.setattr(sys, "argv", ["drift_log_growth.py", "--days", "3", "--rows-per-day", "20", "--factors", "1,2",
                                      "--window-rows", "30", "--repeats", "1", "--out", str(out)])
    runpy.run_path(str(Path(__file__).resolve().parents[2] / "bench" / "drift_log_growth.py"), run_name="__main__")  # asserts the windows agree
    report = json.loads(out.read_text())
    assert [r["parts"] for r in report["results"]] == [6, 12]
