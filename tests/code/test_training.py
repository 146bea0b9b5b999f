"""Code tests of the helpers the model stages share: the loop settings every training run is built
from, and prediction (logits, probabilities, labels) of a classifier on texts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import CORPUS, make_tiny_bert
from tasks.models.training import loop_config, predict_labels, predict_probs, text_logits
from tasks.infra.config import BaseConfig, Config, DistillConfig, TrainConfig
from tasks.core.loop import LoopConfig
from tasks.core.predict import softmax
from tasks.lifecycle.retrain import loop as retrain_loop

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_loop_config_and_train_config_agree_on_names_and_defaults():
    """The core's LoopConfig cannot import the schema, so the two are kept equal by this test."""
    loop_fields = {f.name: f for f in dataclasses.fields(LoopConfig)}
    for name, field in TrainConfig.model_fields.items():
        assert name in loop_fields, f"TrainConfig.{name} has no LoopConfig field"
        assert loop_fields[name].default == field.default, name


def test_loop_config_copies_every_train_setting():
    # A value off its default in every field, so a field left out would show.
    changed = {name: (f.default + 1 if isinstance(f.default, int) else f.default * 3)
               for name, f in TrainConfig.model_fields.items()}
    section = DistillConfig(**changed)
    cfg = loop_config(section, BaseConfig(seed=7, device="cpu"), "distill", "f1_macro")
    assert {name: getattr(cfg, name) for name in changed} == changed
    assert (cfg.seed, cfg.device, cfg.desc, cfg.metric) == (7, "cpu", "distill", "f1_macro")


def test_retrain_runs_take_its_settings_and_train_config_defaults():
    cfg = Config()
    cfg.retrain.batch_size, cfg.base.seed, cfg.evaluate.metric = 8, 5, "f1_macro"
    got = retrain_loop(cfg, 4, 1e-4, "retrain student (x)")
    defaults = TrainConfig()
    assert (got.epochs, got.lr, got.batch_size, got.patience) == (4, 1e-4, 8, 4)  # no early stop in a cycle
    for name in ("eval_batch_size", "weight_decay", "warmup_ratio", "grad_clip", "save_every_steps"):
        assert getattr(got, name) == getattr(defaults, name), name
    assert (got.seed, got.metric, got.desc) == (5, "f1_macro", "retrain student (x)")


def test_softmax_matches_torch_and_does_not_overflow():
    logits = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32) * 4
    probs = softmax(logits)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(logits), -1).numpy(), atol=1e-6)
    np.testing.assert_allclose(softmax(np.array([[1000.0, 0.0], [0.0, 1000.0]])), [[1, 0], [0, 1]])
    assert softmax(np.zeros((0, 3))).shape == (0, 3)


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    """A tiny classifier whose decision boundary runs through CORPUS: about half its rows in each class."""
    model = make_tiny_bert(len(tiny_tokenizer), layers=2, num_labels=2, seed=0).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger weights: rows get margins well apart
            if p.ndim == 2:
                p.mul_(10.0)
        batch = tiny_tokenizer(CORPUS, padding=True, return_tensors="pt", return_token_type_ids=False)
        logits = model(**batch).logits
        margins = (logits[:, 0] - logits[:, 1]).sort().values
        middle = len(margins) // 2
        model.classifier.bias[1] += (margins[middle - 1] + margins[middle]) / 2  # between the two middle rows
    return model


def test_predictions_of_texts_agree_with_one_row_at_a_time(model, tiny_tokenizer):
    with torch.no_grad():
        direct = torch.cat([model(**tiny_tokenizer(t, return_tensors="pt", return_token_type_ids=False)).logits
                            for t in CORPUS]).numpy()
    np.testing.assert_allclose(text_logits(model, tiny_tokenizer, CORPUS, 32), direct, atol=1e-4)
    probs = predict_probs(model, tiny_tokenizer, CORPUS, 32)
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(direct), -1).numpy(), atol=1e-5)
    labels = predict_labels(model, tiny_tokenizer, pd.DataFrame({"text": CORPUS}), 32)
    assert np.array_equal(labels, direct.argmax(-1)) and len(set(labels)) == 2  # both classes occur


def test_no_texts_give_empty_predictions_of_the_right_width(model, tiny_tokenizer):
    assert predict_probs(model, tiny_tokenizer, [], 32).shape == (0, 2)
    labels = predict_labels(model, tiny_tokenizer, pd.DataFrame({"text": []}), 32)
    assert labels.shape == (0,) and labels.dtype == np.int64
