"""Reading raw tables (CSV, TSV, JSONL/JSON, Parquet) in bounded memory, with errors a user can act on.

`iter_table` yields chunks of at most `CHUNK_ROWS` rows with the columns `text` (and `label`), indexed
by row number minus one (for JSONL: line number minus one), so a message can name "row 123 456"
however deep into a file the problem sits, while memory stays at one chunk. `read_table` gathers
the chunks. Files are only ever read.

Every error is a `DataError` of one line: `FILE: rule RULE failed: WHAT; expected WHAT`.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.infra.errors import DataError

CHUNK_ROWS = 20_000
# Values a CSV writer uses for "nothing here": read as missing, never as the text "NaN".
NA_MARKERS = ["", "nan", "NaN", "NA", "N/A", "n/a", "NULL", "null", "None", "<NA>", "#N/A"]
DELIMITERS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
MAGIC = {b"\x1f\x8b": "gzip-compressed", b"PK\x03\x04": "a zip archive", b"PAR1": "a Parquet file"}
KINDS = {".csv": "CSV", ".tsv": "TSV", ".txt": "TSV", ".jsonl": "JSONL", ".json": "JSON", ".parquet": "Parquet"}


def file_error(path: str | Path, rule: str, problem: str, expected: str) -> DataError:
    """The one-line error every check of this module raises."""
    return DataError(f"{path}: rule {rule} failed: {problem}; expected {expected}")


def shorten(value: object, limit: int = 40) -> str:
    """`value` as a string of at most `limit` characters (`...` marks a cut): what a message may echo
    of a file's or a request's content, however long the line it came from."""
    text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def lone_surrogate(text: str) -> int | None:
    """Where `text` holds a lone UTF-16 surrogate (JSON allows `"\\ud800"`), or None when it is valid
    Unicode: no tokenizer can encode such a string."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


def normalise_label(value: object) -> object:
    """A raw label as the label it means: 1.0 (from a float column) and "1" (from CSV) are both 1."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return value.strip() if isinstance(value, str) else value


def label_kind(value: object) -> str | None:
    """'int', 'str', 'fraction' (a non-integer number, as 0.5 or "0.5": a score, not a class),
    'other' (a list, ...), or None for a missing label."""
    if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return None
    norm = normalise_label(value)
    if isinstance(norm, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return "int"
    if isinstance(norm, (float, np.floating)) or (isinstance(norm, str) and _is_fraction(norm)):
        return "fraction"
    return "str" if isinstance(norm, (str, bool, np.bool_)) else "other"


def _is_fraction(text: str) -> bool:
    """"0.5", "-1.25", "3e-2": a number that is not a whole one ("1.0" stays a name, as before)."""
    try:
        number = float(text)
    except ValueError:
        return False
    return not number.is_integer() and text.strip().lower() not in ("nan", "inf", "-inf", "infinity")


# Characters that show nothing: a text made of them and whitespace is blank (str.strip keeps them).
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
BLANK_REGEX = rf"^[\s{INVISIBLE}]*$"


_DROP_INVISIBLE = str.maketrans("", "", INVISIBLE)


def is_blank(text: str) -> bool:
    """True for a text of whitespace and invisible characters (zero-width spaces, joiners, BOMs) only."""
    return not text.translate(_DROP_INVISIBLE).strip()


def iter_table(path: str | Path, text_column: str, label_column: str | None,
               chunk_rows: int | None = None) -> Iterator[pd.DataFrame]:
    """Stream a file as chunks with columns `text` (and `label`), raw values as read.

    Args:
        path: a .csv, .tsv/.txt, .jsonl, .json or .parquet file.
        text_column: the file's column holding the text.
        label_column: the file's column holding the label, or None for unlabelled text.
        chunk_rows: rows per chunk (default `CHUNK_ROWS`); memory use is bounded by one chunk.

    Raises:
        DataError: the file is missing, empty, binary, not UTF-8, malformed, or lacks a column.
    """
    path, chunk_rows = Path(path), chunk_rows or CHUNK_ROWS
    _check_file(path)
    wanted = {text_column: "text", **({label_column: "label"} if label_column else {})}
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            yield from _parquet_chunks(path, wanted, chunk_rows)
        elif suffix in (".jsonl", ".json"):
            yield from _json_chunks(path, wanted, chunk_rows)
        else:
            yield from _csv_chunks(path, wanted, chunk_rows)
    except UnicodeDecodeError:
        raise _encoding_error(path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as err:
        if isinstance(err, DataError):
            raise
        first = shorten(str(err).strip().splitlines()[0], 120) if str(err).strip() else type(err).__name__
        raise file_error(path, "file_readable", f"cannot be read as {KINDS[suffix]} ({first})",
                         f"a well-formed {KINDS[suffix]} file") from None


def read_table(path: str | Path, text_column: str, label_column: str | None) -> pd.DataFrame:
    """The whole file as one frame with columns `text` (and `label`); see `iter_table`.

    Raises:
        DataError: as `iter_table`, and when the file has a header but no rows.
    """
    frame = pd.concat(list(iter_table(path, text_column, label_column)))
    if frame.empty:
        raise no_rows_error(path)
    return frame


def no_rows_error(path: str | Path) -> DataError:
    """A file with columns but not a single row (a header only)."""
    return file_error(path, "min_rows", "no data rows (a header only?)", "at least one row under the header")


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise file_error(path, "file_readable", "file not found", "an existing file")
    if path.suffix.lower() not in KINDS:
        raise file_error(path, "file_readable", f"unknown file type '{path.suffix}'",
                         ".csv, .tsv, .txt, .jsonl, .json or .parquet")
    size = path.stat().st_size
    if size == 0:
        raise file_error(path, "file_readable", "the file is empty (0 bytes)", "a header line and rows")
    if path.suffix.lower() == ".parquet":
        return
    with open(path, "rb") as fh:
        head = fh.read(8192)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise file_error(path, "utf8", "the file is UTF-16 encoded", "UTF-8 text (save the file as UTF-8)")
    for magic, what in MAGIC.items():
        if head.startswith(magic):
            raise file_error(path, "file_readable", f"the file is {what}, not {KINDS[path.suffix.lower()]} text",
                             f"a plain UTF-8 {KINDS[path.suffix.lower()]} file")
    if b"\x00" in head:
        at = head.index(b"\x00")
        raise file_error(path, "file_readable", f"byte {at} is a NUL byte: this is a binary file, not "
                         f"{KINDS[path.suffix.lower()]} text", "a UTF-8 text file")


def _encoding_error(path: Path) -> DataError:
    """Find the first byte that is not UTF-8, in 64 KB blocks, and name its line."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            pending = len(decoder.getstate()[0])  # bytes of a character split across blocks
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                at = offset - pending + err.start
                line += block[:max(0, at - offset)].count(b"\n")
                bad = (block[at - offset:at - offset + 1] if at >= offset else b"?").hex()
                return file_error(path, "utf8", f"line {line}: byte {at} (0x{bad}) is not UTF-8 ({err.reason})",
                                  "UTF-8 text (save the file as UTF-8)")
            offset, line = offset + len(block), line + block.count(b"\n")
    return file_error(path, "utf8", "the last character is cut off", "UTF-8 text")


def _csv_chunks(path: Path, wanted: dict[str, str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    sep = DELIMITERS[path.suffix.lower()]
    options = {"sep": sep, "encoding": "utf-8-sig", "dtype": str}
    _check_unique_names(path, _raw_header(path, sep))
    header = pd.read_csv(path, nrows=0, **options).columns
    missing = [c for c in wanted if c not in header]
    if missing:
        raise _missing_column(path, missing[0], list(map(str, header)), wanted, sep)
    _check_row_widths(path, sep)
    # index_col=False: never an implicit index. Without it, a file whose every row has the same
    # extra unquoted commas turns its leading fields into an index and keeps only the last segment
    # of each text. The row-width check above makes any row wider than the header an error first.
    reader = pd.read_csv(path, keep_default_na=False, na_values=NA_MARKERS, chunksize=chunk_rows, index_col=False,
                         **options)
    for chunk in reader:
        yield chunk[list(wanted)].rename(columns=wanted)


def _raw_header(path: Path, sep: str) -> list[str]:
    """The header's names as written (pandas renames a repeated `text` to `text.1` without a word)."""
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with open(path, encoding="utf-8-sig", newline="") as fh:
        try:
            return next(csv.reader(fh, delimiter=sep), [])
        except csv.Error:
            return []  # malformed quoting: pandas' own reading names the line


def _check_unique_names(path: Path, names: list[str]) -> None:
    """A column name given twice is an error: which of the two holds the text is anyone's guess."""
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name in seen:
            raise file_error(path, "schema_columns", f"column {shorten(name)!r} appears twice in the header "
                             f"(columns {seen[name]} and {position})", "each column name once")
        seen[name] = position


def _check_row_widths(path: Path, sep: str) -> None:
    """Fail on the first row with more fields than the header (an unquoted delimiter inside a text),
    or with a NUL byte in it.

    pandas cannot be trusted with either: a wide first row becomes an index (or, with index_col=False,
    loses its extra fields with only a warning), and so does a wide row that opens a later chunk;
    a text is cut short at a NUL byte without a word.
    One streamed pass of the csv module (about half of pandas' own reading time) settles it.
    """
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # texts of megabytes are the text rules' job
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=sep)
        try:
            width = len(next(reader, []))
            rows = (row for row in reader if row)  # blank lines are no rows, as for pandas
            for number, row in enumerate(rows, start=1):
                # pandas' C parser silently cuts a text at a NUL byte; the check at the file's start sees 8 KB.
                if "\x00" in "".join(row):
                    raise file_error(path, "file_readable", f"row {number} (line {reader.line_num}) holds a NUL "
                                     "byte: binary data, not text", "a UTF-8 text file without NUL bytes")
                if len(row) > width:
                    what = "tab" if sep == "\t" else repr(sep)
                    raise file_error(path, "row_fields", f"row {number} (line {reader.line_num}) has {len(row)} "
                                     f"fields but the header has {width}: an unquoted {what} inside a text?",
                                     f"at most {width} fields a row (a text with a {what} in double quotes)")
        except csv.Error:
            return  # malformed quoting: pandas' own reading names the line


def _missing_column(path: Path, column: str, found: list[str], wanted: dict[str, str], sep: str | None) -> DataError:
    hint = ""
    if sep and len(found) == 1:
        other = next((d for d in (",", "\t", ";", "|") if d != sep and d in found[0]), None)
        if other:
            hint = f": the header looks {other!r}-separated, but {path.suffix} is read as {sep!r}-separated"
    shown = ", ".join(repr(shorten(c)) for c in found[:8]) + (", ..." if len(found) > 8 else "")
    names = " and ".join(repr(c) for c in wanted)
    return file_error(path, "schema_columns", f"no column {column!r} (found {shown or 'none'}{hint})",
                      f"columns {names} (see ingest.text_column, ingest.label_column)")


def _json_chunks(path: Path, wanted: dict[str, str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    with open(path, encoding="utf-8-sig") as fh:
        first = fh.read(1024).lstrip()[:1]
    if first == "[":  # a JSON array: read whole (it cannot be streamed line by line)
        with open(path, encoding="utf-8-sig") as fh:
            try:
                records = json.load(fh)
            except (RecursionError, ValueError) as err:
                raise file_error(path, "file_readable", f"not valid JSON ({_json_problem(err)})",
                                 "a JSON array of objects, or one JSON object per line") from None
        yield from _records_to_chunks(path, list(enumerate(records, start=1)), wanted, chunk_rows)
        return
    with open(path, encoding="utf-8-sig") as fh:
        batch: list[tuple[int, object]] = []
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                batch.append((lineno, json.loads(line)))
            except (RecursionError, ValueError) as err:  # JSONDecodeError is a ValueError
                last = not line.endswith("\n") and fh.readline() == ""
                cut = ", the last line is cut off" if last else ""
                problem = _json_problem(err, with_line=False)
                raise file_error(path, "file_readable", f"line {lineno} is not valid JSON ({problem}{cut})",
                                 "one complete JSON object per line") from None
            if len(batch) == chunk_rows:
                yield from _records_to_chunks(path, batch, wanted, chunk_rows)
                batch = []
        yield from _records_to_chunks(path, batch, wanted, chunk_rows, final=True)


def _json_problem(err: Exception, with_line: bool = True) -> str:
    """What the JSON parser found wrong, in a few words (never a traceback: the file is the user's);
    `with_line` False for a JSONL line, which the message names itself."""
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg}: line {err.lineno} column {err.colno}" if with_line else f"{err.msg}: column {err.colno}"
    if isinstance(err, RecursionError):  # `[[[[...` thousands deep: Python's parser recurses per level
        return "nested too deeply"
    return shorten(str(err).split(";")[0], 80)  # e.g. an integer of more than 4300 digits


def _records_to_chunks(path: Path, records: list[tuple[int, object]], wanted: dict[str, str], chunk_rows: int,
                       final: bool = False) -> Iterator[pd.DataFrame]:
    for start in range(0, max(len(records), 1 if final else 0), chunk_rows):
        part = records[start:start + chunk_rows]
        for lineno, record in part:
            if not isinstance(record, dict):
                raise file_error(path, "file_readable", f"line {lineno} is a JSON {type(record).__name__}",
                                 "one JSON object per line")
        for column in wanted:
            if part and not any(column in r for _, r in part):
                raise _missing_column(path, column, sorted({k for _, r in part for k in r}), wanted, None)
        # object dtype: keep 1 and "1" as they are, for the label_kind rule to judge.
        data = {new: pd.Series([r.get(old) for _, r in part], dtype=object) for old, new in wanted.items()}
        yield pd.DataFrame(data).set_axis(pd.Index([n - 1 for n, _ in part]), axis=0)


def _parquet_chunks(path: Path, wanted: dict[str, str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise file_error(path, "file_readable", f"cannot be read as Parquet ({str(err).splitlines()[0]})",
                         "a Parquet file") from None
    schema = file.schema_arrow
    _check_unique_names(path, schema.names)
    missing = [c for c in wanted if c not in schema.names]
    if missing:
        raise _missing_column(path, missing[0], schema.names, wanted, None)
    for column, role in wanted.items():
        kind = schema.field(column).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        ok = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
        if role == "label":
            ok = ok or pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        if not ok:
            expected = "string" if role == "text" else "integers or strings"
            raise file_error(path, "schema_types", f"column {column!r} has type {kind}", f"{role} as {expected}")
    offset = 0
    for batch in file.iter_batches(batch_size=chunk_rows, columns=list(wanted)):
        chunk = batch.to_pandas().rename(columns=wanted).astype(object)
        yield chunk.set_axis(pd.RangeIndex(offset, offset + len(chunk)), axis=0)
        offset += len(chunk)
    if offset == 0:
        yield pd.DataFrame({new: pd.Series([], dtype=object) for new in wanted.values()})


def label_namer(labels: list[str]) -> Callable[[object], object]:
    """A map of a raw label (a name, or a class id as 1, 1.0 or "1") to its name in `labels`, normalised as ingest
    reads labels (`normalise_label`: "positive " is "positive"); any other value is kept for validation to refuse
    (scoring's labelled files and retraining's labelled batches)."""
    def name(value: object) -> object:
        norm = normalise_label(value)
        if type(norm) is int:
            return labels[norm] if 0 <= norm < len(labels) else value
        return norm if isinstance(norm, str) else value
    return name
