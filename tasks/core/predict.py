"""Inference with a classifier: logits for a whole tokenised dataset, and the probabilities they give.

Scoring rows with a PyTorch model comes here (validation in the training loop, the teacher and
evaluate stages, promote and retrain through tasks.models.training), so batching, padding and the
compute precision (base.precision, resolved by tasks.core.precision) are written once; so is the
softmax, which the drift monitor (its own forward pass, for hidden states) takes from here too.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from tasks.core.data import TokenDataset, make_loader
from tasks.core.precision import autocast, resolve_precision


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, data: TokenDataset, pad_id: int, batch_size: int = 128,
                   device: torch.device | None = None, progress: str | None = None,
                   precision: str = "auto") -> np.ndarray:
    """Logits for every row, in the dataset's order.

    Args:
        model: a classifier whose forward returns `.logits`; left in the mode it was in.
        data: the rows (labels are not used).
        pad_id: the tokenizer's pad token id.
        batch_size: rows per forward pass (longest rows first).
        device: where the model runs; default: where its parameters are.
        progress: a progress-bar title, or None for no bar.
        precision: base.precision (auto | fp32 | bf16); `auto` keeps a single row in fp32.

    Returns:
        float32 [N, C]; [0, C] for no rows (C from the model's config, 0 when it has none).
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    dtype = resolve_precision(precision, device, rows=min(len(data), batch_size))
    loader = make_loader(data, batch_size, pad_id, 0, False, device)
    out: np.ndarray | None = None
    for batch in tqdm(loader, desc=progress or "predict", disable=progress is None, mininterval=2):
        with autocast(device.type, dtype):
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits
        if out is None:  # the class count is known after the first batch
            out = np.zeros((len(data), logits.shape[-1]), dtype=np.float32)
        out[batch["index"].numpy()] = logits.float().cpu().numpy()
    model.train(was_training)
    if out is None:  # no rows: still [0, C], so argmax and softmax of an empty set work
        out = np.zeros((0, getattr(getattr(model, "config", None), "num_labels", 0)), dtype=np.float32)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of logits [..., C], as float32 of the same shape.

    The row maximum is subtracted first, so large logits cannot overflow `exp`.
    """
    z = np.asarray(logits, dtype=np.float32)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
