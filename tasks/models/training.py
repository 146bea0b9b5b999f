"""What the model stages share to train and predict with a classifier: encoding a split, predicting
labels and probabilities, a params section's loop settings, and the supervised step (the teacher's,
fine-tuning's and retraining's)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tasks.core.data import TokenDataset, make_dataset
from tasks.core.loop import LoopConfig
from tasks.core.loss import hard_label_ce
from tasks.core.predict import predict_logits, softmax
from tasks.infra.config import BaseConfig, TrainConfig


def encode_split(tokenizer, frame: pd.DataFrame, max_length: int) -> TokenDataset:
    """Tokenise a processed split (text, label)."""
    return make_dataset(tokenizer, frame["text"].tolist(), frame["label"].to_numpy(), max_length)


def text_logits(model: torch.nn.Module, tokenizer, texts: list[str], max_length: int,
                precision: str = "auto") -> np.ndarray:
    """Logits float32 [N, C] of a classifier for `texts`, on the model's device, in `precision` (base.precision)."""
    return predict_logits(model, make_dataset(tokenizer, texts, None, max_length), tokenizer.pad_token_id, 128,
                          precision=precision)


def predict_labels(model: torch.nn.Module, tokenizer, frame: pd.DataFrame, max_length: int,
                   precision: str = "auto") -> np.ndarray:
    """Predicted label ids [N] of a classifier on a frame with a `text` column, on the model's device."""
    return text_logits(model, tokenizer, frame["text"].tolist(), max_length, precision).argmax(-1)


def predict_probs(model: torch.nn.Module, tokenizer, texts: list[str], max_length: int,
                  precision: str = "auto") -> np.ndarray:
    """Class probabilities float32 [N, C] of a classifier for `texts`, on the model's device."""
    return softmax(text_logits(model, tokenizer, texts, max_length, precision))


def loop_config(section: TrainConfig, base: BaseConfig, desc: str, metric: str = "accuracy") -> LoopConfig:
    """The training-loop settings of a params section: the one place a section becomes a `LoopConfig`.

    The core keeps its own `LoopConfig`, since it must run with torch and transformers alone and so
    cannot import tasks.infra.config. Every `TrainConfig` field is copied by name (the teacher, distill and
    finetune sections are `TrainConfig`s), so a loop setting added to both reaches every
    stage without a change here; tests/code/test_training.py checks that the two agree on names and
    defaults. Retrain, whose section names its settings per model (`teacher_epochs`, `student_lr`),
    passes a `TrainConfig` view of them (tasks/lifecycle/retrain.py `loop`).

    Args:
        section: a `TrainConfig` (or subclass) with the run's settings.
        base: seed, device and precision.
        desc: the run's name in logs and progress bars.
        metric: evaluate.metric, the validation figure that picks the best epoch.
    """
    values = {name: getattr(section, name) for name in TrainConfig.model_fields}
    return LoopConfig(**values, seed=base.seed, device=base.device, precision=base.precision, desc=desc, metric=metric)


def supervised_step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Plain cross-entropy on the labels: the teacher's and the fine-tuning step.

    Rows without a label (a zero-shot run's train rows, replayed by retraining) are skipped; a batch
    of them only gives a zero loss (F.cross_entropy alone would give NaN and spoil the weights).
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = hard_label_ce(logits, batch["labels"])
    return loss, {"ce": loss.detach()}
