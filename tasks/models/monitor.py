"""The drift monitor's view of the production model: the model, its embedder, and the reference and
held-out rows scored once and cached (reports/drift/{reference,heldout}-<model hash>-<settings>.parquet),
with each row's distance to its nearest reference rows.

Drift monitoring (tasks.production.drift) checks windows of the production log with it; the
retraining cycle (tasks.lifecycle.retrain) asks it for the new segment after a partial drift
(`drifted_segment`). It lives below both, so neither imports the other.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.infra.config import Config
from tasks.infra.errors import DataError
from tasks.infra.storage import Paths, write_parquet

log = logging.getLogger("kd")

DESCRIPTORS = ("length", "words", "oov_share", "nonletter_share")
WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
STUDENT = "student"  # drift.embedder: the production model's own embeddings


def drift_dir(paths: Paths) -> Path:
    """reports/drift/: the cached reference and one folder per monitoring run."""
    return paths.reports / "drift"


def vocabulary(texts: pd.Series) -> Counter[str]:
    """The lower-cased words of the training texts, each with the number of texts it occurs in."""
    return Counter(w for t in texts.astype(str) for w in set(WORD.findall(t.lower())))


def add_descriptors(frame: pd.DataFrame, vocab: Counter[str], own_rows: bool = False) -> pd.DataFrame:
    """A copy of `frame` with the four descriptor columns computed from `text` (see DESCRIPTORS).

    Args:
        frame: rows with `text`.
        vocab: the training vocabulary (`vocabulary`: word -> texts it occurs in).
        own_rows: `frame`'s rows are among the texts `vocab` was built from (the reference). Each is then
            measured against the vocabulary of the *other* training texts (leave one out): a word only
            this text has is out of vocabulary, as it would be for a text the vocabulary never saw. Without
            it a training text's `oov_share` is 0 by construction, every held-out window differs from
            the reference on it, and the descriptor fires on clean traffic (issue 25 item 12).
    """
    out = frame.copy()
    texts = out["text"].astype(str)
    words = texts.str.lower().map(WORD.findall)
    least = 2 if own_rows else 1  # texts a word must occur in to be known: its own text does not count
    out["length"] = texts.str.len().astype(float)
    out["words"] = texts.str.split().str.len().astype(float)
    out["oov_share"] = words.map(lambda ws: sum(vocab.get(w, 0) < least for w in ws) / len(ws) if ws else 1.0)
    out["nonletter_share"] = texts.map(lambda t: sum(not (c.isalpha() or c.isspace()) for c in t) / max(len(t), 1))
    return out


@dataclass
class Monitor:
    """What every monitoring run needs, loaded once: the model, the embedder, the reference and held-out rows."""

    model: object  # a transformers sequence classifier, eval mode, CPU
    tokenizer: object
    labels: list[str]
    model_hash: str
    version: int | None
    baseline_accuracy: float | None  # the registry's test accuracy of the production model
    vocab: Counter[str]  # training words -> texts they occur in (see add_descriptors)
    max_length: int
    embedder: object  # the model whose embeddings `emb` are (`model` itself for drift.embedder "student")
    embedder_tokenizer: object
    outlier_k: int = 10
    reference: pd.DataFrame | None = None  # training rows: text, label, emb, descriptors
    heldout: pd.DataFrame | None = None  # val rows: text, label, prediction, confidence, emb, distance
    ref_unit: np.ndarray | None = None  # [R, H] the reference embeddings at unit length (for kNN)
    cut: float = float("inf")  # per-row outlier cut: a distance (see outlier_cut)
    heldout_above: int = 0  # held-out rows past the cut


def encode(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64
           ) -> tuple[np.ndarray | None, np.ndarray]:
    """Class probabilities [N, C] (None for a model without a classifier head) and mean-pooled last
    hidden states [N, H] of `texts`."""
    import torch

    from tasks.core.loss import mean_pool
    from tasks.core.predict import softmax

    probs, embs = [], []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt", return_token_type_ids=False)
            # ids and mask only: MPNet, DistilBERT and RoBERTa-style models take no token type ids
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
            embs.append(mean_pool(out.hidden_states[-1].float(), batch["attention_mask"]).numpy())
            if getattr(out, "logits", None) is not None:
                probs.append(softmax(out.logits.float().numpy()))
    return (np.concatenate(probs) if probs else None), np.concatenate(embs)


def embed(monitor: Monitor, texts: list[str]) -> np.ndarray:
    """The monitor's embeddings [N, H] of `texts` (drift.embedder)."""
    return encode(monitor.embedder, monitor.embedder_tokenizer, texts, monitor.max_length)[1].astype(np.float32)


def predictions_frame(monitor: Monitor, texts: list[str], labels: list | None = None) -> pd.DataFrame:
    """Rows shaped like the production log (text, prediction, confidence, label) plus `emb`, for `texts`."""
    probs, embs = encode(monitor.model, monitor.tokenizer, texts, monitor.max_length)
    if monitor.embedder is not monitor.model:
        embs = embed(monitor, texts)
    return pd.DataFrame({"text": texts, "prediction": [monitor.labels[i] for i in probs.argmax(-1)],
                         "confidence": probs.max(-1).astype(float), "emb": list(embs.astype(np.float32)),
                         "label": labels if labels is not None else [None] * len(texts)})


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row of `x` [N, H] scaled to length 1 (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_distance(ref_unit: np.ndarray, emb: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Mean cosine distance [N] of each row of `emb` [N, H] to its `k` nearest rows of `ref_unit` [R, H].

    In chunks of rows, so that scoring a whole log never holds an N x R matrix at once.
    """
    k = max(1, min(k, len(ref_unit)))
    x = unit_rows(emb)
    parts = [np.partition(1.0 - x[s:s + chunk] @ ref_unit.T, k - 1, axis=1)[:, :k].mean(1)
             for s in range(0, len(x), chunk)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def outlier_cut(distances: np.ndarray, quantile: float) -> tuple[float, int]:
    """The per-row cut on the held-out rows' distances: their order statistic with m = floor((1 - q) N)
    rows above it. Returns (cut, m)."""
    n = len(distances)
    above = int((1 - quantile) * n + 1e-9)
    return float(np.sort(distances)[n - above - 1]), above


def load_embedder(name: str, model, tokenizer) -> tuple[object, object]:
    """The monitor's embedding model: the production model itself for "student", else `name` without a head."""
    if name == STUDENT:
        return model, tokenizer
    from transformers import AutoModel

    from tasks.infra.errors import ConfigError
    from tasks.models.loading import load_tokenizer, resolve_model

    path = resolve_model(name, "drift.embedder")
    try:
        embedder = AutoModel.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"drift.embedder={name!r}: cannot load the model ({str(err).splitlines()[0]})") from None
    return embedder.cpu().eval(), load_tokenizer(path, key="drift.embedder")


def _cache_name(kind: str, model_hash: str, cfg: Config) -> str:
    """reference|heldout-<model hash>-<settings hash>.parquet: new scores when the model or how they are made changes."""
    d = cfg.drift
    settings = f"{d.embedder}|{cfg.base.max_length}|{d.max_reference_rows}|{cfg.base.seed}"
    return f"{kind}-{model_hash[:16]}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}.parquet"


def _scored_split(monitor: Monitor, frame: pd.DataFrame, cache: Path, what: str, predict: bool) -> pd.DataFrame:
    """`frame`'s rows with their embeddings (and, if `predict`, the model's predictions: predictions_frame),
    from `cache` or computed and cached there."""
    if cache.is_file():
        return pd.read_parquet(cache)
    texts = frame["text"].astype(str).tolist()
    # A zero-shot run's unlabelled train rows (label -100, tasks.infra.suites.UNLABELLED) have no label name.
    names = frame["label"].map(lambda v: (monitor.labels[v] if v >= 0 else None) if isinstance(v, (int, np.integer))
                               else str(v)).tolist()
    scored = (predictions_frame(monitor, texts, names) if predict else
              pd.DataFrame({"text": texts, "label": names, "emb": list(embed(monitor, texts))}))
    write_parquet(cache, scored)
    log.info("[drift] %s: %d rows scored and cached in %s", what, len(scored), cache)
    return scored


def load_monitor(cfg: Config, paths: Paths) -> Monitor:
    """Load the production model, the embedder, the reference and the held-out split (cached per model)."""
    from tasks.models.loading import load_classifier, load_tokenizer
    from tasks.infra.storage import read_json
    from tasks.infra.registry_view import STAMP, model_hash, production_dir, read_registry

    registry = read_registry(paths)  # first: it completes a swap a killed writer left
    folder = production_dir(paths)
    if not (folder / "config.json").is_file():
        raise DataError(f"{folder}: no production model; run the promote stage first")
    for split, role in (("train", "the reference is the production model's training data"),
                        ("val", "the held-out split sets the per-row outlier cut and the prediction baseline")):
        if not paths.split(split).is_file():
            raise DataError(f"{paths.split(split)}: not found; {role}")
    stamp = read_json(folder / STAMP) if (folder / STAMP).is_file() else {}
    key = model_hash(folder)  # the prediction log's model_hash too
    model, _ = load_classifier(str(folder), None, key="models/production")
    model = model.cpu().eval()
    tokenizer = load_tokenizer(str(folder), key="models/production")
    entry = next((v for v in registry.get("versions", []) if v.get("version") == registry.get("production")), stamp)
    train, val = pd.read_parquet(paths.split("train")), pd.read_parquet(paths.split("val"))
    if val.empty:
        raise DataError(f"{paths.split('val')}: no rows; the held-out split sets the per-row outlier cut")
    vocab = vocabulary(train["text"])
    embedder, embedder_tokenizer = load_embedder(cfg.drift.embedder, model, tokenizer)
    monitor = Monitor(model=model, tokenizer=tokenizer,
                      labels=[model.config.id2label[i] for i in range(model.config.num_labels)],
                      model_hash=key, version=registry.get("production"),
                      baseline_accuracy=(entry.get("metrics") or {}).get("accuracy"), vocab=vocab,
                      max_length=cfg.base.max_length, embedder=embedder, embedder_tokenizer=embedder_tokenizer,
                      outlier_k=cfg.drift.outlier_k)
    n = min(len(train), cfg.drift.max_reference_rows)
    sample = train.sample(n, random_state=cfg.base.seed) if n < len(train) else train
    # The reference needs no predictions: the prediction signals compare with the held-out split.
    reference = _scored_split(monitor, sample, drift_dir(paths) / _cache_name("reference", key, cfg),
                              "reference", predict=False)
    monitor.reference = add_descriptors(reference, vocab, own_rows=True)
    monitor.heldout = _scored_split(monitor, val, drift_dir(paths) / _cache_name("heldout", key, cfg),
                                    "held-out", predict=True)
    monitor.ref_unit = unit_rows(np.stack(monitor.reference["emb"]))
    monitor.heldout["distance"] = knn_distance(monitor.ref_unit, np.stack(monitor.heldout["emb"]), monitor.outlier_k)
    monitor.cut, monitor.heldout_above = outlier_cut(monitor.heldout["distance"].to_numpy(), cfg.drift.outlier_quantile)
    return monitor


def latest_verdict(paths: Paths, since: str | None = None) -> dict | None:
    """The newest verdict with status "ok" written after `since` (an ISO time), or None."""
    from tasks.infra.storage import read_json

    limit = _utc(since) if since else None
    for path in sorted(drift_dir(paths).glob("*/verdict.json"), reverse=True):  # names are UTC times
        verdict = read_json(path)
        if limit is not None and verdict.get("time") and _utc(verdict["time"]) <= limit:
            return None
        if verdict.get("status") == "ok":
            return verdict
    return None


def _utc(text: str) -> pd.Timestamp:
    stamp = pd.Timestamp(text)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp


def drifted_segment(cfg: Config, paths: Paths, texts: list[str], since: str | None) -> list[str] | None:
    """After a partial drift, the texts of the new segment; else None (learn from every text).

    A partial drift is the newest verdict since `since` (the last retraining) that says so: its
    `outliers` signal fired on less than `drift.partial_max_share` of the window. The segment is
    then every one of `texts` past the per-row cut, scored as the monitor scores a window.
    """
    verdict = latest_verdict(paths, since)
    if not verdict or not verdict.get("partial") or not texts:
        return None
    monitor = load_monitor(cfg, paths)
    past = knn_distance(monitor.ref_unit, embed(monitor, texts), monitor.outlier_k) > monitor.cut
    segment = [t for t, keep in zip(texts, past) if keep]
    log.info("[drift] partial drift (%s): %d of %d logged texts past the per-row cut form the new segment",
             verdict.get("time"), len(segment), len(texts))
    return segment
