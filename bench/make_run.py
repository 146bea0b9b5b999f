"""The README's `make run` on a fresh clone, timed: its wall time, the time of each DVC stage, and what it scored.

The repository's committed HEAD is cloned into a temporary folder and `make run` runs there as a new
user runs it. Each line of its output is timestamped as it arrives; a stage's time runs from DVC's
"Running stage 'NAME'" line to the next stage's (the last stage's to the end of `dvc repro`), so a
stage's time includes its process start and DVC's own bookkeeping. With `--venv reuse` the clone links
this checkout's `.venv` and marks it installed, so only the pipeline is timed; `--venv fresh` (the
default) also times the install, as a new user sees it.

    python bench/make_run.py                    # a fresh clone, its own venv (about 13 minutes on 2 cores)
    python bench/make_run.py --venv reuse       # the pipeline alone (about 10 minutes)
    python bench/make_run.py --table            # print the table of the saved results

Run it alone: the stages' times are what the bench measures. The results (`--out`, default
reports/bench/make_run.json) keep one entry per `--venv` mode, the latest run of each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench._stamp import save  # noqa: E402

STAGE = re.compile(r"Running stage '([\w@.-]+)'")
END = "Use `dvc push` to send your updates to remote storage."  # dvc repro's last line when it ran stages


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", choices=("fresh", "reuse"), default="fresh",
                        help="fresh: the clone installs its own .venv (timed); reuse: it links this checkout's")
    parser.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench" / "make_run.json"))
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"runs": {}}
    if args.table:
        print(table(results))
        return
    if args.venv == "reuse" and not (ROOT / ".venv" / ".installed").is_file():
        raise SystemExit(f"--venv reuse: {ROOT / '.venv'} is not installed; run `make venv` first")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    scratch = Path(tempfile.mkdtemp(prefix="kdistill-make-run-"))
    clone = scratch / "clone"
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        if args.venv == "reuse":
            os.symlink(ROOT / ".venv", clone / ".venv")
            (clone / ".venv" / ".installed").touch()  # newer than the clone's requirements files: make skips pip
        run = timed_make_run(clone)
        run.update(commit=head, venv=args.venv)
        metrics = clone / "reports" / "metrics.json"
        if run["returncode"] == 0 and metrics.is_file():
            m = json.loads(metrics.read_text())
            run["scores"] = {"metric": m["metric"], "teacher": m["teacher"][m["metric"]],
                             "student": m["student"][m["metric"]], "retention": m["retention"],
                             "speedup_b1": m["speedup_b1"], "test_rows": m["test_rows"]}
    finally:
        if args.keep:
            print(f"clone kept: {clone}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    results["runs"][args.venv] = run
    save(out, results)
    print(table(results))
    if run["returncode"] != 0:
        raise SystemExit(f"make run failed (exit {run['returncode']}); its last lines:\n" + "\n".join(run["tail"]))


def timed_make_run(clone: Path) -> dict:
    """Run `make run` in `clone`, echoing its output; return its wall time and each stage's seconds."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PYTHONUNBUFFERED"] = "1"  # DVC's lines reach the pipe as they are written, so their timestamps hold
    start = time.perf_counter()
    proc = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    marks: list[tuple[str, float]] = []
    repro_end = None
    tail: list[str] = []
    for line in proc.stdout:
        now = time.perf_counter() - start
        sys.stdout.write(line)
        tail = (tail + [line.rstrip()])[-20:]
        found = STAGE.search(line)
        if found:
            marks.append((found.group(1), now))
        elif END in line:
            repro_end = now
    returncode = proc.wait()
    wall = time.perf_counter() - start
    return {"returncode": returncode, "wall_seconds": round(wall, 1), **stage_times(marks, repro_end, wall),
            "tail": tail}


def stage_times(marks: list[tuple[str, float]], repro_end: float | None, wall: float) -> dict:
    """From (stage, start second) marks: each stage's seconds, the time before the first stage (the
    install, when the clone has its own venv) and the pipeline's seconds from the first stage to the
    end of `dvc repro` (or of the whole run, when its last line was not seen)."""
    if not marks:
        return {"stages": {}, "before_first_stage_seconds": round(wall, 1), "pipeline_seconds": None}
    end = repro_end if repro_end is not None else wall
    bounds = [t for _, t in marks[1:]] + [end]
    stages = {name: round(stop - begin, 1) for (name, begin), stop in zip(marks, bounds)}
    return {"stages": stages, "before_first_stage_seconds": round(marks[0][1], 1),
            "pipeline_seconds": round(end - marks[0][1], 1)}


def table(results: dict) -> str:
    """Markdown: one row per stage, one column per venv mode; then the wall time and the scores."""
    runs = results.get("runs", {})
    if not runs:
        return "No run yet."
    modes = sorted(runs)
    names = list(dict.fromkeys(name for mode in modes for name in runs[mode].get("stages", {})))
    head = "| | " + " | ".join(f"s, venv {mode} (commit {runs[mode].get('commit', '?')})" for mode in modes) + " |"
    lines = [head, "|---|" + "---:|" * len(modes)]

    def row(label: str, values: list) -> None:
        lines.append(f"| {label} | " + " | ".join("–" if v is None else f"{v:.0f}" for v in values) + " |")

    row("before the first stage (make, install)", [runs[m].get("before_first_stage_seconds") for m in modes])
    for name in names:
        row(f"stage `{name}`", [runs[m].get("stages", {}).get(name) for m in modes])
    row("**pipeline** (first stage to the end of `dvc repro`)", [runs[m].get("pipeline_seconds") for m in modes])
    row("**`make run` wall**", [runs[m].get("wall_seconds") for m in modes])
    for mode in modes:
        s = runs[mode].get("scores")
        if s:
            lines.append(f"\nvenv {mode}: test {s['metric']} teacher {s['teacher']:.4f}, student {s['student']:.4f}, "
                         f"retention {s['retention']:.4f}, batch-1 speed-up {s['speedup_b1']:.2f}x "
                         f"({s['test_rows']} test rows); exit {runs[mode]['returncode']}.")
        else:
            lines.append(f"\nvenv {mode}: exit {runs[mode]['returncode']}, no scores.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
