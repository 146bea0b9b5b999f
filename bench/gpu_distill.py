"""GPU distillation throughput and MFU: a BERT-base-sized teacher → 6-layer student at length 128.

Needs nothing beyond torch and transformers (it imports only `tasks.core`, never Prefect, DVC
or Evidently), so it runs on a bare GPU machine:

    python bench/gpu_distill.py                       # CUDA, BERT-base shape, 4096 rows, 2 epochs
    python bench/gpu_distill.py --tiny --device cpu   # a seconds-long smoke run anywhere

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
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

from tasks.core.cache import LogitCache  # noqa: E402
from tasks.core.data import TokenDataset  # noqa: E402
from tasks.core.loop import LoopConfig, resolve_device, train  # noqa: E402
from tasks.core.loss import LossWeights, distillation_loss, mean_pool  # noqa: E402
from tasks.core.precision import precision_name, resolve_precision  # noqa: E402
from tasks.precisions import PRECISIONS  # noqa: E402
from tasks.core.student import build_student, default_layer_map  # noqa: E402

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


def make_models(tiny: bool) -> tuple[torch.nn.Module, int]:
    """A random-weight BERT classifier (BERT-base shape unless tiny) and its depth."""
    if tiny:
        config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                            intermediate_size=128, num_labels=2)
    else:
        config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072, num_labels=2)
    torch.manual_seed(0)
    return BertForSequenceClassification(config), config.num_hidden_layers


def make_data(rows: int, seq: int, vocab: int, fixed: bool, seed: int) -> TokenDataset:
    """Random token rows ([CLS] … [SEP]) with labels 0/1."""
    rng = np.random.default_rng(seed)
    lengths = np.full(rows, seq) if fixed else rng.integers(max(8, seq // 8), seq + 1, rows)
    low = min(1000, vocab // 2)  # above the special tokens
    ids = [np.concatenate([[101 % vocab], rng.integers(low, vocab, n - 2), [102 % vocab]]) for n in lengths]
    return TokenDataset(ids, rng.integers(0, 2, rows))


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
            out = entry.build(teacher, data, 0, 256, device, layer_map, resolve_precision(args.precision, device))
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
        result = train(student, data, val, step, cfg, 0, ckpt)
    last = result.history[-1]
    tokens = data.real_tokens
    flops = train_flops_per_token(student, args.seq, True) + (0 if cache else train_flops_per_token(teacher, args.seq, False))
    return {"samples_per_s": last["samples_per_s"], "tokens_per_s": tokens / last["seconds"],
            "epoch_seconds": last["seconds"], "cache_seconds": round(cache_seconds, 2),
            "flops_per_s": flops * tokens / last["seconds"]}


def run_baseline(teacher, data, args, device) -> dict:
    from transformers import Trainer, TrainingArguments

    layer_map = default_layer_map(teacher.config.num_hidden_layers, teacher.config.num_hidden_layers // 2)
    student = build_student(teacher, layer_map)
    weights = LossWeights(2.0, 0.5, 0.5, 0.1)
    rows = []
    for ids, label, _ in data:  # static padding to --seq
        padded = np.zeros(args.seq, dtype=np.int64)
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

    timings = []

    from transformers import TrainerCallback

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, *a, **k):
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter())

        def on_epoch_end(self, *a, **k):
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings[-1] = time.perf_counter() - timings[-1]

    with tempfile.TemporaryDirectory() as out_dir:
        targs = TrainingArguments(output_dir=out_dir, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
                                  learning_rate=1e-4, save_strategy="no", eval_strategy="no", report_to=[],
                                  bf16=resolve_precision(args.precision, device) is not None,
                                  use_cpu=device.type == "cpu", disable_tqdm=True,
                                  dataloader_num_workers=0, logging_steps=10**9)
        OnlineKDTrainer(model=student, args=targs, train_dataset=rows, callbacks=[EpochTimer()]).train()
    seconds = timings[-1]
    flops = train_flops_per_token(student, args.seq, True) + train_flops_per_token(teacher, args.seq, False)
    # The baseline computes on padding too; MFU counts real tokens only, as for ours.
    return {"samples_per_s": len(data) / seconds, "tokens_per_s": data.real_tokens / seconds,
            "epoch_seconds": seconds, "cache_seconds": 0.0, "flops_per_s": flops * data.real_tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--fixed-length", action="store_true", help="every row exactly --seq tokens")
    parser.add_argument("--tiny", action="store_true", help="a tiny model, for a smoke run")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="base.precision's values")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--variants", default="baseline,ours,ours+cache,ours+compile,ours+cache+compile")
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench" / "gpu_distill.json"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    teacher, _ = make_models(args.tiny)
    teacher.to(device).eval().requires_grad_(False)
    data = make_data(args.rows, args.seq, teacher.config.vocab_size, args.fixed_length, 0)
    val = make_data(max(64, args.rows // 16), args.seq, teacher.config.vocab_size, args.fixed_length, 1)
    peak = peak_tflops(args.peak_tflops)
    results = {}
    for name in args.variants.split(","):
        torch.manual_seed(0)
        if name == "baseline":
            r = run_baseline(teacher, data, args, device)
        else:
            r = run_ours(teacher, data, val, args, cache="cache" in name, compile_="compile" in name, device=device)
        r["mfu"] = r["flops_per_s"] / (peak * 1e12) if peak else None
        results[name] = r
        print(f"{name}: {r['samples_per_s']:.1f} samples/s", flush=True)
    base = results.get("baseline", {}).get("samples_per_s")
    print(f"\n{'variant':<22}{'samples/s':>11}{'tokens/s':>12}{'TFLOP/s':>9}{'MFU':>7}{'vs base':>9}")
    for name, r in results.items():
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        rel = f"{r['samples_per_s'] / base:.2f}x" if base else "n/a"
        print(f"{name:<22}{r['samples_per_s']:>11.1f}{r['tokens_per_s']:>12.0f}{r['flops_per_s'] / 1e12:>9.1f}"
              f"{mfu:>7}{rel:>9}")
    machine = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "peak_bf16_tflops": peak,
               "torch": torch.__version__, "precision": args.precision,
               "resolved_precision": precision_name(resolve_precision(args.precision, device)), "rows": args.rows, "seq": args.seq, "batch_size": args.batch_size,
               "epochs": args.epochs, "tiny": args.tiny, "fixed_length": args.fixed_length}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(stamp({"machine": machine, "results": results}), indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
