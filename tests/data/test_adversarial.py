"""The second adversarial pass (docs/adversarial-pass.md), through `kdistill score`: files that stopped
the whole drop folder with a traceback, cut a text without a word, or were scored half-written.

Each test drops fresh files into a workspace whose production model is the tiny teacher and runs
the real command; a failure must be one line naming the file (or row), and nothing may be logged
twice or in part.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.cli import main
from tasks.infra.storage import Paths

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["a great film with a wonderful cast", "an awful boring movie", "the plot is dull and slow"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def score(ws: Paths, capsys) -> tuple[int, dict | None, list[str]]:
    """`kdistill score` (no settle wait): exit code, the printed summary, and stderr's lines."""
    capsys.readouterr()
    code = main(["--params", str(REPO / "params.yaml"), "--root", str(ws.root), "-q", "-S", "inference.variant=torch-fp32",
                 "-S", "score.settle_seconds=0", "score"])
    out = capsys.readouterr()
    assert "Traceback" not in out.err, out.err
    return code, json.loads(out.out) if out.out.strip() else None, out.err.splitlines()


def incoming(ws: Paths) -> Path:
    return ws.root / "data" / "incoming"


def logged(ws: Paths) -> list[str]:
    from tasks.infra.prodlog import read_log

    return read_log(ws)["text"].tolist()


def reason(ws: Paths, name: str) -> str:
    return json.loads((incoming(ws) / "quarantine" / f"{name}.reason.json").read_text())["errors"][0]


def test_json_nested_too_deeply_is_quarantined_and_the_folder_goes_on(ws, capsys):
    # Python's JSON parser recurses per level: a RecursionError stopped every later run, for every file.
    (incoming(ws) / "deep.jsonl").write_text('{"text": "fine"}\n{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    (incoming(ws) / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    pd.DataFrame({"text": TEXTS}).to_csv(incoming(ws) / "good.csv", index=False)
    code, summary, _ = score(ws, capsys)
    assert code == 0 and summary["scored"] == ["good.csv"]
    assert sorted(summary["quarantined"]) == ["deep.json", "deep.jsonl"]
    assert reason(ws, "deep.jsonl") == (f"{incoming(ws) / 'deep.jsonl'}: rule file_readable failed: line 2 is not "
                                        "valid JSON (nested too deeply); expected one complete JSON object per line")
    assert "not valid JSON (nested too deeply)" in reason(ws, "deep.json")
    assert sorted(logged(ws)) == sorted(TEXTS)


def test_a_nul_byte_past_the_first_8_kb_is_a_row_error_not_a_cut_text(ws, capsys):
    # pandas' C parser cut the text at the NUL and the file was scored with it, without a word.
    rows = [f"review {i} " + "word " * 30 for i in range(200)]
    rows[150] = "before the nul \x00 after the nul"
    pd.DataFrame({"text": rows}).to_csv(incoming(ws) / "nul.csv", index=False)
    assert (incoming(ws) / "nul.csv").read_bytes().index(b"\x00") > 8192
    code, summary, _ = score(ws, capsys)
    assert code == 0 and summary["quarantined"] == ["nul.csv"] and logged(ws) == []
    assert reason(ws, "nul.csv") == (f"{incoming(ws) / 'nul.csv'}: rule file_readable failed: row 151 (line 152) "
                                     "holds a NUL byte: binary data, not text; expected a UTF-8 text file without "
                                     "NUL bytes")


@pytest.mark.parametrize("content, why", [
    ('{"a.csv": ', "Expecting value"),
    ("[]", "a JSON list"),
])
def test_a_broken_scored_json_stops_the_run_and_is_kept(ws, capsys, content, why):
    # Overwriting it would forget every file already logged: the next run would log them all again.
    record = ws.root / "data" / "production" / "scored.json"
    record.parent.mkdir(parents=True)
    record.write_text(content)
    pd.DataFrame({"text": TEXTS}).to_csv(incoming(ws) / "a.csv", index=False)
    code, _, err = score(ws, capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {record}: not a JSON object of scored files (") and why in err[0]
    assert err[0].endswith("restore it from a backup (without it, every file already logged would be logged again)")
    assert record.read_text() == content and logged(ws) == []
    assert (incoming(ws) / "a.csv").exists()


def during_model_load(monkeypatch, action) -> None:
    """Run `action` while the production model loads, i.e. after the folder was listed and settled,
    while the first file is being scored (as another process would, at any moment)."""
    import tasks.production.score as score_mod

    real = score_mod.load_production

    def load(cfg, paths):
        action()
        return real(cfg, paths)
    monkeypatch.setattr(score_mod, "load_production", load)


def test_a_file_renamed_away_during_the_run_is_gone_not_a_traceback(ws, capsys, monkeypatch):
    pd.DataFrame({"text": TEXTS[:2]}).to_csv(incoming(ws) / "a.csv", index=False)
    pd.DataFrame({"text": TEXTS[2:]}).to_csv(incoming(ws) / "b.csv", index=False)
    during_model_load(monkeypatch, lambda: (incoming(ws) / "b.csv").rename(incoming(ws) / "b.csv.part"))
    code, summary, _ = score(ws, capsys)
    assert code == 0 and summary["scored"] == ["a.csv"] and summary["gone"] == ["b.csv"]
    monkeypatch.undo()
    (incoming(ws) / "b.csv.part").rename(incoming(ws) / "b2.csv")  # its writer puts it back under a new name
    code, summary, _ = score(ws, capsys)
    assert code == 0 and summary["scored"] == ["b2.csv"]
    assert sorted(logged(ws)) == sorted(TEXTS)  # every row once


def test_a_file_written_to_after_the_settle_check_waits_for_the_next_run(ws, capsys, monkeypatch):
    # b.csv looked complete when the run began; its writer appended more while a.csv was scored.
    # Taken then, its first rows were logged and the rest quarantined as "changed after it was scored".
    pd.DataFrame({"text": TEXTS[:1]}).to_csv(incoming(ws) / "a.csv", index=False)
    pd.DataFrame({"text": TEXTS[1:2]}).to_csv(incoming(ws) / "b.csv", index=False)

    def append() -> None:
        with open(incoming(ws) / "b.csv", "a") as fh:
            fh.write(f"{TEXTS[2]}\n")
    during_model_load(monkeypatch, append)
    code, summary, _ = score(ws, capsys)
    assert code == 0 and summary["scored"] == ["a.csv"] and summary["pending"] == ["b.csv"]
    assert logged(ws) == TEXTS[:1]
    monkeypatch.undo()
    code, summary, _ = score(ws, capsys)
    assert code == 0 and summary["scored"] == ["b.csv"] and summary["quarantined"] == []
    assert sorted(logged(ws)) == sorted(TEXTS)  # the whole of b.csv, once


def test_a_second_score_run_at_the_same_time_stops_in_one_line(ws, capsys):
    # Two runs at once (an overlapping cron): one quarantined a file the other was reading
    # (FileNotFoundError) and each rewrote scored.json without the other's records.
    from tasks.production.score import score_lock

    pd.DataFrame({"text": TEXTS}).to_csv(incoming(ws) / "a.csv", index=False)
    lock = ws.root / "data" / "production" / ".score.lock"
    with score_lock(ws):  # the first run, still going
        code, _, err = score(ws, capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {lock}: another score run is running (pid ")
    assert err[0].endswith("kdistill score); this one is skipped")
    assert logged(ws) == [] and not lock.exists()
    code, summary, _ = score(ws, capsys)
    assert code == 0 and summary["scored"] == ["a.csv"]
