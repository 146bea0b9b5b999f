"""teacher: load the teacher, fine-tune it when it is not yet trained for the task (or, with
`teacher.zero_shot`, make it a zero-shot classifier of the label descriptions: tasks/models/zero_shot.py),
evaluate it on val and test, and stop the pipeline when it is below `teacher.min_accuracy`."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.infra.splits import load_labels, load_split
from tasks.models.training import encode_split, loop_config, supervised_step
from tasks.infra.config import Config
from tasks.models.contrastive import contrastive_body
from tasks.core.dist import is_main
from tasks.core.loop import resolve_device, train
from tasks.core.predict import predict_logits
from tasks.infra.errors import GateError
from tasks.infra.metrics import classification_metrics, write_curve_csv
from tasks.models.loading import count_params, load_classifier, load_tokenizer, prepare_torch, save_model
from tasks.infra.storage import Paths, stage_log, write_json
from tasks.models.zero_shot import centre, zero_shot_classifier

log = logging.getLogger("kd")


def should_finetune(mode: str, head_ready: bool) -> bool:
    """`auto` fine-tunes exactly when the checkpoint has no trained head for these labels."""
    return {"true": True, "false": False}.get(mode, not head_ready)


def load_teacher(cfg: Config, train: pd.DataFrame, names: list[str]) -> tuple:
    """The teacher's tokenizer, model and whether its head is ready; with `teacher.method: setfit`, the body
    is first tuned contrastively on the labelled train rows (SetFit), and the head is always new."""
    tc = cfg.teacher
    if tc.method != "setfit" or tc.zero_shot is not None:
        return load_tokenizer(tc.model), *load_classifier(tc.model, names)
    with tempfile.TemporaryDirectory(prefix="setfit-body-") as tmp:
        body = contrastive_body(tc.model, train["text"].tolist(), train["label"].tolist(), Path(tmp) / "body",
                                seed=cfg.base.seed, max_steps=tc.setfit_steps, max_length=cfg.base.max_length)
        return load_tokenizer(str(body)), *load_classifier(str(body), names)


def score(model, data, labels_names: list[str], pad_id: int, batch_size: int, device, desc: str,
          precision: str = "auto") -> tuple[dict, np.ndarray]:
    """Metrics of a model on an encoded split (in `precision`, base.precision), and its predicted label ids."""
    logits = predict_logits(model, data, pad_id, batch_size, device, progress=desc, precision=precision)
    preds = logits.argmax(-1)
    return classification_metrics(data.labels, preds, labels_names), preds


def zero_shot_report(model, data: dict, names: list[str], pad_id: int, batch_size: int, device) -> dict:
    """A zero-shot teacher's descriptions, scale and bias, and its val/test scores without the bias (uncentred)."""
    bias = model.classifier.bias.detach().float().cpu().numpy()
    report = {"descriptions": model.config.descriptions, "scale": model.config.scale,
              "centred_on": getattr(model.config, "centred_on", 0), "bias": [round(float(b), 4) for b in bias]}
    if bias.any():
        for split in ("val", "test"):
            logits = predict_logits(model, data[split], pad_id, batch_size, device, progress=f"teacher {split} uncentred")
            metrics = classification_metrics(data[split].labels, (logits - bias).argmax(-1), names)
            report[f"uncentred_{split}"] = {k: metrics[k] for k in ("accuracy", "f1_macro")}
    return report


def teacher(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    """Run the teacher stage. Writes models/teacher/, reports/teacher.json and its training curve.

    Raises:
        GateError: test score (in `evaluate.metric`) below `teacher.min_accuracy` (the report is
            written first).
    """
    tc = cfg.teacher
    prepare_torch(cfg.base.threads, cfg.base.seed)
    with stage_log("teacher") as info:
        names = load_labels(paths)
        frames = {s: load_split(paths, s) for s in ("train", "val", "test")}
        tokenizer, model, head_ready = load_teacher(cfg, frames["train"], names)
        data = {s: encode_split(tokenizer, f, cfg.base.max_length) for s, f in frames.items()}
        device = resolve_device(cfg.base.device)
        finetuned = tc.zero_shot is None and should_finetune(tc.finetune, head_ready)
        history: list[dict] = []
        if tc.zero_shot is not None:
            log.info("[teacher] zero-shot: %s classifies by similarity to %d label descriptions (no fine-tuning)",
                     tc.model, len(names))
            model = zero_shot_classifier(model.base_model, tokenizer, names, tc.zero_shot, cfg.base.max_length)
            if tc.zero_shot_centre:  # the train split's texts only: its labels, if any, are not read
                centre(model.to(device), data["train"], tokenizer.pad_token_id, tc.eval_batch_size, device)
            paths.checkpoints("teacher").mkdir(parents=True, exist_ok=True)  # a declared (empty) output
        elif finetuned:
            log.info("[teacher] fine-tuning %s on %d rows (%s)", tc.model, len(data["train"]),
                     "head untrained for these labels" if not head_ready else "teacher.finetune=true")
            result = train(model, data["train"], data["val"], supervised_step, loop_config(tc, cfg.base, "teacher", cfg.evaluate.metric),
                           tokenizer.pad_token_id, paths.checkpoints("teacher"), resume=resume)
            history = result.history
        else:
            log.info("[teacher] %s already has a trained head for %s: evaluating only", tc.model, names)
            paths.checkpoints("teacher").mkdir(parents=True, exist_ok=True)  # a declared (empty) output
        model.to(device).eval()
        report = {"model": tc.model, "method": tc.method, "finetuned": finetuned, "params": count_params(model), "history": history}
        if tc.zero_shot is not None:
            report["zero_shot"] = zero_shot_report(model, data, names, tokenizer.pad_token_id, tc.eval_batch_size, device)
        for split in ("val", "test"):
            report[split], _ = score(model, data[split], names, tokenizer.pad_token_id, tc.eval_batch_size,
                                     device, f"teacher {split}", cfg.base.precision)
        if is_main():  # under DDP every rank holds the same weights; one writes
            save_model(model.cpu(), tokenizer, paths.teacher)
            write_json(paths.reports / "teacher.json", report)
            write_curve_csv(paths.plots / "teacher_curve.csv", history or [{"epoch": 0}])
        info["read"] += [paths.processed, tc.model]
        info["wrote"] += [paths.teacher, paths.reports / "teacher.json"]
        metric = cfg.evaluate.metric
        acc = report["test"][metric]
        log.info("[teacher] val accuracy %.4f, test accuracy %.4f, test macro-F1 %.4f",
                 report["val"]["accuracy"], report["test"]["accuracy"], report["test"]["f1_macro"])
    if acc < tc.min_accuracy:
        raise GateError(f"teacher gate: test {metric} {acc:.4f} < teacher.min_accuracy {tc.min_accuracy} "
                        "(on evaluate.metric); train it longer (teacher.epochs) or check the data")
    return report
