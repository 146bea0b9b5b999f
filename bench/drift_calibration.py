"""Calibrate the drift monitor: false alarms on held-out windows, detection of a partial drift (a power curve).

Windows of `--size` rows (default drift.window_rows) drawn from text the model never trained on:
- held-out: movie snippets outside the workspace's train and val splits (its test split, and the
  embedded snippets a subsampled run such as `make quick` never ingested); the base of mixed windows.
- val: the workspace's val split. It also sets the per-row outlier cut and the prediction signals'
  baseline, so its false-alarm rate is reported apart; both must stay low (issue 25 item 12: the
  `oov_share` descriptor fired on every held-out window while its reference was the vocabulary's rows).
- mixed: a share f (`--fractions`) of tweets, Amazon or NYT snippets, the rest held-out movies.
  f = 1 is a whole other-domain window.

Two measurements:
- The full monitor (every signal, the verdict, as `kdistill drift` decides): `--windows` held-out
  windows and as many val windows (the false-alarm rate of each, with its one-sided 95% upper bound;
  at least 100 each for a rate near 5% to mean something) and `--mixed` windows per
  fraction per domain (detection). Each text is scored by the model once, in a pool, and each window
  then checked; `--timing` more windows are timed end to end as a monitoring run does it (embed the
  logged window + every signal, without writing HTML).
- The `outliers` signal alone at several window sizes (`--sizes`): `--signal-windows` windows per
  case, from the pool's per-row distances; cheap, so its power curve is tight and shows the window
  size a 10% segment needs. The verdict fires whenever `outliers` does (it is a strong signal), so
  these rates are lower bounds of the monitor's detection.

    OMP_NUM_THREADS=1 python bench/drift_calibration.py --workspace runs/quick     # about 12 min on 2 cores
    python bench/drift_calibration.py --model models/production --processed data/processed --windows 20 --mixed 4

Writes reports/bench/drift_calibration.json and the power curve reports/bench/drift_calibration.svg.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stamp import stamp  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DOMAINS = ("tweets", "amazon", "nyt")
# A full run's workspace if there is one, else `make quick`'s, else the repo itself.
DEFAULT_WS = next((p for p in (ROOT / "runs" / "fresh", ROOT / "runs" / "quick") if (p / "models").is_dir()), ROOT)


def workspace(model: Path, processed: Path, baseline: float | None) -> Path:
    """A throw-away workspace whose production model is `model` (linked, read-only) and data is `processed`."""
    from tasks.infra.storage import write_json

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


def pools(monitor, processed: Path, heldout_rows: int, domain_rows: int) -> dict:
    """Each pool's texts scored once: prediction, confidence, emb and the per-row distance."""
    import numpy as np
    import pandas as pd

    from tasks.models.monitor import knn_distance, predictions_frame
    from tasks.infra.embedded import read_embedded

    splits = {s: pd.read_parquet(processed / f"{s}.parquet") for s in ("train", "val", "test")}
    test = splits["test"].assign(label=lambda f: f["label"].map(lambda v: monitor.labels[v]))
    seen = set(splits["train"]["text"]) | set(splits["val"]["text"]) | set(test["text"])
    movies = read_embedded("movies")
    unseen = movies[~movies["text"].isin(seen)]  # a subsampled ingest (make quick) leaves most of them out
    val = splits["val"].assign(label=lambda f: f["label"].map(lambda v: monitor.labels[v]))
    frames = {"heldout": pd.concat([test[["text", "label"]], unseen[["text", "label"]]], ignore_index=True),
              "val": val[["text", "label"]]}
    frames.update({d: read_embedded(d) for d in DOMAINS})
    out = {}
    for name, frame in frames.items():
        frame = frame.sample(min(len(frame), heldout_rows if name in ("heldout", "val") else domain_rows),
                             random_state=0)
        scored = predictions_frame(monitor, frame["text"].astype(str).tolist(), frame["label"].astype(str).tolist())
        scored["distance"] = knn_distance(monitor.ref_unit, np.stack(scored["emb"]), monitor.outlier_k)
        out[name] = scored
    return out


def mix(pool: dict, domain: str | None, fraction: float, size: int, seed: int, base: str = "heldout"):
    """A window: round(fraction * size) rows of `domain`, the rest from the `base` pool (held-out or val), shuffled."""
    import pandas as pd

    k = round(fraction * size) if domain else 0
    parts = [pool[base].sample(size - k, random_state=seed, replace=size - k > len(pool[base]))]
    if k:
        parts.append(pool[domain].sample(k, random_state=seed))
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def full_monitor(monitor, pool: dict, d, size: int, windows: int, mixed: int, fractions: list[float]) -> dict:
    """Verdicts of held-out windows and of mixed windows per fraction and domain (every signal)."""
    from tasks.production.drift import check_window

    cases = [(None, 0.0, i, base) for base in ("heldout", "val") for i in range(windows)]
    cases += [(dom, f, j, "heldout") for f in fractions for dom in DOMAINS for j in range(mixed)]
    out, start = {}, time.perf_counter()
    for n, (dom, f, j, base) in enumerate(cases, 1):
        verdict = check_window(monitor, mix(pool, dom, f, size, seed=1000 * n + j, base=base), d)
        out.setdefault(f, {}).setdefault(dom or base, []).append(verdict)
        if n % 10 == 0 or n == len(cases):
            spent = time.perf_counter() - start
            print(f"  full monitor: {n}/{len(cases)} windows, {spent:.0f} s, about {spent / n * (len(cases) - n):.0f} s "
                  "left", flush=True)
    return out


def timed_runs(monitor, pool: dict, d, size: int, runs: int) -> list[float]:
    """Seconds per monitoring run, as `kdistill drift` does it: embed the logged window, then check it."""
    from tasks.models.monitor import embed
    from tasks.production.drift import check_window

    seconds = []
    for i in range(runs):
        window = mix(pool, None, 0.0, size, seed=90_000 + i).drop(columns=["emb"])
        start = time.perf_counter()
        window["emb"] = list(embed(monitor, window["text"].tolist()))
        check_window(monitor, window, d)
        seconds.append(time.perf_counter() - start)
    return seconds


def draw(rng, past, n: int) -> int:
    """Rows past the cut among `n` drawn from a pool (with replacement only where the pool is smaller than n)."""
    return int(rng.choice(past, n, replace=n > len(past)).sum()) if n else 0


def signal_alone(monitor, pool: dict, d, sizes: list[int], fractions: list[float], windows: int) -> dict:
    """Share of windows on which `outliers` fires, per window size and fraction (domains round-robin)."""
    import numpy as np

    from tasks.production.drift import outlier_decision

    rng = np.random.default_rng(0)
    past = {name: (frame["distance"] > monitor.cut).to_numpy() for name, frame in pool.items()}
    curves = {}
    for size in sizes:
        curve = {}
        for f in [0.0, *fractions]:
            fired = 0
            for i in range(windows):
                k = round(f * size)
                count = draw(rng, past["heldout"], size - k) + draw(rng, past[DOMAINS[i % 3]], k)
                fired += outlier_decision(count, size, monitor, d)["fired"]
            curve[f] = fired / windows
        curves[size] = curve
    return curves


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval of a rate k/n."""
    from scipy.stats import beta

    a = (1 - level) / 2
    return (0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1)), 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k)))


def summarise(verdicts: list[dict]) -> dict:
    """Flag rate (with its 95% interval and one-sided upper bound), per-signal fire rates and median scores."""
    from scipy.stats import beta

    n, k = len(verdicts), sum(v["drift_detected"] for v in verdicts)
    signals = sorted({s for v in verdicts for s in v["signals"]})
    return {"windows": n, "flagged": k, "rate": k / n, "interval95": clopper_pearson(k, n),
            "upper95": 1.0 if k == n else float(beta.ppf(0.95, k + 1, n - k)),
            "partial": sum(v["partial"] for v in verdicts) / n,
            "descriptor_rates": {c: sum(v["signals"]["descriptors"]["p_values"][c] < v["signals"]["descriptors"]
                                        ["p_threshold"] for v in verdicts) / n
                                 for c in verdicts[0]["signals"]["descriptors"]["p_values"]},
            "signal_rates": {s: sum(v["signals"].get(s, {}).get("fired", False) for v in verdicts) / n for s in signals},
            "median_scores": {s: statistics.median(v["signals"][s]["score"] for v in verdicts if s in v["signals"])
                              for s in signals}}


def needed_size(curves: dict, fraction: float, target: float) -> int | None:
    """The smallest window size whose `outliers` detection at `fraction` reaches `target` (None: none measured)."""
    return next((size for size in sorted(curves) if curves[size].get(fraction, 0) >= target), None)


def power_curve_svg(report: dict, path: Path) -> None:
    """The power curve as an SVG chart (no plotting library in the stack): detection per fraction."""
    width, height, left, top, plot_w, plot_h = 900, 420, 60, 30, 470, 320
    fractions = [0.0, *report["fractions"]]
    xs = {f: left + plot_w * i / (len(fractions) - 1) for i, f in enumerate(fractions)}

    def y(rate: float) -> float:
        return top + plot_h * (1 - rate)

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
            f'font-size="12"><rect width="{width}" height="{height}" fill="white"/>')]
    for r in (0, 0.25, 0.5, 0.75, 1.0):
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(r)}" y2="{y(r)}" stroke="#ddd"/>'
                   f'<text x="{left - 8}" y="{y(r) + 4}" text-anchor="end">{r:.0%}</text>')
    for f, x in xs.items():
        out.append(f'<text x="{x}" y="{top + plot_h + 18}" text-anchor="middle">{"held-out" if f == 0 else f"{f:.0%}"}'
                   f'</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 22}" text-anchor="middle">share of the window from '
               f'another domain (tweets, Amazon, NYT)</text>')
    out.append(f'<text x="16" y="{top + plot_h / 2}" transform="rotate(-90 16 {top + plot_h / 2})" '
               f'text-anchor="middle">windows flagged</text>')
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(0.05)}" y2="{y(0.05)}" stroke="#c00" '
               f'stroke-dasharray="2,3"/>')
    for f, goal in ((0.1, 0.5), (0.3, 0.9)):
        if f in xs:
            out.append(f'<path d="M{xs[f] - 6},{y(goal)} l6,-6 l6,6 l-6,6 z" fill="none" stroke="#c00"/>')
    colours = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    legend = []
    full = report["full_monitor"]["detection"]
    points = [(xs[0.0], y(report["full_monitor"]["false_alarms"]["rate"]))]
    points += [(xs[f], y(full[str(f)]["rate"])) for f in report["fractions"]]
    out.append('<polyline fill="none" stroke="black" stroke-width="2.5" points="'
               + " ".join(f"{a:.1f},{b:.1f}" for a, b in points) + '"/>')
    intervals = [(0.0, report["full_monitor"]["false_alarms"]["interval95"])]
    for f, (lo, hi) in intervals + [(f, full[str(f)]["interval95"]) for f in report["fractions"]]:
        out.append(f'<line x1="{xs[f]}" x2="{xs[f]}" y1="{y(lo)}" y2="{y(hi)}" stroke="black"/>')
    legend.append(("black", "", (f"full monitor, {report['window_rows']} rows ({report['mixed_windows']} windows "
                                 f"per fraction, 95% interval)")))
    for colour, (size, curve) in zip(colours, report["outliers_alone"].items()):
        pts = " ".join(f"{xs[float(f)]:.1f},{y(rate):.1f}" for f, rate in curve.items())
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" stroke-dasharray="6,3" '
                   f'points="{pts}"/>')
        legend.append((colour, "6,3", f"outliers alone, {size} rows"))
    legend += [("#c00", "2,3", "5% false-alarm target"), ("#c00", None, "goals: 50% at 10%, 90% at 30%")]
    for i, (colour, dash, label) in enumerate(legend):
        lx, ly = left + plot_w + 20, top + 10 + 20 * i
        out.append(f'<path d="M{lx + 6},{ly} l6,-6 l6,6 l-6,6 z" fill="none" stroke="{colour}"/>' if dash is None else
                   f'<line x1="{lx}" x2="{lx + 25}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2" '
                   f'stroke-dasharray="{dash}"/>')
        out.append(f'<text x="{lx + 30}" y="{ly + 4}" font-size="10">{label}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=DEFAULT_WS,
                        help="a kdistill root: its models/production, data/processed, reports/metrics.json")
    parser.add_argument("--model", type=Path, help="instead of the workspace's models/production")
    parser.add_argument("--processed", type=Path, help="instead of the workspace's data/processed")
    parser.add_argument("--metrics", type=Path, help="the model's test accuracy (quality baseline)")
    parser.add_argument("--windows", type=int, default=100, help="held-out windows for the full monitor, and as "
                        "many val windows (false alarms of each)")
    parser.add_argument("--mixed", type=int, default=20, help="full-monitor windows per fraction per domain")
    parser.add_argument("--fractions", default="0.05,0.1,0.2,0.3,0.5,1.0")
    parser.add_argument("--size", type=int, default=None, help="rows per window (default: drift.window_rows)")
    parser.add_argument("--sizes", default="100,200,400,800", help="window sizes for the outliers signal alone")
    parser.add_argument("--signal-windows", type=int, default=1000, help="windows per case, outliers alone")
    parser.add_argument("--pool-heldout", type=int, default=3000, help="held-out texts scored once")
    parser.add_argument("--pool-domain", type=int, default=600, help="texts of each other domain scored once")
    parser.add_argument("--timing", type=int, default=5, help="monitoring runs timed end to end")
    parser.add_argument("-S", "--set", action="append", default=[], help="override a param, e.g. drift.text_auc=0.8")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench" / "drift_calibration.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.mixed < 1 or args.windows < 1:
        sys.exit("error: --windows and --mixed: expected >= 1")
    from tasks.infra.config import load_config, to_dict
    from tasks.models.monitor import load_monitor
    from tasks.infra.storage import Paths, write_json

    cfg = load_config(ROOT / "params.yaml", args.set)
    size = args.size or cfg.drift.window_rows
    fractions = [float(f) for f in args.fractions.split(",")]
    model = args.model or args.workspace / "models" / "production"
    processed = args.processed or args.workspace / "data" / "processed"
    metrics = args.metrics or args.workspace / "reports" / "metrics.json"
    baseline = json.loads(metrics.read_text())["student"]["accuracy"] if metrics.is_file() else None
    largest = round(max(fractions) * size)
    if args.pool_domain < largest or args.pool_heldout < size:
        sys.exit(f"error: --pool-domain {args.pool_domain} / --pool-heldout {args.pool_heldout}: expected at least "
                 f"{largest} / {size} texts, the most one window takes from a pool")
    root = workspace(model, processed, baseline)
    try:
        start = time.perf_counter()
        monitor = load_monitor(cfg, Paths(root))
        setup = time.perf_counter() - start
        start = time.perf_counter()
        pool = pools(monitor, processed, args.pool_heldout, args.pool_domain)
        print(f"pools scored in {time.perf_counter() - start:.0f} s: "
              + ", ".join(f"{k} {len(v)}" for k, v in pool.items()), flush=True)
        seconds = timed_runs(monitor, pool, cfg.drift, size, args.timing)
        verdicts = full_monitor(monitor, pool, cfg.drift, size, args.windows, args.mixed, fractions)
        curves = signal_alone(monitor, pool, cfg.drift, [int(s) for s in args.sizes.split(",")], fractions,
                              args.signal_windows)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report = {
        "model": str(model), "window_rows": size, "reference_rows": len(monitor.reference),
        "heldout_rows": len(monitor.heldout), "heldout_pool": len(pool["heldout"]), "val_pool": len(pool["val"]),
        "domain_pool": len(pool[DOMAINS[0]]), "baseline_accuracy": baseline, "drift": to_dict(cfg.drift),
        "cut": monitor.cut, "heldout_share_past_cut": monitor.heldout_above / len(monitor.heldout),
        "fractions": fractions, "mixed_windows": args.mixed * len(DOMAINS),
        "full_monitor": {"false_alarms": summarise(verdicts[0.0]["heldout"] + verdicts[0.0]["val"]),
                         "false_alarms_by_split": {"test": summarise(verdicts[0.0]["heldout"]),
                                                   "val": summarise(verdicts[0.0]["val"])},
                         "detection": {str(f): summarise([v for dom in DOMAINS for v in verdicts[f][dom]])
                                       for f in fractions},
                         "detection_by_domain": {str(f): {dom: summarise(verdicts[f][dom])["rate"] for dom in DOMAINS}
                                                 for f in fractions}},
        "outliers_alone": {str(s): {str(f): r for f, r in c.items()} for s, c in curves.items()},
        "signal_windows": args.signal_windows,
        "window_size_for_10pct": {"50%": needed_size(curves, 0.1, 0.5), "90%": needed_size(curves, 0.1, 0.9)},
        # --timing 0 (a run that shares the machine, whose seconds would mean nothing): no timing recorded
        "seconds_per_run": ({"median": statistics.median(seconds), "max": max(seconds), "runs": len(seconds)}
                            if seconds else None),
        "setup_seconds": setup,
    }
    write_json(args.out, stamp(report))
    power_curve_svg(report, args.out.with_suffix(".svg"))
    print_report(report, args.out)


def print_report(report: dict, out: Path) -> None:
    fa = report["full_monitor"]["false_alarms"]
    print(f"model {report['model']}, windows of {report['window_rows']} rows, reference {report['reference_rows']} rows, "
          f"held-out (val) {report['heldout_rows']} rows")
    print(f"false alarms: {fa['flagged']}/{fa['windows']} = {fa['rate']:.1%} (95% upper bound {fa['upper95']:.1%}; "
          f"target <= 5%); signals {fa['signal_rates']}")
    for split, s in report["full_monitor"]["false_alarms_by_split"].items():
        print(f"  {split} windows: {s['flagged']}/{s['windows']} = {s['rate']:.1%} (upper bound {s['upper95']:.1%}); "
              f"median descriptors firing {s['median_scores'].get('descriptors')}, oov_share fired in "
              f"{s['descriptor_rates']['oov_share']:.0%}")
    for f, s in report["full_monitor"]["detection"].items():
        lo, hi = s["interval95"]
        print(f"{float(f):>5.0%} other domain: {s['flagged']}/{s['windows']} = {s['rate']:.0%} [{lo:.0%}, {hi:.0%}]; "
              f"median text AUC {s['median_scores'].get('text', math.nan):.2f}, embedding AUC "
              f"{s['median_scores'].get('embedding', math.nan):.2f}, outlier share "
              f"{s['median_scores'].get('outliers', math.nan):.0%}; signals {s['signal_rates']}")
    for size, curve in report["outliers_alone"].items():
        print(f"outliers alone, {size} rows: " + ", ".join(f"{float(f):.0%}: {r:.0%}" for f, r in curve.items()))
    print(f"window size for a 10% segment: {report['window_size_for_10pct']}")
    if report["seconds_per_run"]:
        print(f"time per monitoring run: median {report['seconds_per_run']['median']:.2f} s, "
              f"max {report['seconds_per_run']['max']:.2f} s (setup {report['setup_seconds']:.1f} s)")
    print(f"wrote {out} and {out.with_suffix('.svg')}")


if __name__ == "__main__":
    main()
