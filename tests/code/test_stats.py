"""The paired comparison every gate uses: known answers on constructed predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from tasks.infra.stats import mcnemar_p, metric_value, paired_comparison, seed_summary


def _pair(rows: int, both_right: int, a_only: int, b_only: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary labels with predictions of A and B that agree except on `a_only` + `b_only` rows."""
    labels = np.zeros(rows, dtype=int)
    a = np.ones(rows, dtype=int)  # wrong by default
    b = np.ones(rows, dtype=int)
    a[:both_right] = b[:both_right] = 0
    a[both_right:both_right + a_only] = 0
    b[both_right + a_only:both_right + a_only + b_only] = 0
    return labels, a, b


def test_small_gain_on_a_small_split_is_not_significant() -> None:
    # The retrain cycle of the issue: +4 points on 125 rows (5 rows net) is inside the noise.
    labels, a, b = _pair(125, 100, 3, 8)
    cmp = paired_comparison(labels, a, b)
    assert cmp.diff == pytest.approx(5 / 125)
    assert not cmp.significant_gain and cmp.ci_low < 0 < cmp.ci_high
    assert cmp.p_value == pytest.approx(mcnemar_p(3, 8)) and cmp.p_value > 0.05
    assert (cmp.a_only, cmp.b_only) == (3, 8)
    assert cmp.rows_to_show() > 125


def test_interval_agrees_with_mcnemar_on_few_discordant_rows() -> None:
    # 0 against 5 discordant rows: p = 0.0625; a bootstrap would put its whole interval above 0.
    labels, a, b = _pair(125, 75, 0, 5)
    cmp = paired_comparison(labels, a, b)
    assert cmp.p_value == pytest.approx(0.0625) and cmp.ci_low < 0 and not cmp.significant_gain
    # 0 against 6: p = 0.031, and the interval leaves zero with it
    labels, a, b = _pair(150, 90, 0, 6)
    assert paired_comparison(labels, a, b).significant_gain
    assert 125 < paired_comparison(*_pair(125, 75, 0, 5)).rows_to_show() <= 150  # about 6 discordant rows


def test_large_gain_is_significant() -> None:
    labels, a, b = _pair(1000, 700, 10, 90)
    cmp = paired_comparison(labels, a, b)
    assert cmp.significant_gain and not cmp.significant_loss
    assert cmp.p_value < 1e-10 and cmp.ci_low > 0.05


def test_loss_is_significant_the_other_way() -> None:
    labels, a, b = _pair(1000, 700, 90, 10)
    assert paired_comparison(labels, a, b).significant_loss


def test_identical_predictions_have_no_difference() -> None:
    labels, a, _ = _pair(200, 150, 0, 0)
    cmp = paired_comparison(labels, a, a)
    assert cmp.diff == 0 and cmp.ci_low == 0 and cmp.ci_high == 0 and cmp.p_value == 1.0


def test_mcnemar_exact_values() -> None:
    # 0 vs 6 discordant rows: two-sided p = 2 * 0.5**6
    assert mcnemar_p(0, 6) == pytest.approx(2 * 0.5**6)
    assert mcnemar_p(0, 0) == 1.0


def test_macro_f1_matches_sklearn_and_sees_a_collapsed_minority() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 400)
    preds = np.where(rng.random(400) < 0.7, labels, rng.integers(0, 5, 400))
    expected = f1_score(labels, preds, labels=list(range(6)), average="macro", zero_division=0)
    assert metric_value(labels, preds, "f1_macro", 6) == pytest.approx(expected)
    # A spam filter that says "ham" to everything: high accuracy, macro-F1 near 0.47.
    y = np.array([1] * 13 + [0] * 87)
    always_ham, good = np.zeros(100, dtype=int), y.copy()
    good[:3] = 0  # misses 3 spams
    cmp = paired_comparison(y, always_ham, good, metric="f1_macro", num_classes=2)
    assert cmp.a == pytest.approx(f1_score(y, always_ham, average="macro", zero_division=0))
    assert cmp.significant_gain and cmp.diff > 0.4


def test_same_inputs_same_interval() -> None:
    labels, a, b = _pair(300, 200, 20, 30)
    assert paired_comparison(labels, a, b).to_dict() == paired_comparison(labels, a, b).to_dict()


def test_seed_summary() -> None:
    assert seed_summary([0.8, 0.82, 0.84]) == pytest.approx({"mean": 0.82, "std": 0.02, "n": 3})
