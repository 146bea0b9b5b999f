"""score: label the new files in data/incoming/ with the production model; append them to the log.

Each new file (CSV, TSV, JSONL or Parquet; a label column optional) is read, validated
(`tasks.quality.doors.validate_batch`) and either quarantined (moved to `data/incoming/quarantine/` with a
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.infra.config import Config
from tasks.infra.dropfolder import change_since, check_own_folder, new_files, outside_link, quarantine, settled
from tasks.infra.errors import DataError, UserError
from tasks.infra.locks import file_lock
from tasks.infra.prodlog import find_part, production_log_dir, write_part
from tasks.infra.storage import Paths, hash_file, read_json, remove_stale_temps, stage_log, write_json
from tasks.infra.tables import label_namer, read_table, shorten

log = logging.getLogger("kd")

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
    model_hash: str  # tasks.infra.registry_view.model_hash of models/production/
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
    from tasks.models.loading import check_max_length, load_tokenizer
    from tasks.infra.registry_view import model_hash, production_dir, read_registry

    version = read_registry(paths).get("production")  # first: it completes a swap a killed writer left
    folder = production_dir(paths)
    if not (folder / "config.json").is_file():
        raise DataError(f"{folder}: no production model; run the promote stage first")
    check_max_length(cfg.base.max_length, str(folder), "models/production")
    variant = resolve_variant(cfg.inference.variant, folder, paths.reports / "bench" / "serving.json")
    predictor = load_predictor(folder, variant, cfg.inference.threads)
    return ProductionModel(load_tokenizer(str(folder), key="models/production"), predictor, list(predictor.labels),
                           version, model_hash(folder),
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


def read_batch(path: Path, cfg: Config) -> tuple[pd.DataFrame, bool]:
    """A new file as `text` (and `label` when the file has the label column); returns (frame, labelled)."""
    sc = cfg.score
    try:
        return read_table(path, sc.text_column, sc.label_column), True
    except DataError as err:
        if "schema_columns" not in str(err) or f"no column {sc.label_column!r}" not in str(err):
            raise
    return read_table(path, sc.text_column, None), False


def score_file(path: Path, model: ProductionModel, cfg: Config, paths: Paths, sha: str,
               signature: tuple[int, int] | None = None) -> dict:
    """Validate and score one file; returns its scored.json record ({"status": "scored" | "quarantined"
    | "pending" | "gone"}). Pending: the file changed since `signature` was taken (before hashing), so
    what was read may not be what `sha` names; nothing is written and the next run takes it again.
    Gone: it was renamed or deleted meanwhile."""
    from tasks.quality.doors import validate_batch

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
    check_own_folder("score.incoming", incoming, production_log_dir(paths))
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
            if (why := outside_link(path, incoming)) is not None:  # the link is set aside, its target never read
                summary[_set_aside(path, [why])["status"]].append(path.name)
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
