"""How many epochs the default's distill stage needs: params.yaml's default run at each `--epochs` value, over seeds.

The default teacher is fine-tuned once with params.yaml as it is (the same run as `make run`'s teacher
stage, seed 42; reused when the workspace has it), its output cache is reused, and then the distill
stage runs for each seed and each epochs value, with nothing else changed: params.yaml's loss weights,
learning rate, warm-up and patience (the epoch best on val is kept). A seed changes the data order,
dropout and the new head's initialisation, never the split; seed 42 is `make run`'s own. Each student is
scored on the whole test split, and each epochs value is paired by seed against `--baseline`. The distill
stage's training time is what the epochs change; its wall time adds the teacher-output cache (built by
the first run, as `make run` builds it, and read by the others) and the saving of the student.

    python bench/distill_epochs.py                       # epochs 3 and 4, seeds 42,1,2,3 (about 35 minutes on 2 cores)
    python bench/distill_epochs.py --epochs 2,3,4 --seeds 1,2,3
    python bench/distill_epochs.py --table               # print the table of the saved results

Results are written after every run (`--out`, default reports/bench/distill_epochs.json), so an
interrupted bench resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench._stamp import save  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", default="3,4", help="distill.epochs values to compare")
    parser.add_argument("--baseline", type=int, default=4, help="the epochs value the others are paired against")
    parser.add_argument("--seeds", default="42,1,2,3")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=str(ROOT / "runs" / "distill_epochs"), help="the workspace")
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench" / "distill_epochs.json"))
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    args = parser.parse_args(argv)
    try:
        epochs = [int(e) for e in args.epochs.split(",")]
        [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--epochs {args.epochs!r} and --seeds {args.seeds!r} must be comma-separated integers")
    if min(epochs) < 1 or args.baseline not in epochs:
        parser.error(f"--epochs {args.epochs!r}: each at least 1, with --baseline {args.baseline} among them")
    return args


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"runs": {}, "teacher": None}
    if args.table:
        print(table(results))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from bench.ablation import distil_and_score
    from tasks.infra.config import config_from_dict, load_config, merge, to_dict
    from tasks.infra.storage import Paths

    torch.set_num_threads(args.threads)
    params = to_dict(load_config(ROOT / "params.yaml"))  # read once: a long bench must not see later edits
    cfg = config_from_dict(merge(params, {"base": {"threads": args.threads}}))
    paths = Paths(Path(args.work))
    results["settings"] = {"threads": args.threads, "baseline": args.baseline, "metric": cfg.evaluate.metric,
                           "distill": {k: v for k, v in params["distill"].items() if k != "epochs"}}
    if results.get("teacher") is None or not paths.teacher.is_dir():
        results["teacher"] = fit_teacher(cfg, paths)
        save(out, results)
    start = time.perf_counter()
    for seed in map(int, args.seeds.split(",")):
        for epochs in map(int, args.epochs.split(",")):
            key = f"{epochs}/{seed}"
            if key in results["runs"]:
                continue
            data = to_dict(cfg)
            data["base"]["seed"] = seed
            data["distill"]["epochs"] = epochs
            report, scored = distil_and_score(config_from_dict(data), paths)
            metric = cfg.evaluate.metric
            results["runs"][key] = {**{k: scored[k] for k in ("accuracy", "f1_macro", "seconds", "preds")},
                                    "best_val": report[f"best_val_{metric}"], "cache": report["cache"],
                                    "cache_seconds": report["cache_seconds"], "train_seconds": report["train_seconds"],
                                    "val": [h.get(f"val_{metric}") for h in report["history"]]}
            results["summary"] = summarise(results)
            save(out, results)
            r = results["runs"][key]
            print(f"{key}: accuracy {r['accuracy']:.4f}, best val {r['best_val']:.4f} ({r['seconds']:.0f} s; "
                  f"{time.perf_counter() - start:.0f} s in all)", flush=True)
    print(table(results))


def fit_teacher(cfg, paths) -> dict:
    """Ingest the default data and fine-tune the default teacher into `paths`, as `make run` does."""
    import shutil

    from tasks.ingest import ingest
    from tasks.teacher import teacher

    shutil.rmtree(paths.root, ignore_errors=True)
    ingest(cfg, paths)
    start = time.perf_counter()
    report = teacher(cfg, paths)
    record = {"model": cfg.teacher.model, "accuracy": report["test"]["accuracy"],
              "f1_macro": report["test"]["f1_macro"], "seconds": round(time.perf_counter() - start, 1)}
    print(f"teacher: {record}", flush=True)
    return record


def summarise(results: dict) -> dict:
    """Per epochs value: the score and the stage's seconds, mean ± std over seeds, and the score's
    per-seed difference against the baseline's (on the same seeds)."""
    from tasks.infra.stats import seed_summary

    metric = results["settings"]["metric"]
    by_epochs: dict[int, dict[int, dict]] = {}
    for key, run in results["runs"].items():
        epochs, seed = map(int, key.split("/"))
        by_epochs.setdefault(epochs, {})[seed] = run
    base = by_epochs.get(results["settings"]["baseline"], {})
    summary = {}
    for epochs, runs in sorted(by_epochs.items()):
        row = {metric: seed_summary([r[metric] for r in runs.values()]),
               "seconds": seed_summary([r["seconds"] for r in runs.values()]),
               "train_seconds": seed_summary([r["train_seconds"] for r in runs.values()])}
        seeds = sorted(set(runs) & set(base))
        if epochs != results["settings"]["baseline"] and seeds:
            diffs = [runs[s][metric] - base[s][metric] for s in seeds]
            row["vs_baseline"] = {**seed_summary(diffs), "positive": sum(d > 0 for d in diffs),
                                  "negative": sum(d < 0 for d in diffs)}
        summary[str(epochs)] = row
    return summary


def table(results: dict) -> str:
    """Markdown: one row per epochs value."""
    summary = results.get("summary") or summarise(results)
    metric, baseline = results["settings"]["metric"], results["settings"]["baseline"]
    lines = [f"| distill.epochs | test {metric}, mean ± std | vs {baseline} epochs, paired by seed | "
             "seeds higher / lower | training s, mean ± std | seeds |",
             "|---:|---:|---:|---:|---:|---:|"]
    for epochs, row in summary.items():
        score, diff, secs = row[metric], row.get("vs_baseline"), row["train_seconds"]
        lines.append(f"| {epochs} | {score['mean']:.4f} ± {score['std']:.4f} | "
                     + (f"{diff['mean'] * 100:+.2f} ± {diff['std'] * 100:.2f} points | "
                        f"{diff['positive']} / {diff['negative']} of {diff['n']}" if diff else "(baseline) | –")
                     + f" | {secs['mean']:.0f} ± {secs['std']:.0f} | {score['n']} |")
    built = [r for r in results["runs"].values() if r.get("cache") == "miss"]
    if built:
        lines += ["", f"The teacher-output cache took {built[0]['cache_seconds']:.0f} s to build (once; "
                      "every `make run` builds it)."]
    t = results.get("teacher")
    if t:
        lines += ["", f"Teacher ({t['model']}, fine-tuned once, seed 42, {t['seconds']:.0f} s): "
                      f"test accuracy {t['accuracy']:.4f}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
