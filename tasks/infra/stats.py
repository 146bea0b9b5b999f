"""Comparisons that carry their noise: two models scored on the same rows, and seeds across runs.

Every decision the product takes by comparing two models (promote: candidate against production;
retrain: challenger against champion; the sweep: trials against the best) asks `paired_comparison`:
the difference of the metric on the same rows with its confidence interval and p-value: for
accuracy, McNemar's exact test and the matching exact interval on the rows where one model is right
and the other wrong; for macro-F1, a paired bootstrap. A gain is
*significant* when the whole interval lies above zero; on a 125-row test split, 5 rows (+4 points)
usually is not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest

METRICS = ("accuracy", "f1_macro")


def metric_value(labels: np.ndarray, preds: np.ndarray, metric: str, num_classes: int | None = None) -> float:
    """Accuracy or macro-F1 (over all `num_classes` classes, 0 for a class never seen nor predicted).

    Args:
        labels: [N] true class ids.
        preds: [N] predicted class ids.
        metric: accuracy | f1_macro.
        num_classes: C; default: one more than the largest id seen.
    """
    labels, preds = np.asarray(labels), np.asarray(preds)
    if metric == "accuracy":
        return float(np.mean(labels == preds)) if len(labels) else float("nan")
    if metric != "f1_macro":
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    c = num_classes or int(max(labels.max(initial=0), preds.max(initial=0)) + 1)
    return float(_f1_macro(labels[None, :], preds[None, :], c)[0])


def _f1_macro(labels: np.ndarray, preds: np.ndarray, c: int) -> np.ndarray:
    """Macro-F1 of each row of [B, N] label/prediction matrices: [B]."""
    b = labels.shape[0]
    offset = (np.arange(b) * c)[:, None]  # row r's classes are counted in bins r*C .. r*C + C-1

    def count(ids: np.ndarray) -> np.ndarray:
        return np.bincount(ids.ravel(), minlength=b * c).reshape(b, c)

    tp = count((labels + offset)[labels == preds])
    denom = count(labels + offset) + count(preds + offset)  # 2TP + FP + FN per class
    f1 = np.divide(2 * tp, denom, out=np.zeros((b, c)), where=denom > 0)
    return f1.mean(axis=1)


@dataclass(frozen=True)
class Comparison:
    """B against A on the same rows: `diff` = metric(B) - metric(A), with its paired uncertainty."""

    metric: str
    rows: int
    a: float
    b: float
    diff: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float  # McNemar's exact test for accuracy; the paired bootstrap's two-sided p for macro-F1
    a_only: int  # rows A gets right and B wrong
    b_only: int  # rows B gets right and A wrong

    @property
    def significant_gain(self) -> bool:
        """B is better than A beyond the noise: the whole confidence interval is above zero."""
        return self.ci_low > 0

    @property
    def significant_loss(self) -> bool:
        """B is worse than A beyond the noise."""
        return self.ci_high < 0

    def rows_to_show(self) -> int | None:
        """Rows a split like this one would need for a difference of this size to be significant;
        None when there is no gain to show.

        Accuracy: the discordant counts scaled up at the same rates until McNemar's exact test
        passes. Macro-F1: the interval's lower half-width shrinks as 1/sqrt(rows).
        """
        if not self.diff > 0:
            return None
        alpha = 1 - self.confidence
        if self.metric == "accuracy":
            for scale in np.arange(1.0, 1000.0, 0.01):
                if mcnemar_p(round(self.a_only * scale), round(self.b_only * scale)) < alpha:
                    return max(self.rows, math.ceil(self.rows * scale))
            return None
        below = self.diff - self.ci_low
        return max(self.rows, math.ceil(self.rows * (below / self.diff) ** 2)) if math.isfinite(below) else None

    def describe(self) -> str:
        """One line for logs and gate messages, e.g. '+0.0400 accuracy (95% CI -0.0080..+0.0880, p=0.13, 125 rows)'."""
        test = "McNemar p" if self.metric == "accuracy" else "bootstrap p"
        return (f"{self.diff:+.4f} {self.metric} ({self.confidence:.0%} CI {self.ci_low:+.4f}..{self.ci_high:+.4f}, "
                f"{test}={self.p_value:.3g}, {self.rows} rows)")

    def to_dict(self) -> dict:
        """Plain data for registry entries, reports and artifacts (rounded)."""
        out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        out["p_value"] = float(f"{self.p_value:.4g}")
        out["significant_gain"], out["significant_loss"] = self.significant_gain, self.significant_loss
        return out


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: under no difference, each discordant row is a fair coin."""
    n = a_only + b_only
    return 1.0 if n == 0 else float(binomtest(b_only, n, 0.5).pvalue)


def _discordant_interval(a_only: int, b_only: int, rows: int, confidence: float) -> tuple[float, float]:
    """Exact interval of the accuracy difference, conditional on the discordant rows.

    Given d = a_only + b_only rows where the models disagree on correctness, b_only ~ Binomial(d, q)
    and the difference is d (2q - 1) / rows; the Clopper-Pearson interval of q maps onto it. It
    agrees with McNemar's exact test (the interval excludes 0 exactly when p < 1 - confidence),
    where a bootstrap would claim significance from 5 discordant rows out of 125.
    """
    d = a_only + b_only
    if d == 0:
        return 0.0, 0.0
    q = binomtest(b_only, d, 0.5).proportion_ci(confidence, method="exact")
    return d * (2 * q.low - 1) / rows, d * (2 * q.high - 1) / rows


def _bootstrap_f1_diffs(labels: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray, classes: int,
                        resamples: int, seed: int) -> np.ndarray:
    """Macro-F1(B) - macro-F1(A) on paired bootstrap resamples of the rows: [resamples]."""
    n = len(labels)
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)  # bounded memory: [chunk, N] index matrices
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        diffs[start:start + len(idx)] = (_f1_macro(labels[idx], preds_b[idx], classes)
                                         - _f1_macro(labels[idx], preds_a[idx], classes))
    return diffs


def paired_comparison(labels: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray, metric: str = "accuracy",
                      num_classes: int | None = None, confidence: float = 0.95, resamples: int = 2000,
                      seed: int = 0) -> Comparison:
    """Compare two models' predictions on the same labelled rows.

    For accuracy the interval is exact, from the rows where exactly one model is right (McNemar's
    setting; see `_discordant_interval`). For macro-F1, which does not decompose by row, it is a
    paired percentile bootstrap: each resample draws rows with replacement and scores both models
    on the same draw, so row difficulty cancels out.

    Args:
        labels: [N] true class ids.
        preds_a: [N] predictions of the reference (production, champion, the best trial).
        preds_b: [N] predictions of the contender.
        metric: accuracy | f1_macro.
        num_classes: C, for macro-F1 over every class.
        confidence: of the interval, e.g. 0.95.
        resamples: bootstrap resamples (macro-F1).
        seed: of the resampling (the same inputs give the same interval).

    Returns:
        The comparison; `diff` is B - A.
    """
    labels, preds_a, preds_b = (np.asarray(x, dtype=np.int64) for x in (labels, preds_a, preds_b))
    n = len(labels)
    if not n == len(preds_a) == len(preds_b):
        raise ValueError(f"paired_comparison: {n} labels, {len(preds_a)} and {len(preds_b)} predictions")
    right_a, right_b = preds_a == labels, preds_b == labels
    a_only, b_only = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))
    c = num_classes or int(max(labels.max(initial=0), preds_a.max(initial=0), preds_b.max(initial=0)) + 1)
    a, b = metric_value(labels, preds_a, metric, c), metric_value(labels, preds_b, metric, c)
    if n == 0:
        return Comparison(metric, 0, a, b, float("nan"), -math.inf, math.inf, confidence, 1.0, 0, 0)
    if metric == "accuracy":
        low, high = _discordant_interval(a_only, b_only, n, confidence)
        p = mcnemar_p(a_only, b_only)
    else:
        diffs = _bootstrap_f1_diffs(labels, preds_a, preds_b, c, resamples, seed)
        tail = (1 - confidence) / 2
        low, high = np.quantile(diffs, [tail, 1 - tail])
        p = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))  # two-sided
    return Comparison(metric, n, a, b, b - a, float(low), float(high), confidence, float(p), a_only, b_only)


def seed_summary(values: list[float]) -> dict:
    """Mean and sample standard deviation over seeds (std 0 for one value)."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "n": len(arr)}
