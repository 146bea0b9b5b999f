"""Contrastive few-shot tuning of a sentence-embedding teacher's body (SetFit), before the teacher stage
fine-tunes it as an ordinary classifier.

SetFit (Tunstall et al., 2022) trains a sentence embedder on pairs of labelled texts (same label:
close, different labels: apart), which a few labelled rows multiply into many training pairs. The
teacher stage (`teacher.method: setfit`) and bench/label_efficiency.py take only its tuned body:
it is saved as a plain Hugging Face encoder folder, so the teacher stage then puts the usual
sequence-classification head on it and fine-tunes it on the same labelled rows. The teacher stays
an ordinary model folder that distill, evaluate and export read unchanged (SetFit's own logistic
regression head on mean-pooled embeddings has no Hugging Face classifier equivalent).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from tasks.models.loading import resolve_model, save_model

log = logging.getLogger("kd")


def contrastive_body(model: str, texts: list[str], labels: list[int], out: Path, *, seed: int, max_steps: int,
                     batch_size: int = 16, iterations: int = 20, max_length: int = 64, lr: float = 2e-5) -> Path:
    """Tune `model`'s encoder contrastively on labelled texts (SetFit) and save it to `out`.

    Args:
        model: the teacher's base model (embedded package name, local folder or HF model id); a plain
            encoder folder gets sentence-transformers' default mean pooling.
        texts: the labelled training texts.
        labels: their label ids, aligned with `texts`.
        out: the folder the tuned encoder and its tokenizer are saved to (atomically).
        seed: seeds the pair sampling and the training order.
        max_steps: cap on the contrastive steps (SetFit draws `iterations` pairs per text per epoch,
            which a few hundred labelled rows turn into thousands of steps).
        batch_size: pairs per step.
        iterations: SetFit's `num_iterations` (pairs drawn per text).
        max_length: tokens kept per text.
        lr: the body's learning rate (SetFit's default).

    Returns:
        `out`, a Hugging Face encoder folder that `load_classifier` loads with a new head.
    """
    # Imported here: setfit is needed by this teacher method only, and imports slowly.
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    setfit_model = SetFitModel.from_pretrained(resolve_model(model))
    setfit_model.model_body.max_seq_length = max_length
    with tempfile.TemporaryDirectory(prefix="setfit-") as tmp:
        args = TrainingArguments(output_dir=tmp, batch_size=batch_size, num_epochs=1, max_steps=max_steps,
                                 num_iterations=iterations, body_learning_rate=lr, seed=seed, report_to="none", save_strategy="no",
                                 show_progress_bar=False)
        trainer = Trainer(model=setfit_model, args=args,
                          train_dataset=Dataset.from_dict({"text": list(texts), "label": [int(y) for y in labels]}))
        # Only the body is kept: the pipeline's own head is trained on it next (see the module docstring).
        trainer.train_embeddings(*trainer.dataset_to_parameters(trainer.train_dataset), args=args)
    body = setfit_model.model_body[0]
    save_model(body.auto_model, body.tokenizer, out)
    log.info("[teacher] SetFit contrastive tuning: %d labelled rows, %d steps at most; body saved to %s",
             len(texts), max_steps, out)
    return out
