"""The processed splits and their label names, as ingest wrote them (data/processed/): the one reader
every stage, the sweep, retraining and the benches ask."""

from __future__ import annotations

import pandas as pd

from tasks.infra.errors import DataError
from tasks.infra.storage import Paths, read_json


def load_split(paths: Paths, split: str) -> pd.DataFrame:
    """A processed split; a missing one says which stage makes it."""
    path = paths.split(split)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the ingest stage first")
    return pd.read_parquet(path)


def load_labels(paths: Paths) -> list[str]:
    """The label names recorded by ingest, in id order."""
    if not paths.summary.is_file():
        raise DataError(f"{paths.summary}: not found; run the ingest stage first")
    return list(read_json(paths.summary)["labels"])
