"""drift: does the text the production model now sees still look like the text it was trained on?

The **reference** is the production model's training data (data/processed/train.parquet, sampled to
`drift.max_reference_rows`) with the model's own predictions and sentence embeddings, computed once
and cached as reports/drift/reference-<model hash>.parquet. The **current window** is the last
`drift.window_rows` rows of the production log (or its last `drift.window_days` days).

Six signals, each a test with a threshold in params.yaml (`drift:`):

- `descriptors`: K-S tests on four text descriptors (length in characters, word count, share of
  words outside the training vocabulary, share of non-letter characters); fires when at least
  `min_descriptors` of them have p < `descriptor_p`. The vocabulary share is computed here, not
  with Evidently's OOV descriptor, which calls nltk.download().
- `text`: Evidently's domain classifier on the raw text (ROC AUC of telling window from reference
  apart); fires above `text_auc`.
- `embedding`: the same idea on the student's mean-pooled last hidden states: a logistic regression
  tells window from reference, its 5-fold cross-validated ROC AUC fires above `embedding_auc`
  (0.5: indistinguishable; 1: fully separable).
- `labels` / `confidence`: predicted-label shares (Evidently's Z-/chi-square test) and confidence
  (K-S), each firing at p < `prediction_p`.
- `quality` (only when the window carries true labels): accuracy below the production model's
  test accuracy from the registry (else the reference's) minus `max_accuracy_drop`.

Verdict: drift when at least `min_signals` signals fire, or any one of `strong` fires. The
reference is subsampled to the window's size for the report (the domain classifier's cost grows
with rows, and equal sizes keep its AUC honest). Calibrated by bench/drift_calibration.py.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.config import Config, DriftConfig
from tasks.errors import DataError
from tasks.storage import Paths, atomic_path, stage_log, write_json, write_parquet

log = logging.getLogger("kd")

DESCRIPTORS = ("length", "words", "oov_share", "nonletter_share")
WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def drift_dir(paths: Paths) -> Path:
    """reports/drift/: the cached reference and one folder per monitoring run."""
    return paths.reports / "drift"


def report_dir(paths: Paths, now: datetime.datetime) -> Path:
    """reports/drift/<UTC time to the microsecond>Z-<random>/: in time order by name, and never shared by
    two runs, even of the same second or of two processes (a shared one would be replaced by the later)."""
    return drift_dir(paths) / f"{now:%Y%m%dT%H%M%S.%f}Z-{uuid.uuid4().hex[:6]}"


def vocabulary(texts: pd.Series) -> set[str]:
    """The lower-cased words of the training texts."""
    return {w for t in texts.astype(str) for w in WORD.findall(t.lower())}


def add_descriptors(frame: pd.DataFrame, vocab: set[str]) -> pd.DataFrame:
    """A copy of `frame` with the four descriptor columns computed from `text` (see DESCRIPTORS)."""
    out = frame.copy()
    texts = out["text"].astype(str)
    words = texts.str.lower().map(WORD.findall)
    out["length"] = texts.str.len().astype(float)
    out["words"] = texts.str.split().str.len().astype(float)
    out["oov_share"] = words.map(lambda ws: sum(w not in vocab for w in ws) / len(ws) if ws else 1.0)
    out["nonletter_share"] = texts.map(lambda t: sum(not (c.isalpha() or c.isspace()) for c in t) / max(len(t), 1))
    return out


@dataclass
class Monitor:
    """What every monitoring run needs, loaded once: the model, the reference and its vocabulary."""

    model: object  # a transformers sequence classifier, eval mode, CPU
    tokenizer: object
    labels: list[str]
    model_hash: str
    version: int | None
    baseline_accuracy: float | None  # the registry's test accuracy of the production model
    reference: pd.DataFrame  # text, label, prediction, confidence, emb, descriptors
    vocab: set[str]
    max_length: int


def encode(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities [N, C] and mean-pooled last hidden states [N, H] of `texts`."""
    import torch

    from tasks.core.predict import softmax

    probs, embs = [], []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt")
            out = model(**batch, output_hidden_states=True)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            embs.append(((out.hidden_states[-1] * mask).sum(1) / mask.sum(1)).numpy())
            probs.append(softmax(out.logits.float().numpy()))
    return np.concatenate(probs), np.concatenate(embs)


def predictions_frame(monitor_or_model, texts: list[str], labels: list | None = None) -> pd.DataFrame:
    """Rows shaped like the production log (text, prediction, confidence, label) plus `emb`, for `texts`."""
    m = monitor_or_model
    probs, embs = encode(m.model, m.tokenizer, texts, m.max_length)
    return pd.DataFrame({"text": texts, "prediction": [m.labels[i] for i in probs.argmax(-1)],
                         "confidence": probs.max(-1).astype(float), "emb": list(embs.astype(np.float32)),
                         "label": labels if labels is not None else [None] * len(texts)})


def load_monitor(cfg: Config, paths: Paths) -> Monitor:
    """Load the production model and the reference (computed and cached on first use for this model)."""
    from tasks.models import load_classifier, load_tokenizer
    from tasks.promote import STAMP, production_dir, read_registry
    from tasks.storage import hash_dir, read_json

    folder = production_dir(paths)
    if not (folder / "config.json").is_file():
        raise DataError(f"{folder}: no production model; run the promote stage first")
    if not paths.split("train").is_file():
        raise DataError(f"{paths.split('train')}: not found; the reference is the production model's training data")
    stamp = read_json(folder / STAMP) if (folder / STAMP).is_file() else {}
    model_hash = stamp.get("model_hash") or hash_dir(folder)
    model, _ = load_classifier(str(folder), None, key="models/production")
    model = model.cpu().eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    registry = read_registry(paths)
    version = registry.get("production")
    entry = next((v for v in registry.get("versions", []) if v.get("version") == version), stamp)
    train = pd.read_parquet(paths.split("train"))
    vocab = vocabulary(train["text"])
    monitor = Monitor(model, load_tokenizer(str(folder), key="models/production"), labels, model_hash, version,
                      (entry.get("metrics") or {}).get("accuracy"), pd.DataFrame(), vocab, cfg.base.max_length)
    cache = drift_dir(paths) / f"reference-{model_hash[:16]}.parquet"
    if cache.is_file():
        reference = pd.read_parquet(cache)
    else:
        n = min(len(train), cfg.drift.max_reference_rows)
        train = train.sample(n, random_state=cfg.base.seed) if n < len(train) else train
        names = train["label"].map(lambda v: labels[v] if isinstance(v, (int, np.integer)) else str(v))
        reference = predictions_frame(monitor, train["text"].astype(str).tolist(), names.tolist())
        write_parquet(cache, reference)
        log.info("[drift] reference: %d training rows scored and cached in %s", len(reference), cache)
    monitor.reference = add_descriptors(reference, vocab)
    return monitor


def domain_auc(ref: np.ndarray, cur: np.ndarray, seed: int = 0) -> float:
    """5-fold cross-validated ROC AUC of a logistic regression telling `cur` rows from `ref` rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = np.vstack([ref, cur]), np.r_[np.zeros(len(ref)), np.ones(len(cur))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    return float(roc_auc_score(y, cross_val_predict(clf, x, y, cv=folds, method="predict_proba")[:, 1]))


def _evidently_report(ref: pd.DataFrame, cur: pd.DataFrame, d: DriftConfig):
    """Evidently's value-drift tests on the text, descriptor and prediction columns; returns (snapshot, values)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    metrics = [ValueDrift(column="text")]
    metrics += [ValueDrift(column=c, method="ks", threshold=d.descriptor_p) for c in DESCRIPTORS]
    metrics += [ValueDrift(column="prediction", threshold=d.prediction_p),
                ValueDrift(column="confidence", method="ks", threshold=d.prediction_p)]
    dd = DataDefinition(text_columns=["text"], numerical_columns=[*DESCRIPTORS, "confidence"],
                        categorical_columns=["prediction"])
    cols = ["text", *DESCRIPTORS, "prediction", "confidence"]
    snap = Report(metrics).run(current_data=Dataset.from_pandas(cur[cols], data_definition=dd),
                               reference_data=Dataset.from_pandas(ref[cols], data_definition=dd))
    values = {m["config"]["column"]: float(m["value"]) for m in snap.dict()["metrics"]}
    return snap, values


def check_window(monitor: Monitor, window: pd.DataFrame, d: DriftConfig, out_dir: Path | None = None) -> dict:
    """Compare a window (production-log rows with `emb`) to the reference; returns the verdict dict.

    Args:
        monitor: the loaded model and reference.
        window: rows with text, prediction, confidence, emb and (optionally) label.
        d: thresholds and the verdict rule.
        out_dir: where to write report.html (None: nothing written).
    """
    start = time.perf_counter()
    seed = int(hashlib.sha256("".join(window["text"].astype(str)).encode()).hexdigest()[:8], 16)
    cur = add_descriptors(window, monitor.vocab).reset_index(drop=True)
    ref = monitor.reference.sample(min(len(cur), len(monitor.reference)), random_state=seed).reset_index(drop=True)
    snap, values = _evidently_report(ref, cur, d)
    drifted = [c for c in DESCRIPTORS if values[c] < d.descriptor_p]
    emb_auc = domain_auc(np.stack(ref["emb"]), np.stack(cur["emb"]), seed % 2**31)
    signals = {
        "descriptors": {"fired": len(drifted) >= d.min_descriptors, "score": len(drifted),
                        "threshold": d.min_descriptors, "p_values": {c: values[c] for c in DESCRIPTORS},
                        "p_threshold": d.descriptor_p},
        "text": {"fired": values["text"] > d.text_auc, "score": values["text"], "threshold": d.text_auc},
        "embedding": {"fired": emb_auc > d.embedding_auc, "score": emb_auc, "threshold": d.embedding_auc},
        "labels": {"fired": values["prediction"] < d.prediction_p, "score": values["prediction"],
                   "threshold": d.prediction_p},
        "confidence": {"fired": values["confidence"] < d.prediction_p, "score": values["confidence"],
                       "threshold": d.prediction_p},
    }
    quality = _quality(monitor, window, d)
    if quality:
        signals["quality"] = quality
    fired = [name for name, s in signals.items() if s["fired"]]
    detected = len(fired) >= d.min_signals or any(name in d.strong for name in fired)
    if out_dir is not None:
        snap.save_html(str(out_dir / "report.html"))
    return {"status": "ok", "drift_detected": bool(detected), "fired": fired, "signals": signals,
            "rule": f">= {d.min_signals} signals, or any of {d.strong}", "window_rows": len(window),
            "reference_rows": len(monitor.reference), "compared_reference_rows": len(ref),
            "model_version": monitor.version, "model_hash": monitor.model_hash,
            "seconds": round(time.perf_counter() - start, 2)}


def _quality(monitor: Monitor, window: pd.DataFrame, d: DriftConfig) -> dict | None:
    """Accuracy and macro-F1 on the window's labelled rows against the baseline, or None without labels."""
    from sklearn.metrics import accuracy_score, f1_score

    labelled = window[window["label"].notna()] if "label" in window else window.iloc[:0]
    if len(labelled) < max(d.min_window // 2, 1):
        return None
    ref = monitor.reference
    ref_acc = float(accuracy_score(ref["label"].astype(str), ref["prediction"]))
    baseline = monitor.baseline_accuracy if monitor.baseline_accuracy is not None else ref_acc
    truth, pred = labelled["label"].astype(str), labelled["prediction"].astype(str)
    acc = float(accuracy_score(truth, pred))
    return {"fired": acc < baseline - d.max_accuracy_drop, "score": acc, "threshold": baseline - d.max_accuracy_drop,
            "f1_macro": float(f1_score(truth, pred, average="macro")), "labelled_rows": len(labelled),
            "baseline_accuracy": baseline, "reference_accuracy": ref_acc,
            "reference_f1_macro": float(f1_score(ref["label"].astype(str), ref["prediction"], average="macro"))}


def drift(cfg: Config, paths: Paths) -> dict:
    """Run the monitor on the latest window of the production log; writes reports/drift/<timestamp>/.

    Returns:
        The verdict (also verdict.json): status "ok" with drift_detected, fired, signals, or status
        "not enough data" when the window has fewer than `drift.min_window` rows.
    """
    from tasks.score import read_log

    d = cfg.drift
    now = datetime.datetime.now(datetime.timezone.utc)
    out = report_dir(paths, now)
    with stage_log("drift") as info:
        window = read_log(paths, days=d.window_days, rows=None if d.window_days else d.window_rows)
        if len(window) < d.min_window:
            verdict = {"status": "not enough data", "drift_detected": None, "window_rows": len(window),
                       "min_window": d.min_window, "time": now.isoformat(timespec="seconds")}
            with atomic_path(out) as tmp:
                tmp.mkdir()
                write_json(tmp / "verdict.json", verdict)
        else:
            monitor = load_monitor(cfg, paths)
            _, embs = encode(monitor.model, monitor.tokenizer, window["text"].astype(str).tolist(), monitor.max_length)
            window = window.assign(emb=list(embs))
            with atomic_path(out) as tmp:
                tmp.mkdir()
                verdict = check_window(monitor, window, d, tmp)
                verdict["time"] = now.isoformat(timespec="seconds")
                verdict["window_from"], verdict["window_to"] = str(window["time"].min()), str(window["time"].max())
                write_json(tmp / "verdict.json", verdict)
        verdict["report_dir"] = str(out)
        info["wrote"].append(out)
        log.info("[drift] %s: %s", verdict["status"], "drift" if verdict.get("drift_detected") else
                 "no drift" if verdict["status"] == "ok" else f"{len(window)} rows < drift.min_window {d.min_window}")
    return verdict
