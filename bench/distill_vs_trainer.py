"""Distillation throughput: kdistill's distiller against the obvious transformers `Trainer` recipe.

The baseline is what a user would write otherwise: a `Trainer` subclass whose `compute_loss`
runs the teacher online every step, on batches statically padded to `max_length`, with no
logit cache. Both sides use the same teacher (models/teacher), the same student initialisation
(teacher layers by the default map), the same loss (tasks.core.loss.distillation_loss with the
params.yaml weights), optimiser settings, epochs, data and thread count. Each runs in its own
process so that peak memory (max RSS) is its own.

Needs a finished pipeline run (data/processed/ and models/teacher/): `make run` first, or
`--root` naming another project root that has one.

    python bench/distill_vs_trainer.py                 # 3 epochs on the full default train split
    python bench/distill_vs_trainer.py --rows 2000     # a quicker look

Prints a table and writes reports/bench/distill_vs_trainer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def _setup(args):
    import torch

    from tasks.infra.config import load_config
    from tasks.infra.storage import Paths

    torch.set_num_threads(args.threads)
    overrides = {"distill": {"epochs": args.epochs, "patience": args.epochs + 1}, "base": {"threads": args.threads}}
    return load_config(ROOT / "params.yaml", overrides), Paths(Path(args.root))


def _train_frame(paths, rows: int | None):
    from tasks.infra.common import load_split

    train = load_split(paths, "train")
    return train.sample(rows, random_state=0).reset_index(drop=True) if rows and rows < len(train) else train


def _accuracy(model, tokenizer, paths, max_length: int) -> float:
    from tasks.infra.common import encode_split, load_split
    from tasks.core.predict import predict_logits

    test = encode_split(tokenizer, load_split(paths, "test"), max_length)
    preds = predict_logits(model.cpu(), test, tokenizer.pad_token_id, 128).argmax(-1)
    return float((preds == test.labels).mean())


def run_ours(args) -> dict:
    """kdistill's distill stage (cache, dynamic padding, length grouping, own loop) in a scratch root."""
    from _common import scratch_project

    from tasks.distill import distill
    from tasks.infra.models import load_classifier, load_tokenizer

    cfg, paths = _setup(args)
    with scratch_project(paths, args.rows) as scratch:
        start = time.perf_counter()
        report = distill(cfg, scratch)  # includes building the teacher-logit cache
        seconds = time.perf_counter() - start
        names = json.loads(paths.summary.read_text())["labels"]
        student, _ = load_classifier(str(scratch.distilled), names)
        tokenizer = load_tokenizer(str(scratch.distilled))
        accuracy = _accuracy(student, tokenizer, paths, cfg.base.max_length)
    return {"rows": report["transfer_rows"]["labelled"], "epochs": len(report["history"]), "seconds": seconds,
            "accuracy": accuracy, "real_tokens_per_epoch": report["transfer_tokens"],
            "cache_seconds": report["cache_seconds"]}


def run_baseline(args) -> dict:
    """A transformers Trainer subclass running the teacher online, static padding, no cache."""
    import torch
    from transformers import Trainer, TrainingArguments

    from tasks.core.cache import teacher_forward
    from tasks.core.loss import LossWeights, distillation_loss, mean_pool
    from tasks.core.student import build_student, default_layer_map, num_layers
    from tasks.infra.models import load_classifier, load_tokenizer

    cfg, paths = _setup(args)
    dc = cfg.distill
    names = json.loads(paths.summary.read_text())["labels"]
    tokenizer = load_tokenizer(str(paths.teacher))
    teacher, _ = load_classifier(str(paths.teacher), names)
    teacher.eval().requires_grad_(False)
    layer_map = default_layer_map(num_layers(teacher), dc.student_layers or num_layers(teacher) // 2)
    torch.manual_seed(cfg.base.seed)
    student = build_student(teacher, layer_map)
    train = _train_frame(paths, args.rows)
    enc = tokenizer(train["text"].tolist(), truncation=True, max_length=cfg.base.max_length, padding="max_length",
                    return_tensors="pt", return_token_type_ids=False)
    real_tokens = int(enc["attention_mask"].sum())
    rows = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
             "labels": torch.tensor(int(label))} for i, label in enumerate(train["label"])]
    weights = LossWeights(dc.temperature, dc.alpha_kd, dc.alpha_ce, dc.alpha_cos)

    class OnlineKDTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            need_hidden = weights.alpha_cos > 0
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        output_hidden_states=need_hidden)
            t_logits, t_pooled, _ = teacher_forward(teacher, inputs, layer_map if need_hidden else None)
            s_pooled = None
            if need_hidden:
                s_pooled = torch.stack([mean_pool(h, inputs["attention_mask"]) for h in out.hidden_states[1:]], 1)
            loss, _ = distillation_loss(out.logits, t_logits, inputs["labels"], weights, s_pooled, t_pooled)
            return (loss, out) if return_outputs else loss

    out_dir = tempfile.mkdtemp(prefix="bench-trainer-")
    targs = TrainingArguments(output_dir=out_dir, num_train_epochs=args.epochs, per_device_train_batch_size=dc.batch_size,
                              learning_rate=dc.lr, weight_decay=dc.weight_decay, warmup_steps=float(dc.warmup_ratio),
                              max_grad_norm=dc.grad_clip, lr_scheduler_type="linear", save_strategy="no",
                              eval_strategy="no", logging_steps=50, report_to=[], use_cpu=not torch.cuda.is_available(),
                              seed=cfg.base.seed, dataloader_num_workers=0, disable_tqdm=False)
    trainer = OnlineKDTrainer(model=student, args=targs, train_dataset=rows, processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    shutil.rmtree(out_dir, ignore_errors=True)
    accuracy = _accuracy(student, tokenizer, paths, cfg.base.max_length)
    return {"rows": len(rows), "epochs": args.epochs, "seconds": seconds, "accuracy": accuracy,
            "real_tokens_per_epoch": real_tokens, "cache_seconds": 0.0}


def _child(args) -> None:
    result = (run_ours if args.variant == "ours" else run_baseline)(args)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="train rows (default: the whole train split)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--root", default=str(ROOT), help="a project root with a finished pipeline run")
    parser.add_argument("--variant", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return _child(args)
    results = {}
    for variant in ("baseline", "ours"):
        cmd = [sys.executable, __file__, "--variant", variant, "--epochs", str(args.epochs),
               "--threads", str(args.threads), "--root", args.root] + (["--rows", str(args.rows)] if args.rows else [])
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"{variant} failed (exit {proc.returncode})")
        r = json.loads(line[len("RESULT "):])
        r["samples_per_s"] = r["rows"] * r["epochs"] / r["seconds"]
        r["tokens_per_s"] = r["real_tokens_per_epoch"] * r["epochs"] / r["seconds"]
        results[variant] = r
    speedup = results["ours"]["samples_per_s"] / results["baseline"]["samples_per_s"]
    print(f"\n{'variant':<10}{'rows':>7}{'epochs':>7}{'seconds':>9}{'samples/s':>11}{'tokens/s':>10}"
          f"{'peak MB':>9}{'accuracy':>10}")
    for name, r in results.items():
        print(f"{name:<10}{r['rows']:>7}{r['epochs']:>7}{r['seconds']:>9.1f}{r['samples_per_s']:>11.1f}"
              f"{r['tokens_per_s']:>10.0f}{r['peak_rss_mb']:>9.0f}{r['accuracy']:>10.4f}")
    print(f"speed-up (samples/s): {speedup:.2f}x; accuracy difference: "
          f"{results['ours']['accuracy'] - results['baseline']['accuracy']:+.4f}")
    out = {"machine": {"cpus": os.cpu_count(), "threads": args.threads}, "results": results, "speedup": speedup}
    (ROOT / "reports" / "bench").mkdir(parents=True, exist_ok=True)
    (ROOT / "reports" / "bench" / "distill_vs_trainer.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
