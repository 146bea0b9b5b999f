"""Hidden-state alignment: cached mean-pooled states (`pooled`) against per-token states with the
teacher running online (`tokens`, DistilBERT's original), and no alignment at all (alpha_cos 0).

Same teacher, data, student initialisation, epochs and threads for each; reports seconds,
samples/s and test accuracy, and writes reports/bench/hidden_loss.json.

    python bench/hidden_loss.py --rows 3000 --epochs 1
    python bench/hidden_loss.py --root /path/to/finished/run
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

from bench._stamp import stamp  # noqa: E402

VARIANTS = {"pooled (cached)": {"hidden_loss": "pooled", "alpha_cos": 0.1},
            "tokens (teacher online)": {"hidden_loss": "tokens", "alpha_cos": 0.1},
            "no alignment": {"alpha_cos": 0.0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(ROOT), help="a project root with a finished pipeline run")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from _common import scratch_project

    from tasks.infra.splits import load_split
    from tasks.models.training import encode_split
    from tasks.infra.config import load_config
    from tasks.core.predict import predict_logits
    from tasks.distill import distill
    from tasks.models.loading import load_classifier, load_tokenizer
    from tasks.infra.storage import Paths

    torch.set_num_threads(args.threads)
    paths = Paths(Path(args.root))
    results = {}
    for name, settings in VARIANTS.items():
        cfg = load_config(ROOT / "params.yaml", {"distill": {"epochs": args.epochs, "patience": args.epochs + 1,
                                                             **settings}})
        with scratch_project(paths, args.rows) as scratch:
            start = time.perf_counter()
            report = distill(cfg, scratch)
            seconds = time.perf_counter() - start
            tokenizer = load_tokenizer(str(scratch.distilled))
            student, _ = load_classifier(str(scratch.distilled), report_labels(paths))
            test = encode_split(tokenizer, load_split(paths, "test"), cfg.base.max_length)
            accuracy = float((predict_logits(student, test, tokenizer.pad_token_id).argmax(-1) == test.labels).mean())
        results[name] = {"seconds": round(seconds, 1), "train_seconds": report["train_seconds"],
                         "cache_seconds": report["cache_seconds"], "samples_per_s": report["samples_per_s"],
                         "accuracy": round(accuracy, 4)}
        print(name, results[name], flush=True)
    print(f"\n{'variant':<26}{'seconds':>9}{'cache s':>9}{'samples/s':>11}{'accuracy':>10}")
    for name, r in results.items():
        print(f"{name:<26}{r['seconds']:>9.1f}{r['cache_seconds']:>9.1f}{r['samples_per_s']:>11.1f}{r['accuracy']:>10.4f}")
    out = ROOT / "reports" / "bench" / "hidden_loss.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stamp({"rows": args.rows, "epochs": args.epochs, "threads": args.threads,
                                     "results": results}), indent=2) + "\n")


def report_labels(paths) -> list[str]:
    """The label names of the run."""
    return json.loads(paths.summary.read_text())["labels"]


if __name__ == "__main__":
    main()
