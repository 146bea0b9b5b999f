"""bench/make_run.py's stage arithmetic and table, without running the pipeline."""

from __future__ import annotations

import pytest

from tests.conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("make_run")


def test_dvc_stage_lines_are_recognised(bench):
    assert bench.STAGE.search("Running stage 'teacher':").group(1) == "teacher"
    assert bench.STAGE.search("Updating lock file 'dvc.lock'") is None


def test_each_stage_runs_to_the_next_and_the_last_to_the_end_of_repro(bench):
    times = bench.stage_times([("ingest", 150.0), ("teacher", 160.0), ("promote", 500.0)], 505.0, 520.0)
    assert times["stages"] == {"ingest": 10.0, "teacher": 340.0, "promote": 5.0}
    assert times["before_first_stage_seconds"] == 150.0 and times["pipeline_seconds"] == 355.0
    unseen_end = bench.stage_times([("ingest", 1.0)], None, 9.0)
    assert unseen_end["stages"] == {"ingest": 8.0} and unseen_end["pipeline_seconds"] == 8.0
    assert bench.stage_times([], None, 4.0) == {"stages": {}, "before_first_stage_seconds": 4.0,
                                                "pipeline_seconds": None}


def test_table_has_a_column_per_venv_mode(bench):
    run = {"returncode": 0, "commit": "abc1234", "wall_seconds": 600.4, "before_first_stage_seconds": 2.0,
           "pipeline_seconds": 590.0, "stages": {"ingest": 10.0, "teacher": 580.0},
           "scores": {"metric": "accuracy", "teacher": 0.85, "student": 0.84, "retention": 0.988,
                      "speedup_b1": 2.0, "test_rows": 1057}}
    text = bench.table({"runs": {"reuse": run, "fresh": {**run, "before_first_stage_seconds": 170.0}}})
    assert "| s, venv fresh (commit abc1234) | s, venv reuse (commit abc1234) |" in text
    assert "| stage `teacher` | 580 | 580 |" in text and "| **`make run` wall** | 600 | 600 |" in text
    assert "| before the first stage (make, install) | 170 | 2 |" in text
    assert "student 0.8400, retention 0.9880" in text
    assert bench.table({"runs": {}}) == "No run yet."
