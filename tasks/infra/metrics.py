"""Classification metrics shared by the teacher and evaluate stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from tasks.infra.storage import atomic_path


def classification_metrics(labels: np.ndarray, preds: np.ndarray, names: list[str]) -> dict:
    """Accuracy, macro-F1, a per-class report and the confusion matrix.

    Args:
        labels: [N] true label ids.
        preds: [N] predicted label ids.
        names: label names, by id.

    Returns:
        {"accuracy", "f1_macro", "per_class": {name: {precision, recall, f1, support}},
         "confusion": [[...]] with rows = true, columns = predicted}.
    """
    ids = list(range(len(names)))
    report = classification_report(labels, preds, labels=ids, target_names=names, output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "f1_macro": float(f1_score(labels, preds, labels=ids, average="macro", zero_division=0)),
        "per_class": {n: {"precision": report[n]["precision"], "recall": report[n]["recall"],
                          "f1": report[n]["f1-score"], "support": int(report[n]["support"])} for n in names},
        "confusion": confusion_matrix(labels, preds, labels=ids).tolist(),
    }


def write_confusion_csv(path: str | Path, labels: np.ndarray, preds: np.ndarray, names: list[str]) -> None:
    """One row per example (actual, predicted), the shape DVC's confusion template plots."""
    frame = pd.DataFrame({"actual": [names[i] for i in labels], "predicted": [names[i] for i in preds]})
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_curve_csv(path: str | Path, history: list[dict]) -> None:
    """Per-epoch training curve (epoch, train_loss, val_loss, val_accuracy, ...) for DVC plots."""
    with atomic_path(path) as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)
