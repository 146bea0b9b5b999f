"""score: label the new files in data/incoming/ with the production model; append them to the log.

Each new file (CSV, TSV, JSONL or Parquet; a label column optional) is read, validated
(`tasks.validate.validate_batch`) and either quarantined (moved to `data/incoming/quarantine/` with a
`.reason.json` beside it) or scored by `models/production/` and written to the production log:
`data/production/date=YYYY-MM-DD/part-<file sha256>.parquet`, one part per file, written atomically.

Only complete files: a file is taken once its size and modification time held still for
`score.settle_seconds` (a file younger than that is watched that long, and left for the next run if
it changed meanwhile), it must not have changed since then when its turn comes (a run scoring many
files takes a while), and it must not change while it is read. Safest for a writer is to write
`name.csv.part` (or `.name.csv`, or `name.tmp`: all ignored) and rename it when done. A file that is
renamed or deleted meanwhile is simply gone; one score run at a time holds
`data/production/.score.lock`, so two runs never race for the same file.

Exactly once, even across crashes: a file is recorded in `data/production/scored.json` (keyed by
`<sha256>:<name>`) only after its part is in place. On a restart a file whose part exists (found by
its name, the file's hash) but is not recorded is recorded without being scored again; a crash
before the part was renamed into place left nothing behind but a temporary, removed on the next run.
The same bytes under another name are recorded as a duplicate and never logged twice; a file whose
content changed after it was logged is quarantined, never logged again.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.infra.config import Config
from tasks.infra.errors import DataError, UserError
from tasks.infra.storage import Paths, atomic_path, hash_file, read_json, remove_stale_temps, stage_log, write_json
from tasks.infra.tables import read_table, shorten

log = logging.getLogger("kd")

SUFFIXES = {".csv", ".tsv", ".txt", ".jsonl", ".json", ".parquet"}


def production_log_dir(paths: Paths) -> Path:
    """data/production/: the prediction log, one `date=YYYY-MM-DD/part-*.parquet` per scored batch."""
    return paths.root / "data" / "production"


def scored_path(paths: Paths) -> Path:
    """data/production/scored.json: the files already scored, keyed by `<sha256>:<name>`."""
    return production_log_dir(paths) / "scored.json"


class ScoreRunning(UserError):
    """Another `kdistill score` run holds data/production/.score.lock: this one is skipped."""


@contextlib.contextmanager
def score_lock(paths: Paths) -> Iterator[None]:
    """Hold data/production/.score.lock for a whole score run: one at a time per workspace.

    Two runs at once (an overlapping cron) would read the same files: one moves a bad file to
    quarantine while the other reads it, and each rewrites scored.json without the other's records.

    Raises:
        ScoreRunning: another run holds it (the message names its pid and start).
    """
    from tasks.lifecycle.registry import file_lock  # the workspace's one flock helper (registry and cycle locks)

    path = production_log_dir(paths) / ".score.lock"
    with file_lock(path, "kdistill score", 0.0) as holder:
        if holder:
            raise ScoreRunning(f"{path}: another score run is running ({holder}); this one is skipped")
        yield


def read_record(paths: Paths) -> dict:
    """scored.json's records ({} before the first run).

    Raises:
        DataError: the file is not a JSON object of records; it is never overwritten then, since
            without it every file already logged would be logged again.
    """
    path = scored_path(paths)
    if not path.is_file():
        return {}
    try:
        record = read_json(path)
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        record, why = None, shorten(err, 80)
    else:
        why = f"a JSON {type(record).__name__}"
    if not isinstance(record, dict) or not all(isinstance(e, dict) for e in record.values()):
        raise DataError(f"{path}: not a JSON object of scored files ({why}); restore it from a backup (without it, "
                        "every file already logged would be logged again)")
    return record


@dataclass
class ProductionModel:
    """The production model loaded once: its tokenizer, serving predictor, version and labels."""

    tokenizer: object
    predictor: object
    labels: list[str]
    version: int | None  # models/registry.json's `production`
    model_hash: str  # tasks.lifecycle.registry.model_hash of models/production/
    max_length: int

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, cut at `max_length` (raises on text the tokenizer cannot take)."""
        from tasks.core.data import tokenize

        return tokenize(self.tokenizer, texts, self.max_length)

    def predict(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities float32 [N, C] for `texts`, in order."""
        return self.predict_ids(self.encode(texts), batch_size)

    def predict_ids(self, ids: list[list[int]], batch_size: int = 64) -> np.ndarray:
        """Class probabilities float32 [N, C] for texts already encoded by `encode`, in order."""
        from tasks.core.data import TokenDataset
        from tasks.core.predict import softmax
        from tasks.production.export import predict_dataset

        if not ids:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return softmax(predict_dataset(self.predictor, TokenDataset(ids), self.tokenizer.pad_token_id, batch_size))


def load_production(cfg: Config, paths: Paths) -> ProductionModel:
    """Load models/production/ with the serving variant of `inference.variant`.

    Raises:
        DataError: there is no production model yet.
    """
    from tasks.production.export import load_predictor, resolve_variant
    from tasks.infra.models import check_max_length, load_tokenizer
    from tasks.lifecycle.registry import model_hash, production_dir, read_registry

    folder = production_dir(paths)
    if not (folder / "config.json").is_file():
        raise DataError(f"{folder}: no production model; run the promote stage first")
    check_max_length(cfg.base.max_length, str(folder), "models/production")
    variant = resolve_variant(cfg.inference.variant, folder, paths.reports / "bench" / "serving.json")
    predictor = load_predictor(folder, variant, cfg.inference.threads)
    return ProductionModel(load_tokenizer(str(folder), key="models/production"), predictor, list(predictor.labels),
                           read_registry(paths).get("production"), model_hash(folder),
                           cfg.base.max_length)


def log_rows(model: ProductionModel, texts: list[str], probs: np.ndarray, source: str,
             labels: list | None = None, time: datetime.datetime | None = None) -> pd.DataFrame:
    """The production-log rows of one scored batch.

    Columns: time (UTC), text, prediction, confidence, `prob_<label>` per label, model_version,
    model_hash, source, label (the true label, or None).
    """
    time = time or datetime.datetime.now(datetime.timezone.utc)
    frame = pd.DataFrame({"time": pd.Series([time] * len(texts), dtype="datetime64[us, UTC]"), "text": texts,
                          "prediction": [model.labels[i] for i in probs.argmax(-1)],
                          "confidence": probs.max(-1).astype("float64")})
    for i, name in enumerate(model.labels):
        frame[f"prob_{name}"] = probs[:, i].astype("float64")
    frame["model_version"] = pd.Series([model.version] * len(texts), dtype="Int64")
    frame["model_hash"], frame["source"] = model.model_hash, source
    frame["label"] = pd.Series(labels if labels is not None else [None] * len(texts), dtype="string")
    return frame


def write_part(paths: Paths, frame: pd.DataFrame, part_id: str, day: datetime.date) -> Path:
    """Write rows as `data/production/date=DAY/part-<part_id>.parquet`, atomically; returns the path."""
    target = production_log_dir(paths) / f"date={day.isoformat()}" / f"part-{part_id}.parquet"
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)
    return target


def find_part(paths: Paths, part_id: str) -> Path | None:
    """The part a previous run wrote for `part_id` (a file's sha256), if any."""
    return next(iter(production_log_dir(paths).glob(f"date=*/part-{part_id}.parquet")), None)


def read_batch(path: Path, cfg: Config) -> tuple[pd.DataFrame, bool]:
    """A new file as `text` (and `label` when the file has the label column); returns (frame, labelled)."""
    sc = cfg.score
    try:
        return read_table(path, sc.text_column, sc.label_column), True
    except DataError as err:
        if "schema_columns" not in str(err) or f"no column {sc.label_column!r}" not in str(err):
            raise
    return read_table(path, sc.text_column, None), False


def quarantine(path: Path, incoming: Path, reasons: list[str], report: dict | None = None) -> Path | None:
    """Move a bad file to incoming/quarantine/ with `<name>.reason.json` beside it; returns its new path,
    or None when the file was gone before it could be moved (renamed or deleted by its owner).

    A name already taken there (an earlier bad file of the same name) is never overwritten: this file
    then becomes `<stem>.<UTC time>-<sha256[:8]><suffix>`, with its own `.reason.json`.
    """
    folder = incoming / "quarantine"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        target = _free_name(folder, path)
    except FileNotFoundError:
        return None
    reason = folder / f"{target.name}.reason.json"
    write_json(reason, {
        "file": path.name, "quarantined_as": target.name,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "errors": reasons, "validation": report})
    try:
        shutil.move(str(path), target)
    except FileNotFoundError:
        reason.unlink(missing_ok=True)
        log.warning("[score] %s was gone before it could be quarantined", path.name)
        return None
    log.warning("[score] quarantined %s%s: %s", path.name, f" as {target.name}" if target.name != path.name else "",
                "; ".join(reasons))
    return target


def _free_name(folder: Path, path: Path) -> Path:
    """`folder/<name>` when neither it nor its reason file exists, else a name made unique by time and hash."""
    def taken(target: Path) -> bool:
        return target.exists() or target.with_name(f"{target.name}.reason.json").exists()

    target = folder / path.name
    if not taken(target):
        return target
    stamp = f"{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%S}-{hash_file(path)[:8]}"
    target, n = folder / f"{path.stem}.{stamp}{path.suffix}", 1
    while taken(target):  # the same bytes quarantined twice within a second
        n += 1
        target = folder / f"{path.stem}.{stamp}-{n}{path.suffix}"
    return target


def score_file(path: Path, model: ProductionModel, cfg: Config, paths: Paths, sha: str,
               signature: tuple[int, int] | None = None) -> dict:
    """Validate and score one file; returns its scored.json record ({"status": "scored" | "quarantined"
    | "pending" | "gone"}). Pending: the file changed since `signature` was taken (before hashing), so
    what was read may not be what `sha` names; nothing is written and the next run takes it again.
    Gone: it was renamed or deleted meanwhile."""
    from tasks.validate import validate_batch

    def changed() -> dict | None:
        status = None if signature is None else change_since(path, signature)
        return {"status": status} if status else None

    try:
        frame, labelled = read_batch(path, cfg)
    except DataError as err:
        return changed() or _set_aside(path, [str(err)])
    if (moved := changed()) is not None:
        return moved
    if labelled:  # class ids (0, 1.0, "1") as the model's label names; anything else is validated as read
        frame = frame.assign(label=frame["label"].map(label_namer(model.labels)))
    result = validate_batch(frame, cfg, model.labels if labelled else None, str(path), tokenizer=model.tokenizer)
    if not result.ok:
        return _set_aside(path, result.errors, result.to_dict())
    texts = frame["text"].astype(str).tolist()
    truth = frame["label"].tolist() if labelled else None
    rows = log_rows(model, texts, model.predict(texts, cfg.score.batch_size), path.name, truth)
    part = write_part(paths, rows, sha, rows["time"].iloc[0].date())
    return {"status": "scored", "rows": len(rows), "part": str(part.relative_to(paths.root))}


def _set_aside(path: Path, reasons: list[str], report: dict | None = None) -> dict:
    """Quarantine a bad file; its record: quarantined, or gone when it vanished first."""
    if quarantine(path, path.parent, reasons, report) is None:
        return {"status": "gone"}
    return {"status": "quarantined", "errors": reasons}


def label_namer(labels: list[str]) -> Callable[[object], object]:
    """A map of a raw label (a name, or a class id as 1, 1.0 or "1") to its name in `labels`, normalised as ingest
    reads labels (`tasks.infra.tables.normalise_label`: "positive " is "positive"); any other value is kept
    for validation to refuse (scoring's labelled files and retraining's labelled batches)."""
    from tasks.infra.tables import normalise_label

    def name(value: object) -> object:
        norm = normalise_label(value)
        if type(norm) is int:
            return labels[norm] if 0 <= norm < len(labels) else value
        return norm if isinstance(norm, str) else value
    return name


def new_files(incoming: Path) -> list[Path]:
    """The files waiting in `incoming` (not in its subfolders), by name.

    Only data suffixes count: a file being written as `x.csv.part`, `x.tmp` or `.x.csv` is ignored.
    """
    if not incoming.is_dir():
        return []
    return sorted(p for p in incoming.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES
                  and not p.name.startswith("."))


def _signature(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns): what changes while a file is written; None once it is gone."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


def settled(files: list[Path], seconds: float) -> tuple[dict[Path, tuple[int, int]], list[Path]]:
    """Split files into (complete, each with the signature it held still at; still being written).

    A file whose last change is older than `seconds` is complete. Younger ones are watched for
    `seconds` (once, for all of them): those whose size and mtime held still are complete too.
    A file gone meanwhile is in neither.
    """
    before = {p: sig for p in files if (sig := _signature(p)) is not None}
    now = time.time_ns()
    young = {p for p, sig in before.items() if seconds > 0 and now - sig[1] < seconds * 1e9}
    if young:
        time.sleep(seconds)
    after = {p: _signature(p) for p in young}
    complete = {p: sig for p, sig in before.items() if p not in young or after[p] == sig}
    return complete, [p for p in young if after[p] is not None and p not in complete]


def change_since(path: Path, signature: tuple[int, int]) -> str | None:
    """None while `path` still holds the (size, mtime) `signature` it settled at; else "pending" (written to
    since: not complete after all, left for the next run) or "gone" (renamed or deleted)."""
    now = _signature(path)
    return None if now == signature else "pending" if now else "gone"


def changed_since_scored(record: dict, path: Path, sha: str) -> dict | None:
    """The record of an earlier version of this file name, if its content has changed since it was logged."""
    return next((e for e in record.values() if e.get("file") == path.name and e.get("sha256") != sha
                 and e.get("status") in ("scored", "duplicate")), None)


def score(cfg: Config, paths: Paths) -> dict:
    """Score every new, complete file in `score.incoming`; writes data/production/ and moves bad files aside.

    Returns:
        {"scored": [...names], "quarantined": [...], "skipped": [...] (already scored),
         "recovered": [...] (part found from an interrupted run), "pending": [...] (still being
         written: left for the next run), "gone": [...] (renamed or deleted while this run went on),
         "rows": rows appended}.

    Raises:
        ScoreRunning: another score run is going on in this workspace.
        DataError: scored.json is not readable (it is then left as it is).
    """
    incoming = paths.root / cfg.score.incoming
    summary: dict = {key: [] for key in ("scored", "quarantined", "skipped", "recovered", "pending", "gone")}
    summary["rows"] = 0
    with stage_log("score") as info, score_lock(paths):
        record = read_record(paths)
        files, pending = settled(new_files(incoming), cfg.score.settle_seconds)
        summary["pending"] = [p.name for p in pending]
        model = None
        for path, seen in files.items():
            # Written to (or renamed away) since the settle check, while earlier files were scored:
            # not complete after all.
            if (status := change_since(path, seen)) is not None:
                summary[status].append(path.name)
                continue
            try:
                sha = hash_file(path)
            except FileNotFoundError:
                summary["gone"].append(path.name)
                continue
            key = f"{sha}:{path.name}"
            if key in record:
                summary["skipped"].append(path.name)
                continue
            earlier = changed_since_scored(record, path, sha)
            if earlier is not None:
                why = (f"{path.name}: content changed after it was scored at {earlier.get('time')} (sha256 "
                       f"{earlier['sha256'][:12]} -> {sha[:12]}); a file is scored once: give new rows a new file")
                entry = _set_aside(path, [why])
                summary[entry["status"]].append(path.name)
                continue
            part = find_part(paths, sha)
            if part is not None:  # the same bytes under another name, or a run that died before recording it
                duplicate = any(e.get("sha256") == sha for e in record.values())
                entry = {"status": "duplicate" if duplicate else "scored", "rows": len(pd.read_parquet(part)),
                         "part": str(part.relative_to(paths.root)), "recovered": not duplicate}
                summary["skipped" if duplicate else "recovered"].append(path.name)
            else:
                for stale in production_log_dir(paths).glob("date=*"):
                    remove_stale_temps(stale / f"part-{sha}.parquet")
                model = model or load_production(cfg, paths)
                entry = score_file(path, model, cfg, paths, sha, seen)
                if entry["status"] != "scored":
                    summary[entry["status"]].append(path.name)
                    continue  # quarantined or gone: the file has left incoming/; pending: the next run takes it
                summary["scored"].append(path.name)
                summary["rows"] += entry["rows"]
            entry.update(file=path.name, sha256=sha, model_version=model.version if model else None,
                         time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
            record[key] = entry
            write_json(scored_path(paths), record)
        info["read"].append(incoming)
        info["wrote"].append(production_log_dir(paths))
        _log_summary(summary, cfg.score.settle_seconds)
    return summary


def _log_summary(summary: dict, settle_seconds: float) -> None:
    if summary["pending"]:
        log.warning("[score] still being written, left for the next run (score.settle_seconds=%s): %s",
                    settle_seconds, ", ".join(summary["pending"]))
    if summary["gone"]:
        log.warning("[score] renamed or deleted while this run went on: %s", ", ".join(summary["gone"]))
    log.info("[score] %d file(s) scored (%d rows), %d quarantined, %d already scored, %d recovered, %d pending, "
             "%d gone", len(summary["scored"]), summary["rows"], len(summary["quarantined"]), len(summary["skipped"]),
             len(summary["recovered"]), len(summary["pending"]), len(summary["gone"]))


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
