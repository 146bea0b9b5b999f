"""finetune: optional supervised fine-tuning of the distilled student (`full`, `lora` or `none`).

LoRA trains low-rank adapters on the attention and feed-forward projections plus the whole
classifier head (`modules_to_save`), then merges them into the weights, so the saved student is
a plain Hugging Face folder that serves without peft; the adapter is kept beside it.
"""

from __future__ import annotations

import logging

import torch

from tasks.infra.splits import load_labels, load_split
from tasks.models.training import encode_split, loop_config, supervised_step
from tasks.infra.config import Config, FinetuneConfig
from tasks.core.data import IGNORE_LABEL
from tasks.core.dist import is_main
from tasks.core.loop import train
from tasks.infra.errors import ConfigError
from tasks.infra.metrics import write_curve_csv
from tasks.models.loading import copy_model, load_classifier, load_tokenizer, prepare_torch
from tasks.infra.storage import Paths, atomic_path, remove_stale_temps, stage_log, write_json
from tasks.models.static import is_static

log = logging.getLogger("kd")

# LoRA targets by model family: the linear layers of attention and feed-forward blocks.
LORA_TARGETS = {
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "bert": ["query", "key", "value", "dense"],
    "roberta": ["query", "key", "value", "dense"],
    "electra": ["query", "key", "value", "dense"],
    # MPNet's attention is attn.q/k/v/o; `dense` alone would also catch its classifier head's dense layer,
    # which is trained whole (modules_to_save) instead.
    "mpnet": ["q", "k", "v", "o", "intermediate.dense", "output.dense"],
}
HEAD_MODULES = {"distilbert": ["pre_classifier", "classifier"]}


def lora_wrap(model: torch.nn.Module, fc: FinetuneConfig) -> torch.nn.Module:
    """The model with LoRA adapters; only adapters and the classifier head stay trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    family = model.config.model_type
    if family not in LORA_TARGETS:
        raise ConfigError(f"finetune.method=lora: no LoRA target modules known for model type '{family}'")
    head = HEAD_MODULES.get(family, ["classifier"])
    targets = LORA_TARGETS[family]  # on BERT, `dense` also adapts the pooler: part of the head path
    peft_config = LoraConfig(task_type=TaskType.SEQ_CLS, r=fc.lora_r, lora_alpha=fc.lora_alpha,
                             lora_dropout=fc.lora_dropout, target_modules=targets, modules_to_save=head)
    wrapped = get_peft_model(model, peft_config)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    log.info("[finetune] LoRA r=%d: %d of %d parameters trainable (%.2f%%)", fc.lora_r, trainable, total,
             100 * trainable / total)
    return wrapped


def finetune(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    """Run the finetune stage: models/distilled/ → models/student/."""
    fc = cfg.finetune
    prepare_torch(cfg.base.threads, cfg.base.seed)
    with stage_log("finetune") as info:
        info["read"].append(paths.distilled)
        if is_main():
            remove_stale_temps(paths.student)  # a killed run's half-written (or moved-aside) model copies
        if not paths.distilled.is_dir():
            raise ConfigError(f"{paths.distilled}: not found; run the distill stage first")
        report: dict = {"method": fc.method, "history": []}
        if fc.method == "none":
            if is_main():
                copy_model(paths.distilled, paths.student)
            paths.checkpoints("finetune").mkdir(parents=True, exist_ok=True)  # a declared (empty) output
        else:
            names = load_labels(paths)
            tokenizer = load_tokenizer(str(paths.distilled), key="models/distilled")
            model, _ = load_classifier(str(paths.distilled), names, key="models/distilled")
            if fc.method == "lora" and is_static(model):
                raise ConfigError("finetune.method: lora adapts attention and feed-forward layers, and the static "
                                  "student (distill.student: static) has none; expected full or none")
            frames = {s: load_split(paths, s) for s in ("train", "val")}
            # Zero-shot mode's train rows may have no label (IGNORE_LABEL): only labelled ones can be fine-tuned on.
            frames["train"] = frames["train"][frames["train"]["label"] != IGNORE_LABEL]
            if frames["train"].empty:
                raise ConfigError(f"finetune.method={fc.method}: the train split has no labelled row (zero-shot "
                                  "mode, teacher.zero_shot); expected finetune.method: none")
            data = {s: encode_split(tokenizer, f, cfg.base.max_length) for s, f in frames.items()}
            trainee = lora_wrap(model, fc) if fc.method == "lora" else model
            result = train(trainee, data["train"], data["val"], supervised_step,
                           loop_config(fc, cfg.base, "finetune", cfg.evaluate.metric),
                           tokenizer.pad_token_id, paths.checkpoints("finetune"), resume=resume)
            report.update(history=result.history, **{f"best_val_{cfg.evaluate.metric}": result.best_score})
            if is_main():  # under DDP every rank holds the same weights; one writes
                with atomic_path(paths.student) as tmp:
                    if fc.method == "lora":
                        trainee.save_pretrained(tmp / "adapter")  # the adapter alone, before merging
                        model = trainee.merge_and_unload()
                    model.cpu().save_pretrained(tmp, safe_serialization=True)
                    tokenizer.save_pretrained(tmp)
        if is_main():
            write_json(paths.reports / "finetune.json", report)
            write_curve_csv(paths.plots / "finetune_curve.csv", report["history"] or [{"epoch": 0}])
        info["wrote"] += [paths.student, paths.reports / "finetune.json"]
    return report
