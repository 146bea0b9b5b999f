"""drift: does the text the production model now sees still look like the text it was trained on?

The **reference** is the production model's training data (data/processed/train.parquet, sampled to
`drift.max_reference_rows`); the **held-out split** is data/processed/val.parquet, rows the model never
trained on (the test split stays for reporting accuracy). Both are scored once, with the model's
predictions and the monitor's embeddings (`drift.embedder`'s mean-pooled last hidden states), and
cached as reports/drift/{reference,heldout}-<model hash>-<settings>.parquet. The **current window** is
the last `drift.window_rows` rows of the production log (or its last `drift.window_days` days).

Seven signals, each a test with a threshold in params.yaml (`drift:`):

- `descriptors`: K-S tests on four text descriptors (length in characters, word count, share of
  words outside the training vocabulary, share of non-letter characters) against the reference;
  fires when at least `min_descriptors` of them have p < `descriptor_p`. A reference row's vocabulary
  share is measured against the other training rows' words (leave one out, `add_descriptors`): against
  a vocabulary holding its own words it would be 0 for every row, unlike any unseen text. The share is
  computed here, not with Evidently's OOV descriptor, which calls nltk.download().
- `text`: Evidently's domain classifier on the raw text against the reference (ROC AUC of telling
  window from reference apart); fires above `text_auc`.
- `embedding`: the same idea on the embeddings: a logistic regression's 5-fold cross-validated
  ROC AUC, firing above `embedding_auc` (0.5: indistinguishable; 1: fully separable).
- `outliers` (per row): each row's mean cosine distance to its `outlier_k` nearest reference rows; a
  row past the cut (the held-out rows' `outlier_quantile`) looks unlike the training data. Fires
  when the window has significantly more such rows than the held-out split (p < `outlier_p`) and at
  least `outlier_min_share` of them. A window classifier cannot see a segment of 10 to 30% of the
  traffic (70% of the rows are indistinguishable); counting rows can.
- `labels` / `confidence`: predicted-label shares (Evidently's Z-/chi-square test) and confidence
  (K-S) against the held-out split, each firing at p < `prediction_p`. Not against the training
  split: the model is surer, and righter, on the rows it was trained on.
- `quality` (only when the window carries true labels): accuracy below the production model's
  test accuracy from the registry (else the held-out split's) minus `max_accuracy_drop`.

Verdict: drift when at least `min_signals` signals fire, or any one of `strong` fires. It is a
**partial** drift when `outliers` fired on less than `partial_max_share` of the window: a new segment
of the traffic, which the retraining cycle then learns from (`drifted_segment`) instead of every
logged row. The reference is subsampled to the window's size for the window-level tests (the domain
classifier's cost grows with rows, and equal sizes keep its AUC honest). Calibrated by
bench/drift_calibration.py.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import html
import logging
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.infra.config import Config, DriftConfig
from tasks.infra.prodlog import read_log
from tasks.infra.storage import Paths, atomic_path, stage_log, write_json
from tasks.models.monitor import DESCRIPTORS, Monitor, add_descriptors, drift_dir, embed, knn_distance, load_monitor

log = logging.getLogger("kd")

EXAMPLES = 10  # most outlying texts shown in the verdict and the report


def report_dir(paths: Paths, now: datetime.datetime) -> Path:
    """reports/drift/<UTC time to the microsecond>Z-<random>/: in time order by name, and never shared by
    two runs, even of the same second or of two processes (a shared one would be replaced by the later)."""
    return drift_dir(paths) / f"{now:%Y%m%dT%H%M%S.%f}Z-{uuid.uuid4().hex[:6]}"


# ------------------------------------------------------------------------------ per-row outliers

def _beta_binomial(rows: int, above: int, heldout_rows: int):
    """The number of window rows past the cut among `rows` rows like the held-out ones.

    The probability mass past the cut is unknown; set on N held-out rows with m above it, it is
    Beta(m + 1, N - m) (an order statistic's coverage), so the count is beta-binomial. A plain
    binomial with p = m / N would ignore that uncertainty: with N = 250 its false-alarm rate at a
    nominal 0.001 is about 3%.
    """
    from scipy.stats import betabinom

    return betabinom(rows, above + 1, heldout_rows - above)


def outlier_p_value(count: int, rows: int, above: int, heldout_rows: int) -> float:
    """P(at least `count` of `rows` window rows past the cut) if the window were like the held-out split."""
    return float(_beta_binomial(rows, above, heldout_rows).sf(count - 1))


@functools.lru_cache(maxsize=256)  # one value per window size and held-out split; the bench asks thousands of times
def critical_count(rows: int, above: int, heldout_rows: int, p: float) -> int:
    """The fewest rows past the cut whose p-value is below `p` (rows + 1 when no count is)."""
    sf = _beta_binomial(rows, above, heldout_rows).sf(np.arange(rows + 1) - 1)
    below = np.flatnonzero(sf < p)
    return int(below[0]) if len(below) else rows + 1


def outlier_decision(count: int, rows: int, monitor: Monitor, d: DriftConfig) -> dict:
    """Whether `count` of `rows` window rows past the cut fire `outliers`: p < outlier_p and a share of at
    least outlier_min_share. Returns fired, score (the share), threshold (the least share that fires), p_value."""
    n_held = len(monitor.heldout)
    p = outlier_p_value(count, rows, monitor.heldout_above, n_held)
    need = max(critical_count(rows, monitor.heldout_above, n_held, d.outlier_p) / rows, d.outlier_min_share)
    return {"fired": bool(p < d.outlier_p and count / rows >= d.outlier_min_share), "score": count / rows,
            "threshold": need, "p_value": p}


def _outliers(monitor: Monitor, cur: pd.DataFrame, d: DriftConfig) -> tuple[dict, np.ndarray]:
    """The `outliers` signal of a window, and each row's distance."""
    dist = knn_distance(monitor.ref_unit, np.stack(cur["emb"]), monitor.outlier_k)
    past = dist > monitor.cut
    order = [i for i in np.argsort(-dist, kind="stable")[:EXAMPLES] if past[i]]
    return {**outlier_decision(int(past.sum()), len(cur), monitor, d), "p_threshold": d.outlier_p,
            "rows": int(past.sum()), "heldout_share": monitor.heldout_above / len(monitor.heldout), "cut": monitor.cut,
            "k": monitor.outlier_k, "examples": [{"text": str(cur["text"].iloc[i])[:300],
                                                  "distance": round(float(dist[i]), 4)} for i in order]}, dist


# --------------------------------------------------------------------------------- the window

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


def _value_drift(ref: pd.DataFrame, cur: pd.DataFrame, text: list[str], numeric: list[str],
                 categorical: list[str], tests: list):
    """An Evidently report of ValueDrift `tests` on the given columns; returns (snapshot, {column: value})."""
    from evidently import DataDefinition, Dataset, Report

    dd = DataDefinition(text_columns=text, numerical_columns=numeric, categorical_columns=categorical)
    cols = [*text, *numeric, *categorical]
    snap = Report(tests).run(current_data=Dataset.from_pandas(cur[cols], data_definition=dd),
                             reference_data=Dataset.from_pandas(ref[cols], data_definition=dd))
    return snap, {m["config"]["column"]: float(m["value"]) for m in snap.dict()["metrics"]}


def _input_report(ref: pd.DataFrame, cur: pd.DataFrame, d: DriftConfig):
    """The text and descriptors against the (training) reference."""
    from evidently.metrics import ValueDrift

    # The absolute variant: the same domain classifier and ROC AUC, without the percentile variant's
    # 1,000 random-classifier AUCs (97% of a run's time, for a threshold this monitor does not use).
    tests = [ValueDrift(column="text", method="abs_text_content_drift", threshold=d.text_auc),
             *[ValueDrift(column=c, method="ks", threshold=d.descriptor_p) for c in DESCRIPTORS]]
    return _value_drift(ref, cur, ["text"], list(DESCRIPTORS), [], tests)


def _prediction_report(heldout: pd.DataFrame, cur: pd.DataFrame, d: DriftConfig):
    """Predicted labels and confidence against the held-out split."""
    from evidently.metrics import ValueDrift

    tests = [ValueDrift(column="prediction", threshold=d.prediction_p),
             ValueDrift(column="confidence", method="ks", threshold=d.prediction_p)]
    return _value_drift(heldout, cur, [], ["confidence"], ["prediction"], tests)


def check_window(monitor: Monitor, window: pd.DataFrame, d: DriftConfig, out_dir: Path | None = None) -> dict:
    """Compare a window (production-log rows with `emb`) to the reference and the held-out split.

    Args:
        monitor: the loaded model, reference and held-out split.
        window: rows with text, prediction, confidence, emb and (optionally) label.
        d: thresholds and the verdict rule.
        out_dir: where to write report.html and predictions.html (None: nothing written).

    Returns:
        The verdict: drift_detected, fired, each signal's score and threshold, partial, summary.
    """
    start = time.perf_counter()
    seed = int(hashlib.sha256("".join(window["text"].astype(str)).encode()).hexdigest()[:8], 16)
    cur = add_descriptors(window, monitor.vocab).reset_index(drop=True)
    ref = monitor.reference.sample(min(len(cur), len(monitor.reference)), random_state=seed).reset_index(drop=True)
    inputs, values = _input_report(ref, cur, d)
    outputs, predicted = _prediction_report(monitor.heldout, cur, d)
    drifted = [c for c in DESCRIPTORS if values[c] < d.descriptor_p]
    emb_auc = domain_auc(np.stack(ref["emb"]), np.stack(cur["emb"]), seed % 2**31)
    outliers, _ = _outliers(monitor, cur, d)
    signals = {
        "descriptors": {"fired": len(drifted) >= d.min_descriptors, "score": len(drifted),
                        "threshold": d.min_descriptors, "p_values": {c: values[c] for c in DESCRIPTORS},
                        "p_threshold": d.descriptor_p},
        "text": {"fired": values["text"] > d.text_auc, "score": values["text"], "threshold": d.text_auc},
        "embedding": {"fired": emb_auc > d.embedding_auc, "score": emb_auc, "threshold": d.embedding_auc},
        "outliers": outliers,
        "labels": {"fired": predicted["prediction"] < d.prediction_p, "score": predicted["prediction"],
                   "threshold": d.prediction_p},
        "confidence": {"fired": predicted["confidence"] < d.prediction_p, "score": predicted["confidence"],
                       "threshold": d.prediction_p},
    }
    quality = _quality(monitor, window, d)
    if quality:
        signals["quality"] = quality
    fired = [name for name, s in signals.items() if s["fired"]]
    detected = len(fired) >= d.min_signals or any(name in d.strong for name in fired)
    partial = bool(outliers["fired"] and outliers["score"] < d.partial_max_share)
    verdict = {"status": "ok", "drift_detected": bool(detected), "fired": fired, "partial": partial,
               "outlier_share": outliers["score"], "summary": summary(outliers, partial), "signals": signals,
               "rule": f">= {d.min_signals} signals, or any of {d.strong}", "window_rows": len(window),
               "reference_rows": len(monitor.reference), "compared_reference_rows": len(ref),
               "heldout_rows": len(monitor.heldout), "model_version": monitor.version,
               "model_hash": monitor.model_hash}
    if out_dir is not None:
        write_reports(out_dir, verdict, inputs, outputs)
    verdict["seconds"] = round(time.perf_counter() - start, 2)
    return verdict


def summary(outliers: dict, partial: bool) -> str:
    """One line on the per-row signal: '31% of this window looks unlike the training data (...)'."""
    line = (f"{outliers['score']:.0%} of this window looks unlike the training data "
            f"(held-out rows: {outliers['heldout_share']:.0%}; significant from {outliers['threshold']:.1%})")
    if partial:
        line += ": a partial drift, a new segment of the traffic; retraining learns from those rows"
    return line


def _quality(monitor: Monitor, window: pd.DataFrame, d: DriftConfig) -> dict | None:
    """Accuracy and macro-F1 on the window's labelled rows against the baseline, or None without labels."""
    from sklearn.metrics import accuracy_score, f1_score

    labelled = window[window["label"].notna()] if "label" in window else window.iloc[:0]
    if len(labelled) < max(d.min_window // 2, 1):
        return None
    held = monitor.heldout
    held_acc = float(accuracy_score(held["label"].astype(str), held["prediction"]))
    baseline = monitor.baseline_accuracy if monitor.baseline_accuracy is not None else held_acc
    truth, pred = labelled["label"].astype(str), labelled["prediction"].astype(str)
    acc = float(accuracy_score(truth, pred))
    return {"fired": acc < baseline - d.max_accuracy_drop, "score": acc, "threshold": baseline - d.max_accuracy_drop,
            "f1_macro": float(f1_score(truth, pred, average="macro")), "labelled_rows": len(labelled),
            "baseline_accuracy": baseline, "heldout_accuracy": held_acc,
            "heldout_f1_macro": float(f1_score(held["label"].astype(str), held["prediction"], average="macro"))}


# -------------------------------------------------------------------------------- the reports

def _header(verdict: dict) -> str:
    """The verdict, the per-row signal's line and its most outlying texts, as an HTML section."""
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{'yes' if s['fired'] else 'no'}</td>"
                   f"<td>{s['score']:.4g}</td><td>{s['threshold']:.4g}</td></tr>"
                   for n, s in verdict["signals"].items())
    examples = "".join(f"<tr><td>{e['distance']:.3f}</td><td>{html.escape(e['text'])}</td></tr>"
                       for e in verdict["signals"]["outliers"]["examples"])
    head = "drift detected" if verdict["drift_detected"] else "no drift"
    return (f"<section style='font-family:sans-serif;margin:16px'><h2>Drift monitor: {head}</h2>"
            f"<p>{html.escape(verdict['summary'])}.</p><p>Rule: {html.escape(verdict['rule'])}. Predicted labels "
            f"and confidence against the held-out split: <a href='predictions.html'>predictions.html</a>.</p>"
            f"<table border='1' cellpadding='4'><tr><th>signal</th><th>fired</th><th>score</th><th>threshold</th>"
            f"</tr>{rows}</table><h3>Most outlying texts (cosine distance to the training data)</h3>"
            f"<table border='1' cellpadding='4'><tr><th>distance</th><th>text</th></tr>{examples}</table></section>")


def write_reports(out_dir: Path, verdict: dict, inputs, outputs) -> None:
    """report.html (the verdict and outlying texts, then Evidently's text and descriptor tests against the
    reference) and predictions.html (Evidently's label and confidence tests against the held-out split)."""
    page = inputs.get_html_str(as_iframe=False)
    (out_dir / "report.html").write_text(page.replace("<body>", "<body>" + _header(verdict), 1), encoding="utf-8")
    outputs.save_html(str(out_dir / "predictions.html"))

def drift(cfg: Config, paths: Paths) -> dict:
    """Run the monitor on the latest window of the production log; writes reports/drift/<timestamp>/.

    Returns:
        The verdict (also verdict.json): status "ok" with drift_detected, fired, signals, partial and
        summary, or status "not enough data" when the window has fewer than `drift.min_window` rows.
    """
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
            window = window.assign(emb=list(embed(monitor, window["text"].astype(str).tolist())))
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
        if verdict["status"] == "ok":
            log.info("[drift] %s", verdict["summary"])
    return verdict
