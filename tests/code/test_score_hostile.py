"""`kdistill score` on a hostile drop folder (issue 25 items 9, 10): a symbolic link to a file outside it is set
aside unread (it used to quote the target's first line, e.g. of /etc/passwd, in the log and the quarantine
reason), and an incoming folder inside the production log is refused as configuration."""

from __future__ import annotations

import json

import pytest

from tasks.cli import main
from tests.retrain.test_label_hygiene import overrides

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SECRET = "root:x:0:0:SECRET-FIRST-LINE"


def test_a_link_to_a_file_outside_the_drop_folder_is_set_aside_unread(retrain_ws, tmp_path, capsys):
    outside = tmp_path / "passwd"
    outside.write_text(f"{SECRET}\nline two\n")
    incoming = retrain_ws / "data" / "incoming"
    (incoming / "evil.csv").symlink_to(outside)
    argv = ["--params", str(retrain_ws / "params.yaml"), "--root", str(retrain_ws), *overrides(), "score"]
    assert main(argv) == 0
    printed = capsys.readouterr()
    summary = json.loads(printed.out)
    assert summary["quarantined"] == ["evil.csv"] and summary["rows"] == 0
    moved = incoming / "quarantine" / "evil.csv"
    assert moved.is_symlink() and outside.read_text().startswith(SECRET)  # the link moved, the target untouched
    reason = (incoming / "quarantine" / "evil.csv.reason.json").read_text()
    assert "symbolic link to a file outside" in reason
    everything = printed.out + printed.err + reason + "".join(
        p.read_text(errors="replace") for p in (retrain_ws / "data" / "production").rglob("*.json"))
    assert "SECRET" not in everything


def test_an_incoming_folder_inside_the_production_log_is_refused(retrain_ws, capsys):
    log_dir = retrain_ws / "data" / "production"
    before = sorted(p.relative_to(log_dir).as_posix() for p in log_dir.rglob("*"))
    argv = ["--params", str(retrain_ws / "params.yaml"), "--root", str(retrain_ws), "-q", *overrides(),
            "-S", "score.incoming=data/production", "score"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "score.incoming" in err[0] and "inside the production log" in err[0], err
    assert sorted(p.relative_to(log_dir).as_posix() for p in log_dir.rglob("*")) == before  # nothing moved
