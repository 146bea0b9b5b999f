"""A sweep trial's record (`Trial`), and where trials live: models/sweep/<id>/ (trial.json, the resume
marker, and val_preds.npy) and reports/sweep/."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from tasks.infra.storage import Paths, read_json, write_json


def sweep_dirs(paths: Paths) -> tuple[Path, Path]:
    """(reports/sweep/, models/sweep/): the reports, and the trials' models and records."""
    return paths.reports / "sweep", paths.root / "models" / "sweep"


@dataclass
class Trial:
    """One finished trial: its `distill:` values and status, and, when done, what `measure` found.

    trial.json holds every field but `val_preds` (val_preds.npy); a pruned trial has no measurements.
    """

    id: str
    params: dict  # the trial's `distill:` values (space.trial_params)
    status: str  # done | pruned
    reason: str | None = None  # pruned: after which epoch, at what val score
    history: list[dict] = field(default_factory=list)  # per-epoch val scores (distill's report)
    train_seconds: float | None = None
    cache: str | None = None  # hit | miss: the teacher-output cache
    val: dict | None = None  # {"accuracy", "f1_macro"} of torch-fp32 on the val split
    test: dict | None = None  # the same on the test split
    param_count: int | None = None
    size_mb: float | None = None  # the saved folder
    torch_fp32: dict | None = None  # latency_ms_b1, throughput_b32, size_mb, accuracy (val), test_accuracy
    served: dict | None = None  # the same for the served variant, and its name (`variant`)
    variants: dict | None = None  # every timed variant's row
    seconds: float = 0.0  # the whole trial, training and measuring
    val_preds: np.ndarray | None = None  # [N] torch-fp32's val predictions: what the choice compares

    @property
    def done(self) -> bool:
        """Trained and measured (not pruned)."""
        return self.status == "done"

    def to_json(self) -> dict:
        """trial.json's record: every field but val_preds; a pruned trial without the measurements it lacks."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "val_preds"}
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_json(cls, data: dict, val_preds: np.ndarray | None = None) -> Trial:
        """A record read back from trial.json (or a work-pool run's artifact); unknown keys are refused."""
        known = {f.name for f in fields(cls)} - {"val_preds"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"sweep trial {data.get('id')!r}: unknown record keys {unknown}")
        return cls(**data, val_preds=val_preds)


def save_record(folder: Path, trial: Trial) -> None:
    """Write a finished trial into its folder: val_preds.npy, then trial.json last (the resume marker)."""
    folder.mkdir(parents=True, exist_ok=True)
    if trial.val_preds is not None:
        np.save(folder / "val_preds.npy", np.asarray(trial.val_preds))
    write_json(folder / "trial.json", trial.to_json())


def load_record(paths: Paths, tid: str) -> Trial | None:
    """A finished trial's record (with its val predictions), or None when it has not finished."""
    folder = sweep_dirs(paths)[1] / tid
    if not (folder / "trial.json").is_file():
        return None
    record = read_json(folder / "trial.json")
    preds = None
    if record["status"] == "done":
        if not (folder / "val_preds.npy").is_file():
            return None
        preds = np.load(folder / "val_preds.npy")
    return Trial.from_json(record, preds)


def records_by_id(records: list[Trial]) -> dict[str, Trial]:
    """Trials by id."""
    return {r.id: r for r in records}
