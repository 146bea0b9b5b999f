"""Distillation throughput: kdistill's distiller against the strongest obvious transformers `Trainer` recipe.

Three rows, one run, each in its own process (so that peak memory, max RSS, is its own):
  trainer-dynamic  the baseline: a `Trainer` subclass whose `compute_loss` runs the teacher online,
                   with what a careful user turns on: dynamic padding (`DataCollatorWithPadding`),
                   length-grouped batches (`train_sampling_strategy="group_by_length"`, formerly
                   `group_by_length=True`) and the same precision as ours (`bf16=True` when
                   base.precision resolves to bf16 here);
  trainer-static   the same with every batch padded to max_length and random batches (the recipe
                   this bench compared against before: most of its gap was padding);
  ours             kdistill's distill stage: the teacher-output cache (built once, its time charged
                   to ours), dynamic padding, length-sorted batches, its own loop.
All share the teacher (models/teacher), the student initialisation (teacher layers by the default
map), the loss (tasks.core.loss.distillation_loss with the params.yaml weights), optimiser settings,
epochs, rows and thread count. Reported per row: samples/s and real (non-padding) tokens/s over the
training time (validation excluded; ours' cache build included), validation accuracy after each
epoch, the time to reach the accuracy every row reached (the lowest of their best validation
accuracies), peak memory, and test accuracy.

Needs a finished pipeline run (data/processed/ and models/teacher/): `make run` first, or
`--root` naming another project root that has one.

    env OMP_NUM_THREADS=1 .venv/bin/python bench/distill_vs_trainer.py \
        --root runs/quick --rows 1500 --epochs 3 --threads 1

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

from bench._stamp import stamp  # noqa: E402


def _setup(args):
    import torch

    from tasks.infra.config import load_config
    from tasks.infra.storage import Paths

    torch.set_num_threads(args.threads)
    base = {"threads": args.threads, **({"precision": args.precision} if args.precision else {})}
    overrides = {"distill": {"epochs": args.epochs, "patience": args.epochs + 1}, "base": base}
    return load_config(ROOT / "params.yaml", overrides), Paths(Path(args.root))


def _train_frame(paths, rows: int | None):
    from tasks.infra.splits import load_split

    train = load_split(paths, "train")
    return train.sample(rows, random_state=0).reset_index(drop=True) if rows and rows < len(train) else train


def _accuracy(model, tokenizer, paths, max_length: int, split: str = "test", precision: str = "fp32") -> float:
    """Accuracy on a split (test: fp32, the same yardstick for every row; val: the run's precision)."""
    from tasks.core.predict import predict_logits
    from tasks.infra.splits import load_split
    from tasks.models.training import encode_split

    data = encode_split(tokenizer, load_split(paths, split), max_length)
    preds = predict_logits(model.cpu(), data, tokenizer.pad_token_id, 128, precision=precision).argmax(-1)
    return float((preds == data.labels).mean())


def run_ours(args) -> dict:
    """kdistill's distill stage (cache, dynamic padding, length grouping, own loop) in a scratch root."""
    from _common import scratch_project

    from tasks.distill import distill
    from tasks.models.loading import load_classifier, load_tokenizer

    cfg, paths = _setup(args)
    with scratch_project(paths, args.rows) as scratch:
        start = time.perf_counter()
        report = distill(cfg, scratch)  # includes building the teacher-logit cache
        seconds = time.perf_counter() - start
        names = json.loads(paths.summary.read_text())["labels"]
        student, _ = load_classifier(str(scratch.distilled), names)
        tokenizer = load_tokenizer(str(scratch.distilled))
        accuracy = _accuracy(student, tokenizer, paths, cfg.base.max_length)
    history = [{"epoch": h["epoch"], "train_seconds": h["seconds"], "val_accuracy": h["val_accuracy"]}
               for h in report["history"]]
    return {"rows": report["transfer_rows"]["labelled"], "epochs": len(history), "seconds": seconds,
            "accuracy": accuracy, "real_tokens_per_epoch": report["transfer_tokens"],
            "cache_seconds": report["cache_seconds"], "history": history}


def run_trainer(args, dynamic: bool) -> dict:
    """A transformers Trainer subclass running the teacher online; `dynamic`: the careful recipe
    (DataCollatorWithPadding, length-grouped batches), else static padding to max_length."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    from tasks.core.cache import teacher_forward
    from tasks.core.loss import distillation_loss, mean_pool
    from tasks.core.precision import precision_name, resolve_precision
    from tasks.core.student import build_student, default_layer_map, num_layers
    from tasks.distill import loss_weights
    from tasks.models.loading import load_classifier, load_tokenizer

    cfg, paths = _setup(args)
    dc = cfg.distill
    dtype = resolve_precision(cfg.base.precision, "cpu")
    names = json.loads(paths.summary.read_text())["labels"]
    tokenizer = load_tokenizer(str(paths.teacher))
    teacher, _ = load_classifier(str(paths.teacher), names)
    teacher.eval().requires_grad_(False)
    layer_map = default_layer_map(num_layers(teacher), dc.student_layers or num_layers(teacher) // 2)
    torch.manual_seed(cfg.base.seed)
    student = build_student(teacher, layer_map)
    train = _train_frame(paths, args.rows)
    enc = tokenizer(train["text"].tolist(), truncation=True, max_length=cfg.base.max_length,
                    padding=False if dynamic else "max_length", return_token_type_ids=False)
    real_tokens = int(sum(sum(mask) for mask in enc["attention_mask"]))
    rows = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": int(label)}
            for i, label in enumerate(train["label"])]
    weights = loss_weights(dc)

    class OnlineKDTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            need_hidden = weights.alpha_cos > 0
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        output_hidden_states=need_hidden)
            # Inside the Trainer's autocast: with bf16=True the teacher runs in bf16 too.
            t_logits, t_pooled, _ = teacher_forward(teacher, inputs, layer_map if need_hidden else None)
            s_pooled = None
            if need_hidden:
                s_pooled = torch.stack([mean_pool(h, inputs["attention_mask"]) for h in out.hidden_states[1:]], 1)
            loss, _ = distillation_loss(out.logits, t_logits, inputs["labels"], weights, s_pooled, t_pooled)
            return (loss, out) if return_outputs else loss

    history: list[dict] = []

    class EpochValidation(TrainerCallback):
        """Validation accuracy after each epoch, its time kept out of the training time (as ours does)."""

        def on_epoch_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_epoch_end(self, *_, **__):
            took = time.perf_counter() - self.start
            val = _accuracy(student, tokenizer, paths, cfg.base.max_length, "val", precision_name(dtype))
            history.append({"epoch": len(history) + 1, "train_seconds": round(took, 2), "val_accuracy": val})

    out_dir = tempfile.mkdtemp(prefix="bench-trainer-")
    targs = TrainingArguments(output_dir=out_dir, num_train_epochs=args.epochs, per_device_train_batch_size=dc.batch_size,
                              learning_rate=dc.lr, weight_decay=dc.weight_decay, warmup_steps=float(dc.warmup_ratio),
                              max_grad_norm=dc.grad_clip, lr_scheduler_type="linear", save_strategy="no",
                              eval_strategy="no", logging_steps=50, report_to=[], use_cpu=not torch.cuda.is_available(),
                              bf16=dtype is not None, seed=cfg.base.seed, dataloader_num_workers=0, disable_tqdm=True,
                              train_sampling_strategy="group_by_length" if dynamic else "random")
    collator = DataCollatorWithPadding(tokenizer) if dynamic else None
    trainer = OnlineKDTrainer(model=student, args=targs, train_dataset=rows, processing_class=tokenizer,
                              data_collator=collator, callbacks=[EpochValidation()])
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    shutil.rmtree(out_dir, ignore_errors=True)
    accuracy = _accuracy(student, tokenizer, paths, cfg.base.max_length)
    return {"rows": len(rows), "epochs": args.epochs, "seconds": seconds, "accuracy": accuracy,
            "real_tokens_per_epoch": real_tokens, "cache_seconds": 0.0, "history": history}


VARIANTS = {"trainer-dynamic": lambda args: run_trainer(args, dynamic=True),
            "trainer-static": lambda args: run_trainer(args, dynamic=False), "ours": run_ours}


def _child(args) -> None:
    from tasks.core.precision import precision_name, resolve_precision

    result = VARIANTS[args.variant](args)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg, _ = _setup(args)
    result["precision"] = precision_name(resolve_precision(cfg.base.precision, "cpu"))
    print("RESULT " + json.dumps(result), flush=True)


def summarise(results: dict) -> dict:
    """Throughput over training time (cache included), and the time to the accuracy every row reached."""
    target = min(max(h["val_accuracy"] for h in r["history"]) for r in results.values())
    for r in results.values():
        train_s = sum(h["train_seconds"] for h in r["history"]) + r["cache_seconds"]
        r["train_seconds"] = round(train_s, 2)
        r["samples_per_s"] = r["rows"] * r["epochs"] / train_s
        r["tokens_per_s"] = r["real_tokens_per_epoch"] * r["epochs"] / train_s
        elapsed = r["cache_seconds"]
        for h in r["history"]:
            elapsed += h["train_seconds"]
            if h["val_accuracy"] >= target - 1e-9:
                r["time_to_target_s"], r["epochs_to_target"] = round(elapsed, 2), h["epoch"]
                break
    best = max((v for v in results if v != "ours"), key=lambda v: results[v]["samples_per_s"])
    ours = results["ours"]
    return {"target_val_accuracy": target, "best_baseline": best,
            "speedup_samples_per_s": ours["samples_per_s"] / results[best]["samples_per_s"],
            "speedup_time_to_target": results[best]["time_to_target_s"] / ours["time_to_target_s"],
            "speedup_vs_static_samples_per_s": ours["samples_per_s"] / results["trainer-static"]["samples_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="train rows (default: the whole train split)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                        help="base.precision for every row (default: params.yaml's)")
    parser.add_argument("--root", default=str(ROOT), help="a project root with a finished pipeline run")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated; ours is always run")
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench" / "distill_vs_trainer.json"))
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return _child(args)
    results = {}
    wanted = [v for v in VARIANTS if v in args.variants.split(",") or v == "ours"]
    for variant in wanted:
        cmd = [sys.executable, __file__, "--variant", variant, "--epochs", str(args.epochs),
               "--threads", str(args.threads), "--root", args.root] + (["--rows", str(args.rows)] if args.rows else [])
        cmd += ["--precision", args.precision] if args.precision else []
        proc = subprocess.run(cmd, check=False, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"{variant} failed (exit {proc.returncode})")
        results[variant] = json.loads(line[len("RESULT "):])
        print(f"{variant}: done in {results[variant]['seconds']:.0f} s", file=sys.stderr, flush=True)
    summary = summarise(results) if "trainer-static" in results and len(results) == 3 else None
    print(f"\n{'variant':<17}{'rows':>6}{'ep':>4}{'train s':>9}{'samples/s':>11}{'tokens/s':>10}{'to target s':>13}"
          f"{'peak MB':>9}{'val best':>10}{'test acc':>10}  precision")
    for name, r in results.items():
        to_target = f"{r['time_to_target_s']:.1f}" if "time_to_target_s" in r else "n/a"
        print(f"{name:<17}{r['rows']:>6}{r['epochs']:>4}{r.get('train_seconds', r['seconds']):>9.1f}"
              f"{r.get('samples_per_s', 0):>11.1f}{r.get('tokens_per_s', 0):>10.0f}{to_target:>13}"
              f"{r['peak_rss_mb']:>9.0f}{max(h['val_accuracy'] for h in r['history']):>10.4f}{r['accuracy']:>10.4f}"
              f"  {r['precision']}")
    if summary:
        print(f"target val accuracy {summary['target_val_accuracy']:.4f}; best baseline {summary['best_baseline']}: "
              f"ours is {summary['speedup_samples_per_s']:.2f}x its samples/s and {summary['speedup_time_to_target']:.2f}x "
              f"faster to the target ({summary['speedup_vs_static_samples_per_s']:.2f}x the static-padding Trainer)")
    out = {"machine": {"cpus": os.cpu_count(), "threads": args.threads},
           "settings": {"rows": args.rows, "epochs": args.epochs, "precision": args.precision or "params.yaml",
                        "root": str(Path(args.root).resolve())},
           "results": results, "summary": summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(stamp(out), indent=2) + "\n")


if __name__ == "__main__":
    main()
