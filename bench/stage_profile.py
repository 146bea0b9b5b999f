"""Where a stage's time goes: the stage's own function under cProfile, its time cut into parts.

Runs one pipeline stage (teacher, distill, finetune or evaluate) in this process, exactly as
`kdistill STAGE` runs it, under cProfile, and attributes its wall time to the parts that matter
for issue 16: tokenisation, data loading (batching and padding), the forward pass and loss, the
backward pass, gradient clipping, the optimiser step, validation/test prediction, the teacher-output
cache build, model loading and saving; the rest is everything else (logging, checkpoints, reports).
cProfile adds a small cost to each Python call, so the total is a little above the stage's own time;
the shares are what to read.

    .venv/bin/python bench/stage_profile.py --root runs/default --stage teacher \
        --threads 2 -S teacher.epochs=1

Needs a workspace whose earlier stages have run (`kdistill --root DIR ingest`, ...). Prints a table and
writes reports/bench/stage_profile_STAGE.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stamp import stamp  # noqa: E402

# part -> (file suffix, function name) of the call whose cumulative time is that part. Each part's calls
# are disjoint from the others' in these stages (validation prediction runs outside the training step).
PARTS = {
    "tokenisation": ("tasks/core/data.py", "tokenize"),
    "data loading (batch, pad)": ("torch/utils/data/dataloader.py", "__next__"),
    "forward + loss": (None, "step"),  # the stage's step function (supervised_step, distill_step, ...)
    "backward": ("torch/_tensor.py", "backward"),
    "grad clipping": ("torch/nn/utils/clip_grad.py", "clip_grad_norm_"),
    "optimiser step": ("torch/optim/optimizer.py", "wrapper"),
    "prediction (val, test)": ("tasks/core/predict.py", "predict_logits"),
    "cache build (teacher forward)": ("tasks/core/cache.py", "build"),
    "model load": ("tasks/models/loading.py", "load_classifier"),
    "model save": ("tasks/models/loading.py", "save_model"),
    "checkpoints": ("tasks/core/loop.py", "_save"),
}


def cumulative(stats: pstats.Stats, suffix: str | None, name: str) -> float:
    """Cumulative seconds of every function named `name` in a file ending in `suffix` (suffix None: the
    stage's step function, any function of tasks/ named `step` or `*_step` outside the loop)."""
    total = 0.0
    for (path, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        if suffix is None:
            if "/tasks/" in path and (func == "step" or func.endswith("_step")) and not path.endswith("loop.py"):
                total += ct
        elif path.endswith(suffix) and func == name:
            total += ct
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="a workspace whose earlier stages have run")
    parser.add_argument("--stage", required=True, choices=["teacher", "distill", "finetune", "evaluate"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-S", dest="overrides", action="append", default=[], help="key=value, as kdistill -S")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import importlib

    import torch

    from tasks.infra.config import load_config
    from tasks.infra.storage import Paths

    torch.set_num_threads(args.threads)
    root = Path(args.root)
    params = root / "params.yaml" if (root / "params.yaml").exists() else ROOT / "params.yaml"
    cfg = load_config(params, [*args.overrides, f"base.threads={args.threads}"])
    stage = getattr(importlib.import_module(f"tasks.{args.stage}"), args.stage)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    stage(cfg, Paths(root))
    profiler.disable()
    wall = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    parts = {part: cumulative(stats, *where) for part, where in PARTS.items()}
    parts["other"] = max(0.0, wall - sum(parts.values()))
    print(f"{args.stage} ({' '.join(args.overrides) or 'params as they are'}), {args.threads} threads, "
          f"{torch.get_num_threads()} torch threads: {wall:.1f} s under cProfile")
    print(f"| part | seconds | share |\n|---|---:|---:|")
    for part, secs in parts.items():
        print(f"| {part} | {secs:.1f} | {100 * secs / wall:.1f}% |")
    out = Path(args.out or ROOT / "reports" / "bench" / f"stage_profile_{args.stage}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stamp({"stage": args.stage, "overrides": args.overrides, "threads": args.threads,
                                     "root": str(root), "seconds": round(wall, 2),
                                     "parts": {k: round(v, 2) for k, v in parts.items()}}), indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
