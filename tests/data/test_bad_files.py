"""Bad input gets a clear error and loses nothing.

Each broken file in tests/data/bad/ (made by make_bad_files.py) goes through the command line,
`kdistill ingest`, into a project that already holds a good processed dataset and a model. Each
must give exactly one line on stderr (file, row or column, rule, what was expected) and exit 2,
while data/processed/, models/ and the file itself stay byte for byte as they were. Big files are
generated here: 1 MB texts, and a 200 MB file that must fail in bounded memory. Last, a stage
killed mid-write leaves the previous output whole.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tasks.cli import main
from tasks.infra.storage import hash_dir, hash_file

REPO = Path(__file__).resolve().parents[2]
BAD = Path(__file__).resolve().parent / "bad"
LABELS = ["-S", "ingest.label_names=[negative, positive]"]
EXPECTED_COLUMNS = "expected columns 'text' and 'label' (see ingest.text_column, ingest.label_column)"

# file, extra overrides, the line after "error: FILE: ".
CASES = [
    ("empty.csv", [], "rule file_readable failed: the file is empty (0 bytes); expected a header line and rows"),
    ("header_only.csv", [], "rule min_rows failed: no data rows (a header only?); expected at least one row under "
     "the header"),
    ("missing_text_column.csv", [], f"rule schema_columns failed: no column 'text' (found 'review', 'label'); "
     f"{EXPECTED_COLUMNS}"),
    ("missing_label_column.csv", [], f"rule schema_columns failed: no column 'label' (found 'text', 'sentiment'); "
     f"{EXPECTED_COLUMNS}"),
    ("duplicate_header.csv", [], "rule schema_columns failed: column 'text' appears twice in the header (columns 1 "
     "and 3); expected each column name once"),
    ("duplicate_columns.parquet", [], "rule schema_columns failed: column 'text' appears twice in the header "
     "(columns 1 and 3); expected each column name once"),
    ("long_header.csv", [], "rule schema_columns failed: no column 'text' (found 'review review review review "
     "review re...', 'label'); expected columns 'text' and 'label' (see ingest.text_column, ingest.label_column)"),
    ("wrong_delimiter.csv", [], "rule schema_columns failed: no column 'text' (found 'text;label': the header looks "
     f"';'-separated, but .csv is read as ','-separated); {EXPECTED_COLUMNS}"),
    ("not_utf8.csv", [], "rule utf8 failed: line 6: byte 195 (0xe8) is not UTF-8 (invalid continuation byte); "
     "expected UTF-8 text (save the file as UTF-8)"),
    ("utf16.csv", [], "rule utf8 failed: the file is UTF-16 encoded; expected UTF-8 text (save the file as UTF-8)"),
    ("binary_junk.csv", [], "rule file_readable failed: byte 8 is a NUL byte: this is a binary file, not CSV text; "
     "expected a UTF-8 text file"),
    ("gzipped.csv", [], "rule file_readable failed: the file is gzip-compressed, not CSV text; expected a plain "
     "UTF-8 CSV file"),
    ("nan_texts.csv", [], "rule text_not_null failed: 2 rows with no text in column 'text' (empty, or a marker such "
     "as NaN) (e.g. row 4: nan, row 9: nan); expected a text in every row"),
    ("nan_texts.jsonl", [], "rule text_not_null failed: 2 rows with no text in column 'text' (empty, or a marker "
     "such as NaN) (e.g. row 5: None, row 11: nan); expected a text in every row"),
    ("blank_texts.csv", [], "rule text_not_blank failed: 1 row whose 'text' is blank (whitespace or invisible "
     "characters only) (e.g. row 6: '   '); expected a non-blank text"),
    ("zero_width_texts.csv", [], "rule text_not_blank failed: 1 row whose 'text' is blank (whitespace or invisible "
     "characters only) (e.g. row 8: '\\u200b\\u200b'); expected a non-blank text"),
    ("fractional_labels.csv", [], "rule label_not_fraction failed: 40 rows whose 'label' is a fractional number (a "
     "score, not a class) (e.g. row 1: '0.15', row 2: '0.25', row 3: '0.35'); expected class names or integer class "
     "ids (turn scores into classes first, e.g. score > 0)"),
    ("lone_surrogate.jsonl", [], "rule text_unicode failed: 1 row whose 'text' holds a lone UTF-16 surrogate (not "
     "valid Unicode, shown as \ufffd) (e.g. row 3: 'review number 2 of a boring \ufffd film'); expected valid "
     "Unicode text (a JSON \\ud800-style escape without its pair?)"),
    ("text_not_string.jsonl", [], "rule text_is_string failed: 2 rows whose 'text' is not a string (e.g. row 2: "
     "12345, row 3: 12345); expected text as a string"),
    ("labels_outside_set.csv", LABELS, "rule label_in_set failed: 2 rows whose 'label' is not in the label set "
     "(e.g. row 7: 'neutral', row 12: 'neutral'); expected one of negative, positive (ingest.label_names)"),
    ("missing_labels.csv", [], "rule label_not_null failed: 1 row with no label in column 'label' (e.g. row 13: "
     "nan); expected a label in every row"),
    ("mixed_labels.csv", [], "rule label_kind failed: 2 rows whose 'label' is not a string, unlike most labels "
     "(e.g. row 3: '0', row 8: '1'); expected labels of one kind, all integers or all strings"),
    ("mixed_labels.jsonl", [], "rule label_kind failed: 1 row whose 'label' is not an integer, unlike most labels "
     "(e.g. row 6: 'positive'); expected labels of one kind, all integers or all strings"),
    ("label_case.csv", [], "rule label_spelling failed: 1 row whose 'label' differs from another label only in "
     "letter case (e.g. row 10: 'Positive'); expected one spelling per label"),
    ("single_class.csv", [], "rule min_classes failed: 1 distinct label(s) in 'label'; expected at least 2 classes"),
    ("too_few_rows.csv", [], "rule min_rows failed: 10 rows; expected at least ingest.min_rows=20"),
    ("duplicated_rows.csv", [], "rule duplicates failed: 20 rows repeating the text of an earlier row (e.g. row 21: "
     "'review number 0 of a boring film', row 22: 'review number 1 of a wonderful film', row 23: 'review number 2 "
     "of a boring film'); expected at most validate.max_duplicate_share=0.05 of rows (ingest drops repeats below "
     "that)"),
    ("ragged_rows.csv", [], "rule row_fields failed: row 15 (line 16) has 3 fields but the header has 2: an "
     "unquoted ',' inside a text?; expected at most 2 fields a row (a text with a ',' in double quotes)"),
    ("extra_commas.csv", [], "rule row_fields failed: row 1 (line 2) has 4 fields but the header has 2: an "
     "unquoted ',' inside a text?; expected at most 2 fields a row (a text with a ',' in double quotes)"),
    ("unbalanced_quote.csv", [], "rule file_readable failed: cannot be read as CSV (Error tokenizing data. C error: "
     "EOF inside string starting at row 11); expected a well-formed CSV file"),
    ("truncated.jsonl", [], "rule file_readable failed: line 41 is not valid JSON (Unterminated string starting at: "
     "column 10, the last line is cut off); expected one complete JSON object per line"),
    ("wrong_types.parquet", [], "rule schema_types failed: column 'text' has type int64; expected text as string"),
    ("not_parquet.parquet", [], "rule file_readable failed: cannot be read as Parquet (Parquet magic bytes not "
     "found in footer. Either the file is corrupted or this is not a parquet file.); expected a Parquet file"),
]


def good_csv(path: Path, n: int = 60, offset: int = 0) -> Path:
    pd.DataFrame({"text": [f"a good review number {i + offset}" for i in range(n)],
                  "label": ["positive" if i % 2 else "negative" for i in range(n)]}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_dir: Path) -> Path:
    """A project that ingested a good file and holds a (stand-in) trained model."""
    root = tmp_path_factory.mktemp("project")
    code = main(["--params", str(REPO / "params.yaml"), "--root", str(root), "-q", "-S", "ingest.source=files",
                 "-S", f"ingest.files.train={good_csv(root / 'good.csv')}", "ingest"])
    assert code == 0
    (root / "models" / "teacher").mkdir(parents=True)
    (root / "models" / "teacher" / "config.json").write_text("{}")
    return root


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "project"))


def kdistill(root: Path, tiny_teacher_dir: Path, *args: str) -> int:
    return main(["--params", str(REPO / "params.yaml"), "--root", str(root), "-q",
                 "-S", f"teacher.model={tiny_teacher_dir}", *args])


def state(root: Path) -> tuple[str, str, list[str]]:
    """What must not change: the processed data, the models, and what else lies beside data/processed."""
    beside = sorted(p.name for p in (root / "data").iterdir())
    return hash_dir(root / "data" / "processed"), hash_dir(root / "models"), beside


def assert_one_line_error(err: str, expected: str) -> None:
    assert err.splitlines() == [expected], err
    assert "Traceback" not in err


@pytest.mark.parametrize(("name", "extra", "line"), CASES, ids=[c[0] for c in CASES])
def test_bad_file_gives_one_line_and_loses_nothing(project: Path, tiny_teacher_dir: Path, capsys, name: str,
                                                   extra: list[str], line: str) -> None:
    path = BAD / name
    raw, before = hash_file(path), state(project)

    code = kdistill(project, tiny_teacher_dir, "-S", "ingest.source=files", "-S", f"ingest.files.train={path}",
                    *extra, "ingest")

    assert code == 2
    assert_one_line_error(capsys.readouterr().err, f"error: {path}: {line}")
    assert state(project) == before and hash_file(path) == raw


def test_one_megabyte_texts(project: Path, tiny_teacher_dir: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "huge_texts.csv"
    texts = [f"a review number {i}" for i in range(40)]
    texts[2] = texts[16] = "lorem " * 166_667  # 1,000,002 characters each
    pd.DataFrame({"text": texts, "label": ["negative", "positive"] * 20}).to_csv(path, index=False)
    before = state(project)

    files = ["-S", "ingest.source=files", "-S", f"ingest.files.train={path}"]
    code = kdistill(project, tiny_teacher_dir, *files, "ingest")

    assert code == 2 and state(project) == before
    assert_one_line_error(capsys.readouterr().err, (
        f"error: {path}: rule text_max_chars failed: 2 rows whose 'text' is longer than validate.max_text_chars "
        "(e.g. row 3: 1000002 characters, row 17: 1000002 characters); expected at most 20000 characters (a longer "
        "text is most often a stray quote that swallowed rows)"))


def test_leakage_between_train_and_test_files(project: Path, tiny_teacher_dir: Path, capsys) -> None:
    # Given files that share texts: ingest stops before writing, so data/processed/ is untouched.
    train, test = BAD / "leak_train.csv", BAD / "leak_test.csv"
    files = ["-S", "ingest.source=files", "-S", f"ingest.files.train={train}", "-S", f"ingest.files.test={test}"]
    before = state(project)

    code = kdistill(project, tiny_teacher_dir, *files, "ingest")

    assert code == 2 and state(project) == before
    err = capsys.readouterr().err
    assert re.fullmatch(
        rf"error: {re.escape(str(test))}: rule no_leakage failed: 10 rows whose text is also in train "
        r"\(e\.g\. row \d+: '[^']+', row \d+: '[^']+', row \d+: '[^']+'\); expected no text shared with the "
        r"train file\n", err), err


MEASURE = """
import json, resource, sys
import tasks.ingest, tasks.quality.doors  # what ingest imports, before the baseline
from tasks.cli import main
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
code = main(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"code": code, "growth_kb": peak - base, "gx": "great_expectations" in sys.modules}))
"""


def test_huge_file_fails_in_bounded_memory(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    rows, filler = 1_000_000, "and the plot goes on " * 8  # ~200 bytes a row
    path = tmp_path / "huge.csv"
    with open(path, "w") as fh:
        fh.write("text,label\n")
        for start in range(0, rows, 10_000):
            block = [f"review {i} {filler},{'positive' if i % 2 else 'negative'}\n"
                     for i in range(start, start + 10_000)]
            if start + 10_000 == rows:
                block[-10] = "   ,positive\n"  # row 999991, in the last chunk
            fh.write("".join(block))
    size = path.stat().st_size
    assert size > 190e6

    out = subprocess.run([sys.executable, "-c", MEASURE, "--params", str(REPO / "params.yaml"), "--root",
                          str(tmp_path), "-q", "-S", f"teacher.model={tiny_teacher_dir}", "-S", "ingest.source=files",
                          "-S", f"ingest.files.train={path}", "ingest"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    path.unlink()

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: {path}: rule text_not_blank failed: 1 row among rows 980001-1000000 whose 'text' is blank "
        "(whitespace or invisible characters only) (e.g. row 999991: '   '); expected a non-blank text")
    # Loading the file would take well over its 200 MB; streaming it takes a few chunks. And the
    # scan failed it without paying for Great Expectations' import.
    assert result["growth_kb"] * 1024 < size / 4, result
    assert result["gx"] is False
    assert not (tmp_path / "data" / "processed").exists()


KILL_MID_WRITE = """
import io, sys, time
import pandas as pd
marker, original = sys.argv[1], pd.DataFrame.to_parquet

def slow_to_parquet(self, path, *args, **kwargs):
    buffer = io.BytesIO()
    original(self, buffer, *args, **kwargs)
    data = buffer.getvalue()
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        open(marker, "w").close()  # half written: the test kills us here
        time.sleep(120)
        fh.write(data[len(data) // 2:])

pd.DataFrame.to_parquet = slow_to_parquet
from tasks.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_stage_killed_mid_write_leaves_the_previous_output(project: Path, tiny_teacher_dir: Path) -> None:
    processed, marker = project / "data" / "processed", project / "half-written"
    before = hash_dir(processed)
    new = good_csv(project / "new.csv", 80, 1000)
    args = ["--params", str(REPO / "params.yaml"), "--root", str(project), "-q",
            "-S", f"teacher.model={tiny_teacher_dir}", "-S", "ingest.source=files",
            "-S", f"ingest.files.train={new}", "ingest"]
    proc = subprocess.Popen([sys.executable, "-c", KILL_MID_WRITE, str(marker), *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"the stage never started writing (exit code {proc.poll()})"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()

    # The previous version, whole, under the final name; the half-written file only in a temporary.
    assert hash_dir(processed) == before
    (stale,) = (project / "data").glob(".processed.tmp-*")
    partial = next(stale.glob("*.parquet"))
    with pytest.raises(Exception):  # noqa: B017 - any parquet error: the file is cut in half
        pd.read_parquet(partial)

    # The next run replaces the output and clears what the killed one left.
    assert main(args) == 0
    assert hash_dir(processed) != before and not list((project / "data").glob(".processed.tmp-*"))
    assert len(pd.read_parquet(processed / "train.parquet")) > 0
