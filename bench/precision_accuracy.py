"""The student trained in bf16 against fp32, over seeds: does `base.precision: auto` cost accuracy?

For each seed, the distill stage as params.yaml sets it (the workspace's teacher, its data) runs twice,
with base.precision fp32 and bf16; each precision builds its own teacher-output cache (the cache key
names the precision) and reuses it over the seeds. Each student is scored on the test split. Reported:
test accuracy and macro-F1 per precision as mean ± std over the seeds, the per-seed paired difference
bf16 - fp32 (with the exact McNemar-type interval of tasks/infra/stats.py on the same test rows), how
often the two students answer alike, and the stage's seconds.

    .venv/bin/python bench/precision_accuracy.py --root runs/precision \
        --seeds 42 43 44 --threads 2

The workspace needs data/processed and models/teacher (copy them from a finished `make run`). Prints a
table and writes reports/bench/precision_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench._stamp import stamp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="a workspace with data/processed and models/teacher")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench" / "precision_accuracy.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from ablation import distil_and_score
    from tasks.core.precision import cpu_has_bf16
    from tasks.infra.splits import load_labels, load_split
    from tasks.infra.config import load_config
    from tasks.infra.stats import paired_comparison, seed_summary
    from tasks.infra.storage import Paths

    torch.set_num_threads(args.threads)
    root = Path(args.root)
    paths = Paths(root)
    params = root / "params.yaml" if (root / "params.yaml").exists() else ROOT / "params.yaml"
    labels = load_split(paths, "test")["label"].to_numpy()
    classes = len(load_labels(paths))
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    if results.get("root") != str(root):
        results = {"root": str(root), "runs": {}}
    results.update(threads=args.threads, hardware_bf16=cpu_has_bf16(), test_rows=len(labels))
    for seed in args.seeds:
        for precision in ("fp32", "bf16"):
            key = f"{precision}/{seed}"
            if key in results["runs"]:
                continue
            cfg = load_config(params, [f"base.seed={seed}", f"base.precision={precision}", f"base.threads={args.threads}"])
            report, scored = distil_and_score(cfg, paths)
            results["runs"][key] = {**scored, "best_val": report[f"best_val_{cfg.evaluate.metric}"], "cache": report["cache"]}
            print(f"seed {seed} {precision}: test accuracy {scored['accuracy']:.4f}, macro-F1 {scored['f1_macro']:.4f}, "
                  f"{scored['seconds']:.0f} s (cache {report['cache']})", flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(stamp(results), indent=1) + "\n")  # after each run: an interrupted bench resumes
    runs = results["runs"]
    seeds = [s for s in args.seeds if f"fp32/{s}" in runs and f"bf16/{s}" in runs]
    summary: dict = {p: {m: seed_summary([runs[f"{p}/{s}"][m] for s in seeds]) for m in ("accuracy", "f1_macro")}
                     for p in ("fp32", "bf16")}
    per_seed = {}
    for s in seeds:
        a, b = np.array(runs[f"fp32/{s}"]["preds"]), np.array(runs[f"bf16/{s}"]["preds"])
        cmp = paired_comparison(labels, a, b, "accuracy", classes)
        per_seed[s] = {"diff": round(cmp.diff, 4), "ci": [round(cmp.ci_low, 4), round(cmp.ci_high, 4)],
                       "significant": cmp.significant_gain or cmp.significant_loss,
                       "agreement": round(float((a == b).mean()), 4),
                       "seconds": {p: runs[f"{p}/{s}"]["seconds"] for p in ("fp32", "bf16")}}
    diffs = [per_seed[s]["diff"] for s in seeds]
    summary["bf16_minus_fp32"] = {**seed_summary(diffs), "positive": sum(d > 0 for d in diffs)}
    summary["per_seed"] = per_seed
    results["summary"] = summary
    out.write_text(json.dumps(stamp(results), indent=1) + "\n")
    print(f"\n{len(seeds)} seeds ({', '.join(map(str, seeds))}), {len(labels)} test rows, {args.threads} threads")
    print("| precision | test accuracy | test macro-F1 | stage seconds (mean) |\n|---|---:|---:|---:|")
    for p in ("fp32", "bf16"):
        secs = np.mean([runs[f"{p}/{s}"]["seconds"] for s in seeds])
        print(f"| {p} | {summary[p]['accuracy']['mean']:.4f} ± {summary[p]['accuracy']['std']:.4f} | "
              f"{summary[p]['f1_macro']['mean']:.4f} ± {summary[p]['f1_macro']['std']:.4f} | {secs:.0f} |")
    d = summary["bf16_minus_fp32"]
    print(f"bf16 - fp32 accuracy, paired by seed: {d['mean']:+.4f} ± {d['std']:.4f} ({d['positive']}/{len(seeds)} above 0)")
    for s, r in per_seed.items():
        print(f"  seed {s}: {r['diff']:+.4f} (interval {r['ci'][0]:+.4f}..{r['ci'][1]:+.4f}), answers alike on "
              f"{r['agreement']:.2%} of rows, {r['seconds']['fp32']:.0f} s fp32 / {r['seconds']['bf16']:.0f} s bf16")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
