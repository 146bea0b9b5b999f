"""ingest: read labelled text from the embedded default, a Hugging Face dataset or local files,
encode the labels, split deterministically, and write `data/processed/`.

Raw inputs are only read. Local files are first streamed through the raw suite's row rules (in
bounded memory, so a bad row deep in a huge file fails fast), then loaded and checked by the whole
raw suite (`tasks.quality.doors.validate_raw`); any error rule stops ingest before it writes anything.
Output, written as one folder swap: `{train,val,test}.parquet` with columns `text` (str) and
`label` (int64 index into the label names), `summary.json`, and `raw_validation.json` (the raw
suite's results, which the validate stage turns into reports).
"""

from __future__ import annotations

import logging

import pandas as pd
from sklearn.model_selection import train_test_split

from tasks.infra.config import Config, IngestConfig
from tasks.infra.embedded import embedded_labels, read_embedded
from tasks.infra.errors import ConfigError, DataError
from tasks.infra.storage import Paths, atomic_path, remove_stale_temps, stage_log, write_json
from tasks.quality.suites import UNLABELLED, labels_optional
from tasks.infra.tables import iter_table, label_kind, normalise_label, read_table
from tasks.quality.doors import scan_file, validate_raw

log = logging.getLogger("kd")

SPLITS = ("train", "val", "test")


def load_source(cfg: IngestConfig, unlabelled: frozenset[str] = frozenset()) -> dict[str, pd.DataFrame]:
    """The configured source as frames with text and raw labels, keyed by the splits it provides.

    Files of the splits in `unlabelled` have no label column: their labels are read as missing.
    """
    if cfg.source == "embedded":
        return {"train": read_embedded(cfg.embedded)}
    if cfg.source == "files":
        return {split: read_table(path, cfg.text_column, cfg.label_column) if split not in unlabelled
                else read_table(path, cfg.text_column, None).assign(label=None)
                for split, path in cfg.files.items() if path}
    return _load_hf(cfg)


def has_label_column(path: str, cfg: IngestConfig) -> bool:
    """Whether a raw file has the label column, read from its first chunk only.

    Raises:
        DataError: the file cannot be read even without its label column (the error of that read).
    """
    try:
        next(iter_table(path, cfg.text_column, cfg.label_column), None)
        return True
    except DataError:
        next(iter_table(path, cfg.text_column, None), None)  # a problem other than the label column raises again
        return False


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


def label_names_for(frames: dict[str, pd.DataFrame], given: list[str] | None, where: str,
                    optional: frozenset[str] = frozenset()) -> list[str]:
    """The ordered label names: `given`, else the sorted labels seen (numerically when all ints).

    Labels may be missing in the splits named in `optional` (train in zero-shot mode) only.
    """
    for split, f in frames.items():
        if split not in optional and f["label"].isna().any():
            raise DataError(f"{where} ({split}): row {int(f['label'].isna().idxmax()) + 1}: label is missing")
    values = pd.concat([f["label"] for f in frames.values()]).dropna()
    kinds = {label_kind(v) for v in values.unique()}
    if len(kinds) > 1:
        raise DataError(f"{where}: label column mixes numbers and strings ({sorted(map(str, values.unique()))[:6]}); "
                        "use one kind, or name them in ingest.label_names")
    seen = sorted({str(normalise_label(v)) for v in values.unique()},
                  key=lambda s: (int(s) if kinds == {"int"} else 0, s))
    if given:
        unknown = [s for s in seen if s not in given]
        if unknown:
            raise DataError(f"{where}: label '{unknown[0]}' is not in ingest.label_names {given}")
        return list(given)
    if len(seen) < 2:
        raise DataError(f"{where}: only one class ({seen[0] if seen else 'none'}); expected at least 2 labels")
    return seen


def encode(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Replace raw labels by their index in `names`; a missing label becomes UNLABELLED."""
    index = {name: i for i, name in enumerate(names)}
    labels = frame["label"].map(lambda v: UNLABELLED if pd.isna(v) else index[str(normalise_label(v))])
    return pd.DataFrame({"text": frame["text"].astype(str), "label": labels.astype("int64")})


def stratified_split(frame: pd.DataFrame, rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off `rows` rows, stratified by label (plain random when a class is too small for it)."""
    rows = min(max(1, rows), len(frame) - 1)
    counts = frame["label"].value_counts()
    strat = frame["label"] if counts.min() >= 2 and rows >= len(counts) else None
    left, right = train_test_split(frame, test_size=rows, random_state=seed, stratify=strat)
    return left.reset_index(drop=True), right.reset_index(drop=True)


def make_splits(frames: dict[str, pd.DataFrame], cfg: IngestConfig, seed: int) -> dict[str, pd.DataFrame]:
    """Fill in the splits the source lacks, from its train split, deterministically by seed.

    Shares are of the source's train rows: with neither val nor test given, 10% + 10% of them.
    """
    out = dict(frames)
    train = frames["train"]
    total = len(train)
    if (train["label"] == UNLABELLED).any():
        missing = [s for s in ("val", "test") if s not in out]
        if missing:
            raise ConfigError(f"ingest.files.{missing[0]}: required when the train split has unlabelled rows "
                              f"(zero-shot mode): a labelled {missing[0]} split cannot be cut out of them")
    if "test" not in out:
        train, out["test"] = stratified_split(train, round(cfg.test_size * total), seed)
    if "val" not in out:
        train, out["val"] = stratified_split(train, round(cfg.val_size * total), seed + 1)
    out["train"] = train
    return {s: out[s] for s in SPLITS}


def summarise(splits: dict[str, pd.DataFrame], names: list[str], extra: dict) -> dict:
    """Rows and class counts per split, the label mapping and a hash of the data."""
    data_hash = pd.util.hash_pandas_object(pd.concat(list(splits.values())), index=False).sum()
    return {
        "labels": names,
        "label_to_id": {n: i for i, n in enumerate(names)},
        "splits": {s: {"rows": len(f), "counts": {names[i]: int((f["label"] == i).sum()) for i in range(len(names))},
                       **({"unlabelled": n} if (n := int((f["label"] == UNLABELLED).sum())) else {})}
                   for s, f in splits.items()},
        "data_hash": f"{int(data_hash) & (2**64 - 1):016x}",
        **extra,
    }


def ingest(cfg: Config, paths: Paths) -> dict:
    """Run the ingest stage: read, validate the raw input, encode, split, write. Returns the summary.

    Raises:
        DataError: the raw input breaks an error rule: one line naming the file, the rule, example
            rows and what was expected. Nothing is written then; data/processed/ stays as it was.
    """
    ing = cfg.ingest
    with stage_log("ingest") as info:
        where = _describe(ing)
        given = ing.label_names or (embedded_labels(ing.embedded) if ing.source == "embedded" else None)
        files = {split: path for split, path in ing.files.items() if path} if ing.source == "files" else {}
        optional = frozenset(s for s in SPLITS if labels_optional(cfg, s))  # zero-shot: train may be unlabelled
        unlabelled = frozenset(s for s in optional & set(files) if not has_label_column(files[s], ing))
        for split, path in files.items():
            # pass 1: row rules, streamed, before loading anything
            scan_file(path, split, cfg, given, labelled=split not in unlabelled)
        frames = load_source(ing, unlabelled)
        if "train" not in frames:
            raise ConfigError(f"{where}: no train split configured")
        info["read"] += list(files.values()) or [where]
        leaked = _drop_leakage(frames) if ing.on_leakage == "drop" else None
        raw = validate_raw(frames, cfg, _sources(ing, frames), given, _columns(ing))
        if leaked is not None:
            raw["suite"]["leakage_dropped"] = leaked  # validation.json shows it under suites.raw
        names = label_names_for(frames, given, where, optional)
        frames = {s: encode(f, names) for s, f in frames.items()}
        conflicts = _drop_conflicts(frames)
        dropped = _drop_duplicates(frames)
        if ing.max_rows:
            frames["train"] = _subsample(frames["train"], ing.max_rows, cfg.base.seed)
        total = sum(len(f) for f in frames.values())
        if total < ing.min_rows:
            raise DataError(f"{where}: {total} rows; expected at least ingest.min_rows={ing.min_rows}")
        splits = make_splits(frames, ing, cfg.base.seed)
        summary = summarise(splits, names, {"source": where, "duplicates_dropped": dropped,
                                            "conflicts_dropped": conflicts,
                                            **({"leakage_dropped": leaked} if leaked is not None else {})})
        write_processed(paths, splits, summary, raw)
        info["wrote"].append(paths.processed)
        log.info("[ingest] %s", ", ".join(f"{s}={v['rows']}" for s, v in summary["splits"].items()))
    return summary


def write_processed(paths: Paths, splits: dict[str, pd.DataFrame], summary: dict, raw: dict) -> None:
    """Write data/processed/ as one folder swap, so a killed ingest leaves the previous version whole
    (never a new train.parquet beside an old test.parquet)."""
    remove_stale_temps(paths.processed)
    with atomic_path(paths.processed) as tmp:
        tmp.mkdir(parents=True)
        for split, frame in splits.items():
            frame.to_parquet(tmp / paths.split(split).name, index=False)
        write_json(tmp / paths.summary.name, summary)
        write_json(tmp / paths.raw_validation.name, raw)


def _sources(ing: IngestConfig, frames: dict[str, pd.DataFrame]) -> dict[str, str]:
    """How messages name each split's source."""
    if ing.source == "files":
        return {split: str(ing.files[split]) for split in frames}
    if ing.source == "hf":
        return {split: f"hf:{ing.hf_name}[{ing.hf_splits.get(split)}]" for split in frames}
    return {split: f"embedded:{ing.embedded}" for split in frames}


def _columns(ing: IngestConfig) -> tuple[str, str]:
    """The source's own names for the text and label columns (the embedded files' are fixed)."""
    return ("text", "label") if ing.source == "embedded" else (ing.text_column, ing.label_column)


def _drop_leakage(frames: dict[str, pd.DataFrame]) -> int:
    """ingest.on_leakage=drop: remove from train every row whose text a given val or test split holds.

    The same exact-text test as the raw suite's `no_leakage` rule, which then passes. Returns the rows removed.
    """
    held_out = {t for split, f in frames.items() if split != "train" for t in f["text"] if isinstance(t, str)}
    train = frames["train"]
    shared = train["text"].map(lambda t: isinstance(t, str) and t in held_out).astype(bool)
    frames["train"] = train[~shared]
    if shared.any():
        log.warning("[ingest] ingest.on_leakage=drop: removed %d train row(s) whose text is also in %s",
                    int(shared.sum()), " or ".join(s for s in frames if s != "train"))
    return int(shared.sum())


def _drop_conflicts(frames: dict[str, pd.DataFrame]) -> int:
    # A text given two labels has no right one; the raw suite warned about it (label_conflicts).
    dropped = 0
    for split, frame in frames.items():
        # A text without a label (zero-shot train) conflicts with none; nunique skips the NaN.
        conflicting = frame["label"].where(frame["label"] != UNLABELLED).groupby(frame["text"]).transform("nunique") > 1
        dropped += int(conflicting.sum())
        frames[split] = frame[~conflicting].reset_index(drop=True)
    return dropped


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
    _, sample = stratified_split(frame, rows, seed)
    return sample
