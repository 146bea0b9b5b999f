"""Zero-shot cold start: a teacher from label descriptions and the student distilled from it, against
the supervised teacher on the same test split.

For each task it ingests the embedded data once (the default split, seed 42), then writes the train
split as a file *without its label column* and val/test as labelled files, and runs the ordinary
pipeline on them in zero-shot mode (`ingest.source: files`, `teacher.zero_shot`): ingest, validate,
teacher (no fine-tuning), then distill + evaluate once per student seed. No train label is read.
With `--supervised-epochs N` it also fine-tunes the supervised teacher on the labelled train split
(same test split) for the comparison; otherwise the comparison is the number given by
`--supervised` (e.g. the README's `make run` teacher on movies).

    env OMP_NUM_THREADS=1 .venv/bin/python bench/zero_shot.py --threads 1 \
        --task movies --distill-epochs 2 --supervised-accuracy 0.8543 --supervised-f1 0.8543
    env OMP_NUM_THREADS=1 .venv/bin/python bench/zero_shot.py --threads 1 \
        --task trec6 --distill-epochs 2 --supervised-epochs 3 --supervised-lr 1e-4

Writes reports/bench/zero_shot.json (one entry per task, merged with what is there).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from tasks.cli import run_stage
from tasks.infra.splits import load_labels, load_split
from tasks.infra.config import load_config
from tasks.infra.storage import Paths, read_json, write_json

from _stamp import stamp  # run as `python bench/zero_shot.py`: bench/ is on sys.path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "reports" / "bench" / "zero_shot.json"
DESCRIPTIONS = {
    "movies": {"negative": "a negative movie review", "positive": "a positive movie review"},
    "trec6": {
        "ABBR": "a question asking what an abbreviation stands for",
        "DESC": "a question asking for a description, a definition or a reason",
        "ENTY": "a question asking about a thing, such as an animal, a colour, a food, a product or a sport",
        "HUM": "a question asking about a person or a group of people",
        "LOC": "a question asking about a place, such as a city, a country or a mountain",
        "NUM": "a question asking for a number, a date, an amount or a quantity",
    },
}


def write_files(labelled: Paths, folder: Path) -> dict[str, str]:
    """The labelled run's splits as files: train without its label column, val and test with label names."""
    names = load_labels(labelled)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in ("train", "val", "test"):
        frame = load_split(labelled, split)
        frame = frame[["text"]] if split == "train" else frame.assign(label=frame["label"].map(dict(enumerate(names))))
        files[split] = str(folder / f"{split}.parquet")
        frame.to_parquet(files[split], index=False)
    return files


def scores(report: dict) -> dict:
    return {"accuracy": round(report["accuracy"], 4), "f1_macro": round(report["f1_macro"], 4)}


def run_task(task: str, args: argparse.Namespace) -> dict:
    root = REPO / "runs" / f"zs-{task}"
    common = {"base": {"threads": args.threads}, "ingest": {"embedded": task},
              "evaluate": {"min_retention": 0.0, "latency_runs": 5, "warmup_runs": 1, "throughput_batches": 1}}
    labelled = Paths(root / "supervised")
    sup_cfg = load_config(REPO / "params.yaml", {**common, "teacher": {
        "epochs": args.supervised_epochs or 1, "lr": args.supervised_lr, "min_accuracy": 0.0}})
    run_stage("ingest", sup_cfg, labelled)
    entry: dict = {"task": task, "threads": args.threads, "test_rows": len(load_split(labelled, "test")),
                   "train_rows": len(load_split(labelled, "train")), "descriptions": DESCRIPTIONS[task]}
    if args.supervised_epochs:
        start = time.perf_counter()
        run_stage("validate", sup_cfg, labelled)
        report = run_stage("teacher", sup_cfg, labelled)
        entry["supervised_teacher"] = {**scores(report["test"]), "epochs": args.supervised_epochs,
                                       "lr": args.supervised_lr, "seconds": round(time.perf_counter() - start)}
    elif args.supervised_accuracy is not None:
        entry["supervised_teacher"] = {"accuracy": args.supervised_accuracy, "f1_macro": args.supervised_f1,
                                       "source": args.supervised_source}
    files = write_files(labelled, root / "files")
    zs = Paths(root / "zero-shot")
    overrides = {**common, "ingest": {"source": "files", "files": files},
                 "teacher": {"zero_shot": DESCRIPTIONS[task], "min_accuracy": 0.0},
                 "distill": {"epochs": args.distill_epochs}}
    cfg = load_config(REPO / "params.yaml", overrides)
    for stage in ("ingest", "validate"):
        run_stage(stage, cfg, zs)
    start = time.perf_counter()
    teacher = run_stage("teacher", cfg, zs)
    zs_report = teacher["zero_shot"]
    entry["zero_shot_teacher"] = {**scores(teacher["test"]), "val": scores(teacher["val"]),
                                  "uncentred": {s: scores(zs_report[f"uncentred_{s}"]) for s in ("test", "val")},
                                  "bias": zs_report["bias"], "scale": zs_report["scale"],
                                  "seconds": round(time.perf_counter() - start)}
    entry["students"] = []
    for seed in args.seeds:
        seeded = load_config(REPO / "params.yaml", {**overrides, "base": {**common["base"], "seed": seed}})
        start = time.perf_counter()
        distill = run_stage("distill", seeded, zs)
        run_stage("finetune", seeded, zs)
        run_stage("evaluate", seeded, zs)
        metrics = read_json(zs.reports / "metrics.json")
        entry["students"].append({"seed": seed, **scores(metrics["student"]), "layers": distill["student_layers"],
                                  "epochs": args.distill_epochs, "transfer_rows": distill["transfer_rows"],
                                  "agreement_with_teacher": round(metrics["agreement"], 4),
                                  "seconds": round(time.perf_counter() - start)})
        print(json.dumps(entry["students"][-1]), flush=True)
    for metric in ("accuracy", "f1_macro"):
        values = pd.Series([s[metric] for s in entry["students"]])
        entry[f"student_mean_{metric}"] = round(float(values.mean()), 4)
        entry[f"student_std_{metric}"] = round(float(values.std()), 4) if len(values) > 1 else None
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(DESCRIPTIONS), required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--distill-epochs", type=int, default=4)
    parser.add_argument("--supervised-epochs", type=int, default=0, help="0: quote --supervised-* instead")
    parser.add_argument("--supervised-lr", type=float, default=5e-5)
    parser.add_argument("--supervised-accuracy", type=float)
    parser.add_argument("--supervised-f1", type=float)
    parser.add_argument("--supervised-source", default="README, `make run` at commit ffe57a2 (same split, seed 42)")
    args = parser.parse_args()
    entry = run_task(args.task, args)
    results = read_json(OUT) if OUT.is_file() else {}
    results[args.task] = entry
    write_json(OUT, stamp(results))
    print(json.dumps(entry, indent=1))


if __name__ == "__main__":
    main()
