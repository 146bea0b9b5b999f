"""Small helpers the model stages share: reading splits, encoding them, the supervised step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from tasks.config import BaseConfig, TrainConfig
from tasks.core.data import TokenDataset, make_dataset
from tasks.core.loop import LoopConfig
from tasks.errors import DataError
from tasks.storage import Paths, read_json


def load_split(paths: Paths, split: str) -> pd.DataFrame:
    """A processed split; a missing one says which stage makes it."""
    path = paths.split(split)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the ingest stage first")
    return pd.read_parquet(path)


def load_labels(paths: Paths) -> list[str]:
    """The label names recorded by ingest, in id order."""
    if not paths.summary.is_file():
        raise DataError(f"{paths.summary}: not found; run the ingest stage first")
    return list(read_json(paths.summary)["labels"])


def encode_split(tokenizer, frame: pd.DataFrame, max_length: int) -> TokenDataset:
    """Tokenise a processed split (text, label)."""
    return make_dataset(tokenizer, frame["text"].tolist(), frame["label"].to_numpy(), max_length)


def predict_labels(model: torch.nn.Module, tokenizer, frame: pd.DataFrame, max_length: int) -> np.ndarray:
    """Predicted label ids [N] of a classifier on a frame with a `text` column, on the model's device."""
    from tasks.core.loop import predict_logits

    if not len(frame):
        return np.zeros(0, dtype=np.int64)
    data = make_dataset(tokenizer, frame["text"].tolist(), None, max_length)
    return predict_logits(model, data, tokenizer.pad_token_id, 128).argmax(-1)


def loop_config(section: TrainConfig, base: BaseConfig, desc: str, metric: str = "accuracy") -> LoopConfig:
    """The training-loop settings of a params section; `metric` (evaluate.metric) picks the best epoch."""
    return LoopConfig(epochs=section.epochs, batch_size=section.batch_size, eval_batch_size=section.eval_batch_size,
                      lr=section.lr, weight_decay=section.weight_decay, warmup_ratio=section.warmup_ratio,
                      grad_clip=section.grad_clip, patience=section.patience,
                      save_every_steps=section.save_every_steps, seed=base.seed, device=base.device, desc=desc,
                      metric=metric)


def supervised_step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Plain cross-entropy on the labels: the teacher's and the fine-tuning step."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = F.cross_entropy(logits.float(), batch["labels"])
    return loss, {"ce": loss.detach()}
