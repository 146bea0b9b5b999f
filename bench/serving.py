"""Serving speed on the CPU: teacher and student, PyTorch fp32 / dynamic int8 / bf16 and ONNX Runtime fp32 / int8.

For every (model, variant) row, at a fixed intra-op thread count: median and p99 latency at
batch 1 (test rows in order, tokenisation excluded, the same inputs for every row), throughput
at batch 32 (the whole test split in order, each batch padded to its own longest row), size on
disk, and accuracy on the whole test split. The latency runs of all rows are interleaved in
blocks, so a load spike on a shared machine lands on every row rather than on one.

Picks the fastest student variant whose accuracy is within `inference.max_drop` of the fp32 student
(what `inference.variant: auto` then serves) and reports its speed-up over the fp32 teacher.
Needs a finished pipeline (models/teacher, models/student, data/processed): `make run` first.

    python bench/serving.py                          # threads 1, 300 latency runs a row
    python bench/serving.py --root runs/quick --teacher-variants torch-fp32

Prints a table and writes reports/bench/serving.json (ONNX files go to models/.serving-cache/<weights hash>/).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stamp import stamp  # noqa: E402

from tasks.production.export import VARIANTS  # noqa: E402  (inference.variant's choices but auto)


def machine_info(threads: int) -> dict:
    """CPU model, cores, thread count, load and library versions: what the numbers depend on."""
    import onnxruntime
    import torch
    import transformers

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    # int8 speed hinges on VNNI (and AMX), bf16 speed on AVX512-BF16 (and AMX): record which the CPU has
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16") if f in flags]
    return {"cpu": model, "isa": isa, "cores": os.cpu_count(), "threads": threads, "platform": platform.platform(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "transformers": transformers.__version__}


def run(args) -> dict:
    """Measure every row; returns the report written to reports/bench/serving.json."""
    from tasks.infra.splits import load_split
    from tasks.models.training import encode_split
    from tasks.infra.config import load_config
    from tasks.production.export import (choose_variant, interleaved_latencies, load_predictor, serving_inputs,
                                         throughput_and_accuracy, weights_hash)
    from tasks.models.loading import load_tokenizer
    from tasks.infra.storage import Paths

    cfg = load_config(args.params)
    paths = Paths(Path(args.root))
    max_drop = cfg.inference.max_drop if args.max_drop is None else args.max_drop
    test = load_split(paths, "test")
    tokenizer = load_tokenizer(str(paths.student), key="models/student")  # the student keeps the teacher's
    data = encode_split(tokenizer, test, cfg.base.max_length)
    singles, batches = serving_inputs(data, tokenizer.pad_token_id, args.warmup + args.runs, args.batch_size)
    machine = machine_info(args.threads)
    predictors, load_s = {}, {}
    for role, folder, variants in (("teacher", paths.teacher, args.teacher_variants),
                                   ("student", paths.student, VARIANTS)):
        for variant in variants:
            start = time.perf_counter()
            predictors[(role, variant)] = load_predictor(folder, variant, args.threads)
            load_s[(role, variant)] = time.perf_counter() - start
            print(f"loaded {role} {variant} in {load_s[(role, variant)]:.1f} s", file=sys.stderr, flush=True)
    times = interleaved_latencies(predictors, singles, args.warmup, args.block)
    rows = []
    for (role, variant), p in predictors.items():
        throughput, accuracy = throughput_and_accuracy(p, batches, data.labels)
        ts = sorted(times[(role, variant)])
        rows.append({"model": role, "variant": variant, "latency_ms_b1": round(statistics.median(ts), 3),
                     "latency_ms_b1_p99": round(ts[min(len(ts) - 1, int(0.99 * len(ts)))], 3),
                     f"throughput_b{args.batch_size}": round(throughput, 1), "size_mb": round(p.size_mb, 2),
                     "accuracy": round(accuracy, 4), "load_s": round(load_s[(role, variant)], 2)})
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    student = {r["variant"]: r for r in rows if r["model"] == "student"}
    teacher_fp32 = next(r for r in rows if r["model"] == "teacher" and r["variant"] == "torch-fp32")
    chosen = choose_variant(student, max_drop)
    speedup = teacher_fp32["latency_ms_b1"] / student[chosen]["latency_ms_b1"]
    drop = student["torch-fp32"]["accuracy"] - student[chosen]["accuracy"]
    return {"machine": machine, "settings": {"threads": args.threads, "runs": args.runs, "warmup": args.warmup,
                                             "block": args.block, "batch_size": args.batch_size,
                                             "max_length": cfg.base.max_length, "max_drop": max_drop,
                                             "test_rows": len(data), "root": str(paths.root.resolve())},
            "rows": rows, "student_weights_sha256": weights_hash(paths.student),
            "chosen": {"variant": chosen, "speedup_b1_vs_teacher_fp32": round(speedup, 2),
                       "accuracy_drop_vs_student_fp32": round(drop, 4),
                       "target_met": bool(speedup >= 4 and drop <= 0.01 + 1e-9)}}


def print_table(report: dict) -> None:
    """The rows as a fixed-width table, then the choice."""
    tp = next(k for k in report["rows"][0] if k.startswith("throughput"))
    print(f"\n{'model':<8}{'variant':<12}{'b1 med ms':>10}{'b1 p99 ms':>10}{tp.replace('throughput_', 'rows/s '):>12}"
          f"{'size MB':>9}{'accuracy':>10}")
    for r in report["rows"]:
        print(f"{r['model']:<8}{r['variant']:<12}{r['latency_ms_b1']:>10.2f}{r['latency_ms_b1_p99']:>10.2f}"
              f"{r[tp]:>12.1f}{r['size_mb']:>9.1f}{r['accuracy']:>10.4f}")
    c, m = report["chosen"], report["machine"]
    print(f"chosen: student {c['variant']}: {c['speedup_b1_vs_teacher_fp32']:.2f}x the fp32 teacher at batch 1, "
          f"accuracy {-c['accuracy_drop_vs_student_fp32']:+.4f} against the fp32 student "
          f"(target: >= 4x, <= 1 point lost: {'met' if c['target_met'] else 'NOT met'})")
    print(f"machine: {m['cpu']} ({' '.join(m['isa'])}), {m['cores']} cores, {m['threads']} thread(s), "
          f"load {m['loadavg_start'][0]} → "
          f"{m['loadavg_end'][0]}; torch {m['torch']}, onnxruntime {m['onnxruntime']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(ROOT), help="project root with models/ and data/ (default: the repo)")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for every row (default 1)")
    parser.add_argument("--runs", type=int, default=300, help="timed batch-1 runs a row (default 300)")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--block", type=int, default=50, help="batch-1 runs a row before the next row's turn")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-drop", type=float, default=None, help="default: inference.max_drop in params.yaml")
    parser.add_argument("--teacher-variants", default=",".join(VARIANTS),
                        help="comma-separated; torch-fp32 is always included (the speed-up's reference)")
    args = parser.parse_args()
    args.teacher_variants = ["torch-fp32"] + [v for v in args.teacher_variants.split(",") if v and v != "torch-fp32"]
    if bad := [v for v in args.teacher_variants if v not in VARIANTS]:
        parser.error(f"--teacher-variants: unknown {', '.join(bad)} (known: {', '.join(VARIANTS)})")
    root = Path(args.root)
    needed = [root / "models" / "teacher" / "config.json", root / "models" / "student" / "config.json",
              root / "data" / "processed" / "test.parquet"]
    if missing := [p for p in needed if not p.is_file()]:
        print(f"bench/serving.py: {missing[0]} not found: run `make run` first (or pass --root)", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tasks.infra.logs import setup_logging
    from tasks.infra.storage import write_json

    setup_logging(quiet=False)
    report = run(args)
    print_table(report)
    out = root / "reports" / "bench" / "serving.json"
    write_json(out, stamp(report))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
