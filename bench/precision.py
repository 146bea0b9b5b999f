"""fp32 against bf16 on this CPU, path by path: does `base.precision: auto` choose right here?

For each path that base.precision governs, the same work in fp32 and under bf16 autocast
(tasks.core.precision), alternated `--repeats` times so that a load spike on a shared machine lands
on both, median taken:
  train-teacher     supervised steps of the teacher (its fine-tune), batches of --batch-size
  train-student     distillation steps of the student, cached teacher targets (the distill stage)
  cache-build       the teacher over --rows transfer rows, logits and every layer's pooled state
  predict-student   the student's batch prediction (evaluate, promote, retrain), batches of 128
  latency-b1        the student at batch 1, one row at a time (the API's single requests)
and, for batch prediction, how often the bf16 answers equal the fp32 ones and both accuracies.

Needs a finished pipeline (models/teacher, models/student, data/processed): `make run`, or --root.

    env OMP_NUM_THREADS=1 .venv/bin/python bench/precision.py --root runs/quick --threads 1

Prints a table and writes reports/bench/precision.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stamp import stamp  # noqa: E402


def timed_pair(work, repeats: int) -> dict[str, float]:
    """Median seconds of `work(dtype)` for fp32 (None) and bf16, alternated, after one warm-up each."""
    import torch

    dtypes = {"fp32": None, "bf16": torch.bfloat16}
    for dtype in dtypes.values():
        work(dtype)
    times: dict[str, list[float]] = {name: [] for name in dtypes}
    for _ in range(repeats):
        for name, dtype in dtypes.items():
            start = time.perf_counter()
            work(dtype)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(ROOT), help="a project root with a finished pipeline run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=256, help="rows of the cache build and batch prediction")
    parser.add_argument("--steps", type=int, default=4, help="training steps a timing")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench" / "precision.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from tasks.core.cache import LogitCache
    from tasks.core.data import make_loader
    from tasks.core.loss import LossWeights, distillation_loss
    from tasks.core.precision import autocast, cpu_has_bf16, precision_name, resolve_precision
    from tasks.core.predict import predict_logits
    from tasks.core.student import num_layers
    from tasks.infra.splits import load_labels, load_split
    from tasks.models.training import encode_split, supervised_step
    from tasks.infra.config import load_config
    from tasks.models.loading import load_classifier, load_tokenizer
    from tasks.infra.storage import Paths

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg, paths = load_config(ROOT / "params.yaml"), Paths(Path(args.root))
    names = load_labels(paths)
    tokenizer = load_tokenizer(str(paths.teacher))
    teacher, _ = load_classifier(str(paths.teacher), names)
    student, _ = load_classifier(str(paths.student), names)
    pad = tokenizer.pad_token_id
    train = encode_split(tokenizer, load_split(paths, "train").head(args.rows), cfg.base.max_length)
    test = encode_split(tokenizer, load_split(paths, "test").head(args.rows), cfg.base.max_length)
    cpu = torch.device("cpu")
    batches = [b for b, _ in zip(make_loader(train, args.batch_size, pad, 0, True, cpu), range(args.steps))]
    targets = predict_logits(teacher, train, pad, 128, cpu, precision="fp32")
    weights = LossWeights(cfg.distill.temperature, cfg.distill.alpha_kd, cfg.distill.alpha_ce, 0.0)

    def steps(model, loss_fn):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)  # tiny: the weights barely move between runs

        def work(dtype):
            model.train()
            for batch in batches:
                with autocast("cpu", dtype):
                    loss = loss_fn(model, batch)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        return work

    def distill_loss(model, batch):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        t_logits = torch.from_numpy(targets[batch["index"].numpy()])
        return distillation_loss(out.logits, t_logits, batch["labels"], weights)[0]

    def cache_build(dtype):
        with tempfile.TemporaryDirectory() as folder:
            LogitCache(folder, "bench").build(teacher.eval(), train, pad, 128, cpu, list(range(num_layers(teacher))), dtype)

    def predict(dtype):
        predict_logits(student, test, pad, 128, cpu, precision=precision_name(dtype))

    singles = [test[i] for i in range(min(50, len(test)))]

    @torch.inference_mode()
    def latency(dtype):
        student.eval()
        for ids, _, _ in singles:
            x = torch.from_numpy(np.asarray(ids, dtype=np.int64))[None]
            with autocast("cpu", dtype):
                student(input_ids=x, attention_mask=torch.ones_like(x))

    rows_trained = sum(len(b["labels"]) for b in batches)
    paths_timed = {
        "train-teacher": (steps(teacher, lambda m, b: supervised_step(m, b)[0]), rows_trained),
        "train-student": (steps(student, distill_loss), rows_trained),
        "cache-build": (cache_build, len(train)),
        "predict-student": (predict, len(test)),
        "latency-b1": (latency, len(singles)),
    }
    results = {}
    for name, (work, rows) in paths_timed.items():
        seconds = timed_pair(work, args.repeats)
        results[name] = {"rows": rows, "fp32_samples_per_s": round(rows / seconds["fp32"], 1),
                         "bf16_samples_per_s": round(rows / seconds["bf16"], 1),
                         "bf16_speedup": round(seconds["fp32"] / seconds["bf16"], 2)}
        if name == "latency-b1":
            results[name].update(fp32_ms=round(1e3 * seconds["fp32"] / rows, 2), bf16_ms=round(1e3 * seconds["bf16"] / rows, 2))
        print(f"{name:<16}{results[name]['fp32_samples_per_s']:>10.1f}{results[name]['bf16_samples_per_s']:>10.1f}"
              f"{results[name]['bf16_speedup']:>8.2f}x", flush=True)
    fp32 = predict_logits(student, test, pad, 128, cpu, precision="fp32").argmax(-1)
    bf16 = predict_logits(student, test, pad, 128, cpu, precision="bf16").argmax(-1)
    agreement = {"rows": len(test), "bf16_equals_fp32": round(float((fp32 == bf16).mean()), 4),
                 "accuracy_fp32": round(float((fp32 == test.labels).mean()), 4),
                 "accuracy_bf16": round(float((bf16 == test.labels).mean()), 4)}
    print(f"batch prediction: bf16 answers equal fp32 on {agreement['bf16_equals_fp32']:.2%} of {len(test)} test rows; "
          f"accuracy fp32 {agreement['accuracy_fp32']:.4f}, bf16 {agreement['accuracy_bf16']:.4f}")
    caps = torch.cpu.get_capabilities()
    machine = {"cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                            if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").is_file() else "unknown",
               "threads": args.threads, "torch": torch.__version__, "hardware_bf16": cpu_has_bf16(),
               "isa": [k for k in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni") if caps.get(k)],
               "auto_resolves_to": precision_name(resolve_precision("auto", cpu)),
               "loadavg": [round(x, 2) for x in os.getloadavg()]}
    report = {"machine": machine, "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "max_length": cfg.base.max_length, "results": results, "agreement": agreement}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(stamp(report), indent=2) + "\n")
    print(f"auto resolves to {machine['auto_resolves_to']} here (hardware bf16: {machine['hardware_bf16']}); "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
