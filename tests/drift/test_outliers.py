"""The per-row `outliers` signal, the held-out references of the prediction signals, and the drifted segment.

A partial drift: a known share of a window is foreign text (strings of long numbers, which no
movie snippet resembles, even in a random tiny model's embedding space); the rest is held-out
movie snippets. The window classifiers cannot see a 30% segment; counting rows past the per-row
cut can. Workspace: tests/drift/conftest.py.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from tests.drift._support import HELD_OUT, WINDOW, foreign_texts, mixed, verdict_for, write_log


def test_knn_distance_and_cut():
    from tasks.models.monitor import knn_distance, outlier_cut, unit_rows

    ref = unit_rows(np.array([[1, 0], [0.8, 0.6], [0, 1]], dtype=np.float32))
    dist = knn_distance(ref, np.array([[2.0, 0.0], [-1.0, 0.0]]), k=2)
    assert dist == pytest.approx([(0 + 0.2) / 2, (1 + 1.8) / 2], abs=1e-6)  # scale-free: cosine
    cut, above = outlier_cut(np.arange(100, dtype=float), 0.98)
    assert (cut, above) == (97.0, 2)  # 2 held-out rows lie past the cut


def test_outlier_test_keeps_its_false_alarm_rate_with_a_small_held_out_split():
    """With 250 held-out rows, the cut's own uncertainty matters: the beta-binomial test stays at its
    level over draws of the held-out split, where a plain binomial with p = m/N would not (~5%)."""
    from scipy.stats import binom

    from tasks.models.monitor import outlier_cut
    from tasks.production.drift import critical_count

    rng = np.random.default_rng(0)
    alarms, naive = 0, 0
    for _ in range(3000):  # held-out split and window from one distribution: every alarm is false
        cut, above = outlier_cut(rng.random(250), 0.98)
        count = int((rng.random(200) > cut).sum())
        alarms += count >= critical_count(200, above, 250, 0.01)
        naive += binom.sf(count - 1, 200, above / 250) < 0.01
    assert alarms / 3000 <= 0.015 and naive / 3000 > 0.03


def test_a_known_share_of_outliers_is_detected_and_a_held_out_window_is_not(monitor, movies, cfg):
    held = movies.iloc[HELD_OUT]
    partial = verdict_for(monitor, mixed(held, 0.3, WINDOW, seed=1), cfg)
    s = partial["signals"]["outliers"]
    assert s["fired"] and partial["drift_detected"] and partial["partial"], s
    assert 0.2 <= s["score"] <= 0.4 and s["p_value"] < cfg.drift.outlier_p  # the 30% segment, roughly
    assert all(e["text"][0].isdigit() for e in s["examples"]) and len(s["examples"]) == 10
    assert partial["summary"].startswith(f"{s['score']:.0%} of this window looks unlike the training data")
    clean = verdict_for(monitor, held.sample(WINDOW, random_state=0)["text"].tolist(), cfg)
    assert not clean["signals"]["outliers"]["fired"] and not clean["partial"], clean["signals"]["outliers"]


def test_a_whole_foreign_window_is_drift_but_not_partial(monitor, cfg):
    verdict = verdict_for(monitor, foreign_texts(WINDOW, seed=7), cfg)
    assert verdict["signals"]["outliers"]["score"] > cfg.drift.partial_max_share
    assert verdict["drift_detected"] and not verdict["partial"]


def test_confidence_is_compared_with_the_held_out_split(monitor, movies, cfg):
    """A training split's confidence is inflated (the model fit it); held-out windows must not fire on that."""
    texts = movies.iloc[HELD_OUT].sample(WINDOW, random_state=4)["text"].tolist()
    # Training rows scored as by a model that memorised them: sure, and always right.
    memorised = monitor.reference.assign(confidence=0.999, prediction=monitor.reference["label"])
    verdict = verdict_for(dataclasses.replace(monitor, reference=memorised), texts, cfg)
    assert not verdict["signals"]["confidence"]["fired"], verdict["signals"]["confidence"]


def test_quality_baseline_without_a_registry_accuracy_is_the_held_out_accuracy(monitor, movies, cfg):
    held = movies.iloc[HELD_OUT].sample(WINDOW, random_state=5)
    unregistered = dataclasses.replace(monitor, baseline_accuracy=None)
    quality = verdict_for(unregistered, held["text"].tolist(), cfg, held["label"].tolist())["signals"]["quality"]
    heldout = monitor.heldout
    assert quality["baseline_accuracy"] == pytest.approx((heldout["label"] == heldout["prediction"]).mean())


def test_a_partial_drift_gives_retraining_the_drifted_segment(ws, monitor, movies, cfg):
    from tasks.models.monitor import drifted_segment
    from tasks.production.drift import drift
    from tasks.lifecycle.retrain import unlabelled_texts

    shutil.rmtree(ws.root / "data" / "production", ignore_errors=True)
    window = mixed(movies.iloc[HELD_OUT], 0.3, WINDOW, seed=2)
    write_log(ws, window, monitor, name="partial")
    verdict = drift(cfg, ws)
    assert verdict["partial"] and "partial drift" in verdict["summary"], verdict["signals"]["outliers"]
    pool = unlabelled_texts(ws, None, set(), 1000, 0, cfg)
    foreign = [t for t in window if t[0].isdigit()]
    assert set(foreign) <= set(pool) and len(pool) <= len(foreign) + 10  # the segment, few of the 70 movie rows
    assert len(unlabelled_texts(ws, None, set(), 1000, 0)) == WINDOW  # without cfg: every logged text
    assert drifted_segment(cfg, ws, window, since=verdict["time"]) is None  # retrained since: no segment


def test_the_embedder_is_a_model_of_its_own_or_a_one_line_error(monitor, tiny_teacher_dir):
    from tasks.models.monitor import encode, load_embedder
    from tasks.infra.errors import ConfigError

    embedder, tokenizer = load_embedder(str(tiny_teacher_dir), monitor.model, monitor.tokenizer)
    assert embedder is not monitor.model and not hasattr(embedder, "classifier")  # the base model, no head
    probs, embs = encode(embedder, tokenizer, ["a fine film", "dull"], 32)
    assert probs is None and embs.shape == (2, embedder.config.hidden_size)
    assert load_embedder("student", monitor.model, monitor.tokenizer) == (monitor.model, monitor.tokenizer)
    with pytest.raises(ConfigError, match=r"^drift\.embedder='/no/such/model': no such model folder$"):
        load_embedder("/no/such/model", monitor.model, monitor.tokenizer)
