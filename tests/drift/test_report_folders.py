"""Each drift run writes its own report folder, however close together two runs are."""

from __future__ import annotations

import datetime
import json
import types
from pathlib import Path

from tasks.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_two_runs_in_the_same_second_keep_two_reports(tmp_path, monkeypatch, capsys):
    import tasks.production.drift

    moment = datetime.datetime(2026, 1, 30, 10, 15, 0, tzinfo=datetime.UTC)

    class Frozen(datetime.datetime):  # both runs see the very same instant
        @classmethod
        def now(cls, tz=None):
            return moment

    monkeypatch.setattr(tasks.production.drift, "datetime", types.SimpleNamespace(
        datetime=Frozen, timezone=datetime.timezone, timedelta=datetime.timedelta))
    args = ["--params", str(REPO / "params.yaml"), "--root", str(tmp_path), "-q", "drift"]
    verdicts = []
    for _ in range(2):  # an empty log: "not enough data", written all the same
        assert main(args) == 0
        verdicts.append(json.loads(capsys.readouterr().out))
    assert verdicts[0]["report_dir"] != verdicts[1]["report_dir"]
    folders = sorted((tmp_path / "reports" / "drift").iterdir())
    assert [f.name[:23] for f in folders] == ["20260130T101500.000000Z"] * 2
    assert all((f / "verdict.json").is_file() for f in folders)
