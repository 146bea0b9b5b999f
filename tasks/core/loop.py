"""One training loop for the teacher, the distilled student and the fine-tuned student.

What differs between them is only the step function (how a batch becomes a loss); this loop
owns the rest: optimiser and schedule, the compute precision (base.precision, through
tasks.core.precision), checkpoints and `resume`, early stopping on validation accuracy, progress
bars, and DDP when launched by torchrun/accelerate.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tasks.core.data import TokenDataset, make_loader
from tasks.core.dist import barrier, dist_info, init_distributed, reduce_mean  # noqa: F401 (re-exported)
from tasks.core.precision import autocast, resolve_precision
from tasks.core.predict import predict_logits

log = logging.getLogger("kd")

StepFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class LoopConfig:
    """Settings of one training run."""

    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    grad_clip: float = 1.0
    patience: int = 2
    save_every_steps: int = 0
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"  # base.precision: auto | fp32 | bf16 (autocast dtype of training and validation)
    compile: bool = False
    desc: str = "train"
    metric: str = "accuracy"  # accuracy | f1_macro: the validation figure that picks the best epoch


@dataclass
class TrainResult:
    """What a run did: per-epoch history, the best validation score (in `LoopConfig.metric`), and
    whether it stopped early."""

    history: list[dict] = field(default_factory=list)
    best_score: float = -1.0
    stopped_early: bool = False
    steps: int = 0
    seconds: float = 0.0

    @property
    def best_accuracy(self) -> float:
        """The best validation score; the name predates `LoopConfig.metric` (it is accuracy by default)."""
        return self.best_score


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when there is one (under DDP, this process's local GPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, cfg: LoopConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW without weight decay on biases and LayerNorm weights, with the fused kernel on CPU and CUDA.

    The fused step is the same update in one kernel per tensor group: on this repo's 2-core CPU it is
    68 -> 13 ms a step for the 22.7 M-parameter teacher, 17% of the teacher stage before (README,
    bench/stage_profile.py). transformers' Trainer uses it by default (optim `adamw_torch_fused`).
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type in ("cpu", "cuda"))


def make_schedule(optimizer: torch.optim.Optimizer, total: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first `warmup_ratio` of `total` steps, then linear decay to zero.

    transformers' `get_linear_schedule_with_warmup`, as its Trainer uses it: the factor is
    step / warmup during warm-up (0 at the first step), then (total - step) / (total - warmup).
    Written out rather than imported: importing it pulls in transformers.trainer_utils and, through
    it, peft (2.2 s of start-up in every stage process); tests/code/test_loop.py checks the factors.
    """
    warmup = int(total * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def macro_f1(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean of the per-class F1 over all `num_classes` classes (0 for a class never
    predicted nor present), as sklearn's f1_score(average="macro", labels=range(C), zero_division=0).

    Args:
        preds: [N] predicted class ids.
        labels: [N] true class ids.
        num_classes: C.
    """
    eye = torch.eye(num_classes, dtype=torch.float64)
    p, t = eye[preds], eye[labels]  # [N, C] one-hot
    tp = (p * t).sum(0)
    denom = p.sum(0) + t.sum(0)  # 2TP + FP + FN
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    return float(f1.mean())


def validation_metrics(model: torch.nn.Module, data: TokenDataset, pad_id: int, batch_size: int,
                       device: torch.device, precision: str = "auto") -> dict[str, float]:
    """Accuracy, macro-F1 and cross-entropy on a labelled set (batches in `precision`, base.precision)."""
    logits = torch.from_numpy(predict_logits(model, data, pad_id, batch_size, device, precision=precision))
    labels = torch.from_numpy(data.labels)
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    preds = logits.argmax(-1)
    return {"val_accuracy": float((preds == labels).float().mean()),
            "val_f1_macro": macro_f1(preds, labels, logits.shape[-1]), "val_loss": loss}


class Checkpointer:
    """`state.pt` (everything needed to resume) and `best.pt` (best weights), written atomically."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _save(self, obj: object, name: str) -> None:
        if dist_info()[0] != 0:  # one writer under DDP
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{name}.tmp"
        torch.save(obj, tmp)
        os.replace(tmp, self.folder / name)

    def save_state(self, state: dict) -> None:
        self._save(state, "state.pt")

    def save_best(self, model: torch.nn.Module) -> None:
        self._save({k: v.detach().cpu() for k, v in model.state_dict().items()}, "best.pt")

    def load_state(self) -> dict | None:
        path = self.folder / "state.pt"
        return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None

    def load_best(self, model: torch.nn.Module) -> bool:
        path = self.folder / "best.pt"
        if not path.exists():
            return False
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return True

    def clear(self) -> None:
        """Start over: remove every checkpoint, keep the (empty) folder."""
        if dist_info()[0] == 0:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True, exist_ok=True)


def train(model: torch.nn.Module, train_data: TokenDataset, val_data: TokenDataset, step_fn: StepFn,
          cfg: LoopConfig, pad_id: int, ckpt_dir: str | Path, resume: bool = False,
          on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `model` in place and leave it holding the best weights on validation accuracy.

    Args:
        model: the model to train (any module whose forward returns `.logits`).
        train_data: training rows; the step function gets batches of them.
        val_data: labelled validation rows, scored after each epoch.
        step_fn: `(model, batch) -> (loss, parts)`, batch as made by `Collator`, on the device.
        cfg: loop settings.
        pad_id: the tokenizer's pad token id.
        ckpt_dir: where `state.pt` / `best.pt` go; a resumed run continues from `state.pt`.
        resume: continue from the last checkpoint instead of starting over.
        on_epoch: called with each epoch's record once it is checkpointed; an exception it raises
            stops the run there (the sweep's pruning of a hopeless trial).

    Returns:
        The run's `TrainResult`.
    """
    rank, world = dist_info()
    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, device)  # None: fp32
    # Under DDP every rank starts from the same weights (DDP also broadcasts them from rank 0).
    torch.manual_seed(cfg.seed)
    model.to(device)
    ckpt = Checkpointer(ckpt_dir)
    loader = make_loader(train_data, cfg.batch_size, pad_id, cfg.seed, True, device, rank, world)
    steps_per_epoch = len(loader.batch_sampler)
    optimizer = make_optimizer(model, cfg, device)
    schedule = make_schedule(optimizer, max(1, steps_per_epoch * cfg.epochs), cfg.warmup_ratio)
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": -1.0, "bad_epochs": 0,
             "history": [], "stopped_early": False}
    saved = ckpt.load_state() if resume else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        torch.set_rng_state(saved["rng"])
        state = saved["loop"]
        log.info("[%s] resumed at epoch %d, step %d", cfg.desc, state["epoch"] + 1, state["global_step"])
    elif not resume:
        ckpt.clear()
    barrier()
    forward = model
    if world > 1:
        forward = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        forward = torch.compile(forward, dynamic=True)

    def checkpoint() -> None:
        ckpt.save_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "schedule": schedule.state_dict(), "rng": torch.get_rng_state(), "loop": state})

    start = time.perf_counter()
    while state["epoch"] < cfg.epochs and not state["stopped_early"]:
        epoch = state["epoch"]
        loader.batch_sampler.set_epoch(epoch, skip=state["step_in_epoch"])
        model.train()
        epoch_start, seen, done, loss_sum = time.perf_counter(), 0, 0, torch.zeros((), device=device)
        parts_sum: dict[str, torch.Tensor] = {}
        bar = tqdm(loader, total=steps_per_epoch, initial=state["step_in_epoch"], disable=rank != 0,
                   desc=f"{cfg.desc} {epoch + 1}/{cfg.epochs}", unit="step", mininterval=2)
        for batch in bar:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast(device.type, dtype):
                loss, parts = step_fn(forward, batch)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0) + v
            seen += len(batch["labels"])
            done += 1
            state["step_in_epoch"] += 1
            state["global_step"] += 1
            if state["global_step"] % 20 == 0:
                bar.set_postfix(loss=f"{loss.detach().item():.4f}", refresh=False)
            if cfg.save_every_steps and state["global_step"] % cfg.save_every_steps == 0:
                checkpoint()
        steps = max(1, done)  # steps run by this process (a resumed epoch counts its rest only)
        record = {"epoch": epoch + 1, "train_loss": reduce_mean(loss_sum / steps),
                  **{f"train_{k}": reduce_mean(v / steps) for k, v in parts_sum.items()}}
        if device.type == "cuda":
            torch.cuda.synchronize()
        took = time.perf_counter() - epoch_start  # training only: validation is timed apart
        record.update(seconds=round(took, 2), samples_per_s=round(seen * world / max(took, 1e-9), 1))
        val_start = time.perf_counter()
        record.update(validation_metrics(model, val_data, pad_id, cfg.eval_batch_size, device, cfg.precision))
        record["val_seconds"] = round(time.perf_counter() - val_start, 2)
        state["history"].append(record)
        if record[f"val_{cfg.metric}"] > state["best"]:
            state["best"], state["bad_epochs"] = record[f"val_{cfg.metric}"], 0
            ckpt.save_best(model)
        else:
            state["bad_epochs"] += 1
            state["stopped_early"] = state["bad_epochs"] >= cfg.patience
        log.info("[%s] epoch %d: train_loss %.4f val_accuracy %.4f val_f1_macro %.4f val_loss %.4f "
                 "(%.1f s, %.1f samples/s)", cfg.desc, epoch + 1, record["train_loss"], record["val_accuracy"],
                 record["val_f1_macro"], record["val_loss"],
                 took, record["samples_per_s"])
        state["epoch"], state["step_in_epoch"] = epoch + 1, 0
        checkpoint()
        if on_epoch is not None:
            on_epoch(record)
        if state["stopped_early"]:
            log.info("[%s] early stop: no val improvement for %d epochs", cfg.desc, cfg.patience)
    barrier()
    ckpt.load_best(model)
    barrier()
    ckpt.clear()  # a finished run has nothing to resume; checkpoints of a crashed one stay
    return TrainResult(state["history"], state["best"], state["stopped_early"], state["global_step"],
                       time.perf_counter() - start)
