"""GPU distillation throughput, MFU, memory and time to accuracy: a BERT-base-size teacher → 6-layer student.

Needs nothing beyond torch and transformers (it imports only `tasks.core`, the embedded data reader and the
split-model finder, never Prefect, DVC or Evidently), so it runs on a bare GPU machine:

    python bench/gpu_distill.py                       # CUDA, MPNet-base shape (all-mpnet-base-v2's), random weights
    python bench/gpu_distill.py --arch bert           # BERT-base shape, as before issue 22
    python bench/gpu_distill.py --teacher-model all-mpnet-base-v2 --data movies --epochs 3
                                                      # real weights and text: time to the Trainer's val accuracy
    torchrun --nproc-per-node 8 bench/gpu_distill.py --variants ours+cache   # DDP (the loop's own)
    python bench/gpu_distill.py --tiny --device cpu   # a seconds-long smoke run anywhere

With `--data movies` the teacher is first fine-tuned on the task (--teacher-epochs, our loop), every variant
is validated after each epoch, and each reports the training time until it first reached the best val
accuracy of the Trainer baseline (the strongest Trainer recipe: fused AdamW, bf16, online teacher): cache
building included, validation excluded; None when it never got there. Peak GPU memory is reported per variant.

Variants, all in the precision of --precision (base.precision's switch, tasks.core.precision: auto is
bf16 autocast on CUDA with bf16 and on CPUs with hardware bf16), with fused AdamW on CUDA:
  baseline         transformers Trainer, teacher online each step, static padding (the recipe
                   of bench/distill_vs_trainer.py)
  ours             tasks.core loop, teacher online (no cache)
  ours+cache       tasks.core loop, teacher logits + pooled states cached once
  ours+compile     as `ours`, torch.compile on the student
  ours+cache+compile

Weights are random (speed does not depend on them). Rows have random lengths up to --seq, or
exactly --seq with --fixed-length. Reports samples/s, tokens/s (real tokens) and model FLOPs
utilisation against the GPU's peak dense bf16 rate, in a table and reports/bench/gpu_distill.json.
The last epoch is timed (the first carries compilation and cache building).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stamp import stamp  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import (AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification,  # noqa: E402
                          MPNetConfig, MPNetForSequenceClassification)

from tasks.core.cache import LogitCache  # noqa: E402
from tasks.core.data import TokenDataset  # noqa: E402
from tasks.core.loop import LoopConfig, resolve_device, train  # noqa: E402
from tasks.core.loss import LossWeights, distillation_loss, mean_pool  # noqa: E402
from tasks.core.precision import precision_name, resolve_precision  # noqa: E402
from tasks.precisions import PRECISIONS  # noqa: E402
from tasks.core.dist import dist_info, init_distributed, is_main  # noqa: E402
from tasks.core.student import build_student, default_layer_map  # noqa: E402

ARCHS = ("mpnet", "bert")
VARIANTS = ("baseline", "ours", "ours+cache", "ours+compile", "ours+cache+compile")

# Dense bf16 peak, TFLOP/s (no sparsity), by device-name substring.
PEAK_BF16 = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0, "4090": 165.0}


def peak_tflops(override: float | None) -> float | None:
    """The GPU's peak dense bf16 rate, from the table or --peak-tflops."""
    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def make_models(tiny: bool, arch: str = "mpnet", teacher_model: str | None = None,
                num_labels: int = 2) -> tuple[torch.nn.Module, int]:
    """The teacher classifier and its depth: the saved `teacher_model` (a folder, or a split model such as
    all-mpnet-base-v2 assembled by `make base-teacher`), else random weights in `arch`'s base shape (tiny: small)."""
    if teacher_model:
        from tasks.models.base_teacher import MODELS, assembled_path

        path = assembled_path(teacher_model, "--teacher-model") if teacher_model in MODELS else teacher_model
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels,
                                                                   ignore_mismatched_sizes=True)
        return model, model.config.num_hidden_layers
    shape = (dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128) if tiny else
             dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072))
    if arch == "mpnet":  # all-mpnet-base-v2's config: vocabulary 30,527, 514 positions, padding id 1
        config = MPNetConfig(vocab_size=1000 if tiny else 30527, max_position_embeddings=514, num_labels=num_labels,
                             **shape)
        cls = MPNetForSequenceClassification
    else:
        config = BertConfig(vocab_size=1000 if tiny else 30522, num_labels=num_labels, **shape)
        cls = BertForSequenceClassification
    torch.manual_seed(0)
    return cls(config), config.num_hidden_layers


def special_ids(config) -> tuple[int, int, int]:
    """(start, end, pad) token ids of the model's family: MPNet <s> </s> <pad> = 0 2 1; BERT [CLS] [SEP] [PAD]."""
    if config.model_type == "mpnet":
        return 0, 2, config.pad_token_id if config.pad_token_id is not None else 1
    return 101 % config.vocab_size, 102 % config.vocab_size, config.pad_token_id or 0


def make_data(rows: int, seq: int, vocab: int, fixed: bool, seed: int, ends: tuple[int, int] = (101, 102)) -> TokenDataset:
    """Random token rows (start … end, e.g. [CLS] … [SEP]) with labels 0/1."""
    rng = np.random.default_rng(seed)
    lengths = np.full(rows, seq) if fixed else rng.integers(max(8, seq // 8), seq + 1, rows)
    low = min(1000, vocab // 2)  # above the special tokens
    ids = [np.concatenate([[ends[0] % vocab], rng.integers(low, vocab, n - 2), [ends[1] % vocab]]) for n in lengths]
    return TokenDataset(ids, rng.integers(0, 2, rows))


def task_data(name: str, teacher_model: str, seq: int, rows: int) -> tuple[TokenDataset, TokenDataset, int]:
    """An embedded task's texts in the teacher's tokens: (train, val, classes); val is a fixed 10% of the rows."""
    from transformers import AutoTokenizer

    from tasks.infra.embedded import read_embedded
    from tasks.models.base_teacher import MODELS, assembled_path

    frame = read_embedded(name).sample(frac=1.0, random_state=0).reset_index(drop=True)
    names = sorted(frame["label"].astype(str).unique())
    labels = frame["label"].astype(str).map({n: i for i, n in enumerate(names)}).to_numpy()
    path = assembled_path(teacher_model, "--teacher-model") if teacher_model in MODELS else teacher_model
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer(frame["text"].astype(str).tolist(), truncation=True, max_length=seq,
                    return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    cut = len(ids) // 10
    train = slice(cut, cut + rows if rows else None)
    return TokenDataset(ids[train], labels[train]), TokenDataset(ids[:cut], labels[:cut]), len(names)


def finetune_teacher(teacher: torch.nn.Module, data: TokenDataset, val: TokenDataset, args, device) -> dict:
    """Fine-tune the teacher on the task first (our loop, plain cross-entropy), so it has something to teach."""
    def step(model, batch):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        return out.loss, {}

    teacher.requires_grad_(True).train()
    cfg = LoopConfig(epochs=args.teacher_epochs, batch_size=args.batch_size, lr=5e-5, patience=99,
                     device=str(device.type), precision=args.precision, desc="teacher")
    with tempfile.TemporaryDirectory() as ckpt:
        result = train(teacher, data, val, step, cfg, args.pad_id, ckpt)
    teacher.eval().requires_grad_(False)
    return {"best_val_accuracy": result.best_score, "seconds": round(result.seconds, 1)}


def peak_memory_gb(device) -> float | None:
    """Peak GPU memory allocated since the last reset, GB (None off CUDA)."""
    return round(torch.cuda.max_memory_allocated(device) / 1e9, 2) if device.type == "cuda" else None


def time_to_accuracy(epochs: list[dict], target: float | None, cache_seconds: float = 0.0) -> float | None:
    """Training seconds (cache building included, validation excluded) until the first epoch whose val accuracy
    reached `target`; None without a target or when no epoch reached it.

    Args:
        epochs: per-epoch records with `seconds` and `val_accuracy`, in order.
        target: the accuracy to reach.
        cache_seconds: time spent before the first epoch (the teacher-output cache).
    """
    if target is None:
        return None
    elapsed = cache_seconds
    for record in epochs:
        elapsed += record["seconds"]
        if record["val_accuracy"] >= target - 1e-9:
            return round(elapsed, 2)
    return None


def train_flops_per_token(model: torch.nn.Module, seq: int, backward: bool) -> float:
    """Model FLOPs per token: 2·N (forward) or 6·N (forward+backward) for the non-embedding
    weights, plus attention scores/values (4·L·H·seq forward, ×3 with backward)."""
    cfg = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)
    attn = 4 * cfg.num_hidden_layers * cfg.hidden_size * seq
    return (6 * n + 3 * attn) if backward else (2 * n + attn)


def run_ours(teacher, data, val, args, cache: bool, compile_: bool, device) -> dict:
    layer_map = default_layer_map(teacher.config.num_hidden_layers, teacher.config.num_hidden_layers // 2)
    student = build_student(teacher, layer_map)
    weights = LossWeights(2.0, 0.5, 0.5, 0.1)
    cached = None
    cache_seconds = 0.0
    if cache:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            entry = LogitCache(folder, "bench")
            out = entry.build(teacher, data, args.pad_id, 256, device, layer_map, resolve_precision(args.precision, device))
            # Copy into memory: the temporary folder goes away; real runs keep the memmap.
            cached = type(out)([np.array(s) for s in out.logit_shards], [np.array(s) for s in out.pooled_shards])
        cache_seconds = time.perf_counter() - start

    def step(model, batch):
        mask = batch["attention_mask"]
        out = model(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=True)
        if cached is None:
            with torch.no_grad():  # inside the loop's autocast: the teacher runs in the same precision
                t = teacher(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=True)
            t_logits = t.logits
            t_pooled = torch.stack([mean_pool(t.hidden_states[i + 1], mask) for i in layer_map], 1)
        else:
            t_logits, t_pooled = cached.take(batch["index"].cpu(), out.logits.device)
        s_pooled = torch.stack([mean_pool(h, mask) for h in out.hidden_states[1:]], 1)
        return distillation_loss(out.logits, t_logits, batch["labels"], weights, s_pooled, t_pooled)

    cfg = LoopConfig(epochs=args.epochs, batch_size=args.batch_size, lr=1e-4, patience=99, device=str(device.type),
                     precision=args.precision, compile=compile_, desc="ours")
    with tempfile.TemporaryDirectory() as ckpt:
        result = train(student, data, val, step, cfg, args.pad_id, ckpt)
    last = result.history[-1]
    tokens = data.real_tokens / dist_info()[1]  # this rank's share of the tokens: FLOPs and MFU are per GPU
    flops = train_flops_per_token(student, args.seq, True) + (0 if cache else train_flops_per_token(teacher, args.seq, False))
    return {"samples_per_s": last["samples_per_s"], "tokens_per_s": data.real_tokens / last["seconds"],
            "epoch_seconds": last["seconds"], "cache_seconds": round(cache_seconds, 2),
            "flops_per_s": flops * tokens / last["seconds"],
            "epochs": [{k: r[k] for k in ("seconds", "val_accuracy")} for r in result.history]}


def run_baseline(teacher, data, args, device, val: TokenDataset | None = None) -> dict:
    from transformers import Trainer, TrainingArguments

    layer_map = default_layer_map(teacher.config.num_hidden_layers, teacher.config.num_hidden_layers // 2)
    student = build_student(teacher, layer_map)
    weights = LossWeights(2.0, 0.5, 0.5, 0.1)
    rows = []
    for ids, label, _ in data:  # static padding to --seq
        padded = np.full(args.seq, args.pad_id, dtype=np.int64)
        padded[:len(ids)] = ids
        mask = (np.arange(args.seq) < len(ids)).astype(np.int64)
        rows.append({"input_ids": torch.from_numpy(padded), "attention_mask": torch.from_numpy(mask),
                     "labels": torch.tensor(label)})

    class OnlineKDTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mask = inputs["attention_mask"]
            out = model(input_ids=inputs["input_ids"], attention_mask=mask, output_hidden_states=True)
            with torch.no_grad():
                t = teacher(input_ids=inputs["input_ids"], attention_mask=mask, output_hidden_states=True)
            t_pooled = torch.stack([mean_pool(t.hidden_states[i + 1], mask) for i in layer_map], 1)
            s_pooled = torch.stack([mean_pool(h, mask) for h in out.hidden_states[1:]], 1)
            loss, _ = distillation_loss(out.logits, t.logits, inputs["labels"], weights, s_pooled, t_pooled)
            return (loss, out) if return_outputs else loss

    timings, scores = [], []

    from transformers import TrainerCallback

    from tasks.core.loop import validation_metrics

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, *a, **k):
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter())

        def on_epoch_end(self, *a, **k):
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings[-1] = time.perf_counter() - timings[-1]
            if val is not None:  # outside the timed span, as our loop's validation is
                scores.append(validation_metrics(student, val, args.pad_id, 256, device, args.precision)["val_accuracy"])
                student.train()

    with tempfile.TemporaryDirectory() as out_dir:
        targs = TrainingArguments(output_dir=out_dir, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
                                  learning_rate=1e-4, save_strategy="no", eval_strategy="no", report_to=[],
                                  bf16=resolve_precision(args.precision, device) is not None,
                                  use_cpu=device.type == "cpu", disable_tqdm=True, optim="adamw_torch_fused",
                                  dataloader_num_workers=0, logging_steps=10**9)
        OnlineKDTrainer(model=student, args=targs, train_dataset=rows, callbacks=[EpochTimer()]).train()
    seconds = timings[-1]
    flops = train_flops_per_token(student, args.seq, True) + train_flops_per_token(teacher, args.seq, False)
    # The baseline computes on padding too; MFU counts real tokens only, as for ours.
    world = dist_info()[1]  # under torchrun the Trainer runs DDP: each rank saw its share of the rows
    return {"samples_per_s": len(data) / seconds, "tokens_per_s": data.real_tokens / seconds,
            "epoch_seconds": seconds, "cache_seconds": 0.0, "flops_per_s": flops * data.real_tokens / world / seconds,
            "epochs": [{"seconds": t, "val_accuracy": a} for t, a in zip(timings, scores)]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The bench's options, checked before anything heavy is loaded (tests/code/test_bench_gpu.py)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default="mpnet", choices=ARCHS, help="random-weight teacher shape (no --teacher-model)")
    parser.add_argument("--teacher-model", default=None,
                        help="real teacher weights: a folder or all-mpnet-base-v2 (`make base-teacher`)")
    parser.add_argument("--data", default=None, help="an embedded task (e.g. movies) instead of random rows; needs "
                                                     "--teacher-model; adds time to the Trainer's val accuracy")
    parser.add_argument("--teacher-epochs", type=int, default=2, help="teacher fine-tuning first, with --data")
    parser.add_argument("--rows", type=int, default=4096, help="train rows (with --data: 0 = all)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--fixed-length", action="store_true", help="every row exactly --seq tokens")
    parser.add_argument("--tiny", action="store_true", help="a tiny model, for a smoke run")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="base.precision's values")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench" / "gpu_distill.json"))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; expected some of {list(VARIANTS)}")
    if args.data and not args.teacher_model:
        parser.error("--data needs --teacher-model (random weights have nothing to teach)")
    if args.teacher_model and args.tiny:
        parser.error("--tiny and --teacher-model exclude each other")
    if args.data and "baseline" not in args.variants.split(","):
        parser.error("--data: the time to accuracy is measured against the baseline; keep it in --variants")
    for name in ("rows", "seq", "batch_size", "epochs"):
        if getattr(args, name) < (0 if name == "rows" and args.data else 1):
            parser.error(f"--{name.replace('_', '-')}: expected a positive number, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    init_distributed()  # under torchrun: one process per GPU; our loop wraps the student in DDP itself
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    val = None
    if args.data:
        data, val, classes = task_data(args.data, args.teacher_model, args.seq, args.rows)
        teacher, _ = make_models(False, args.arch, args.teacher_model, classes)
    else:
        teacher, _ = make_models(args.tiny, args.arch, args.teacher_model)
    start, end, args.pad_id = special_ids(teacher.config)
    teacher.to(device)
    report_teacher = None
    if args.data:
        report_teacher = finetune_teacher(teacher, data, val, args, device)
    else:
        data = make_data(args.rows, args.seq, teacher.config.vocab_size, args.fixed_length, 0, (start, end))
        val = make_data(max(64, args.rows // 16), args.seq, teacher.config.vocab_size, args.fixed_length, 1, (start, end))
    teacher.eval().requires_grad_(False)
    peak = peak_tflops(args.peak_tflops)
    results = {}
    for name in args.variants.split(","):
        torch.manual_seed(0)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        if name == "baseline":
            r = run_baseline(teacher, data, args, device, val if args.data else None)
        else:
            r = run_ours(teacher, data, val, args, cache="cache" in name, compile_="compile" in name, device=device)
        r["mfu"] = r["flops_per_s"] / (peak * 1e12) if peak else None
        r["peak_memory_gb"] = peak_memory_gb(device)
        results[name] = r
        if is_main():
            print(f"{name}: {r['samples_per_s']:.1f} samples/s", flush=True)
    target = max((e["val_accuracy"] for e in results.get("baseline", {}).get("epochs", [])), default=None)
    for r in results.values():
        r["seconds_to_baseline_val"] = time_to_accuracy(r.get("epochs", []), target if args.data else None,
                                                        r["cache_seconds"])
    if not is_main():
        return
    base = results.get("baseline", {}).get("samples_per_s")
    print(f"\n{'variant':<22}{'samples/s':>11}{'tokens/s':>12}{'TFLOP/s':>9}{'MFU':>7}{'vs base':>9}{'peak GB':>9}"
          f"{'s to target':>12}")
    for name, r in results.items():
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        rel = f"{r['samples_per_s'] / base:.2f}x" if base else "n/a"
        mem = f"{r['peak_memory_gb']:.1f}" if r["peak_memory_gb"] is not None else "n/a"
        tta = f"{r['seconds_to_baseline_val']:.1f}" if r["seconds_to_baseline_val"] is not None else "n/a"
        print(f"{name:<22}{r['samples_per_s']:>11.1f}{r['tokens_per_s']:>12.0f}{r['flops_per_s'] / 1e12:>9.1f}"
              f"{mfu:>7}{rel:>9}{mem:>9}{tta:>12}")
    machine = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "peak_bf16_tflops": peak,
               "processes": dist_info()[1], "torch": torch.__version__, "precision": args.precision,
               "resolved_precision": precision_name(resolve_precision(args.precision, device)), "rows": len(data),
               "seq": args.seq, "batch_size": args.batch_size, "epochs": args.epochs, "tiny": args.tiny,
               "fixed_length": args.fixed_length, "arch": teacher.config.model_type, "teacher_model": args.teacher_model,
               "data": args.data, "baseline_best_val_accuracy": target, "teacher_finetune": report_teacher}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(stamp({"machine": machine, "results": results}), indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
