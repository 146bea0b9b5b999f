"""What the teacher adds: a seeded ablation of the distillation loss, per task and student depth.

For each task, the teacher is fine-tuned once (seed 42) on the task's train rows and its output
cache is reused; then, for each student depth (taken from the teacher's layers, the same
DistilBERT-style initialisation for every variant) and each seed, these students are trained:

- `ce`: cross-entropy on the labels alone (no teacher: plain fine-tuning of the small model);
- `kd`: the teacher's soft targets alone (KL at the temperature);
- `kd+ce`: both;
- `kd+ce+hidden`: both plus the pooled hidden-state alignment (params.yaml's default weights);
- `kd+ce+hidden+unlabelled`: the same with unlabelled transfer text, where the task ships some
  (movies: the tweet, Amazon and NYT snippets, soft targets only).

A seed changes the data order, dropout and the new head's initialisation, never the split. Every
student is scored on the whole test split; each variant's difference against `ce` is paired by
seed. Results are written after every run (`--out`, default reports/bench/ablation.json), so an
interrupted bench resumes where it stopped.

    python bench/ablation.py                       # the README's run (about 80 minutes on 2 cores)
    python bench/ablation.py --tasks trec50 --depths 1 --seeds 1,2,3
    python bench/ablation.py --table               # print the README table of the saved results
    python bench/ablation.py --merge reports/bench/ablation-part2.json   # parts run as parallel processes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench._stamp import save  # noqa: E402

# Loss weights of each variant; `unlabelled` adds the task's unlabelled transfer text.
VARIANTS = {
    "ce": {"alpha_kd": 0.0, "alpha_ce": 1.0, "alpha_cos": 0.0},
    "kd": {"alpha_kd": 1.0, "alpha_ce": 0.0, "alpha_cos": 0.0},
    "kd+ce": {"alpha_kd": 0.5, "alpha_ce": 0.5, "alpha_cos": 0.0},
    "kd+ce+hidden": {"alpha_kd": 0.5, "alpha_ce": 0.5, "alpha_cos": 0.1},
    "kd+ce+hidden+unlabelled": {"alpha_kd": 0.5, "alpha_ce": 0.5, "alpha_cos": 0.1, "unlabelled": True},
}
# The unlabelled transfer text each task ships (soft targets only); tasks absent here have none.
UNLABELLED = {"movies": "tweets,amazon,nyt"}
# The figure each task is judged by (and picks the best epoch by): macro-F1 where classes are imbalanced.
TASK_METRIC = {"sms-spam": "f1_macro"}
# Teacher fine-tuning per task: 50 classes from a fresh head need more steps (3 epochs at 5e-5 left
# the trec50 teacher at 0.65 accuracy, 0.24 macro-F1).
TEACHER = {"trec50": {"epochs": 6, "lr": 1e-4}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="movies,trec50,sms-spam")
    parser.add_argument("--depths", default="3,2,1", help="student layers (of the teacher's 6)")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--train-rows", default="movies=2000,sms-spam=2000",
                        help="task=N: train rows kept (stratified sample; teacher and students alike); others: all")
    parser.add_argument("--unlabelled-rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3, help="student epochs (the best epoch on val is kept)")
    parser.add_argument("--teacher-epochs", type=int, default=4, help="(trec50: 6; see TEACHER)")
    parser.add_argument("--teacher-lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=str(ROOT / "runs" / "ablation"), help="workspaces, one per task")
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench" / "ablation.json"))
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    parser.add_argument("--merge", nargs="*", default=[],
                        help="result files of parts run in parallel (e.g. one process per task): merged into --out")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"runs": {}, "teachers": {}}
    if args.merge:
        for part in map(Path, args.merge):
            other = json.loads(part.read_text())
            results["runs"].update(other["runs"])
            results["teachers"].update(other["teachers"])
            results.setdefault("parts", []).append(other.get("settings", {}))
        results["summary"] = summarise(results)
        save(out, results)
    if args.table or args.merge:
        print(table(results))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    rows = dict(item.split("=") for item in args.train_rows.split(",") if item)
    results["settings"] = {"epochs": args.epochs, "teacher_epochs": args.teacher_epochs, "teacher_lr": args.teacher_lr,
                           "teacher_per_task": TEACHER, "threads": args.threads,
                           "train_rows": rows, "unlabelled_rows": args.unlabelled_rows,
                           "command": "python bench/ablation.py " + " ".join(sys.argv[1:])}
    from tasks.infra.config import load_config, to_dict

    params = to_dict(load_config(ROOT / "params.yaml"))  # read once: a long bench must not see later edits
    start = time.perf_counter()
    for task in args.tasks.split(","):
        paths, cfg = prepare_task(task, Path(args.work) / task, int(rows.get(task, 0)), args, results, params)
        for depth in map(int, args.depths.split(",")):
            for variant in args.variants.split(","):
                if VARIANTS[variant].get("unlabelled") and task not in UNLABELLED:
                    continue
                for seed in map(int, args.seeds.split(",")):
                    key = f"{task}/{depth}/{variant}/{seed}"
                    if key in results["runs"]:
                        continue
                    results["runs"][key] = train_student(paths, cfg, task, depth, variant, seed, args)
                    save(out, results)
                    r = results["runs"][key]
                    print(f"{key}: accuracy {r['accuracy']:.4f} macro-F1 {r['f1_macro']:.4f} "
                          f"({r['seconds']:.0f} s; {time.perf_counter() - start:.0f} s in all)", flush=True)
    results["summary"] = summarise(results)
    save(out, results)
    print(table(results))


def prepare_task(task: str, root: Path, train_rows: int, args: argparse.Namespace, results: dict, params: dict):
    """Ingest the task, keep `train_rows` train rows, fine-tune its teacher once (reused if done)."""
    from tasks.infra.splits import load_split
    from tasks.infra.config import config_from_dict, merge
    from tasks.infra.errors import GateError
    from tasks.ingest import ingest, stratified_split
    from tasks.infra.storage import Paths, write_parquet
    from tasks.teacher import teacher

    metric = TASK_METRIC.get(task, "accuracy")
    cfg = config_from_dict(merge(params, {
        "ingest": {"source": "embedded", "embedded": task},
        "teacher": {"epochs": args.teacher_epochs, "lr": args.teacher_lr, "patience": args.teacher_epochs,
                    **TEACHER.get(task, {})},
        "evaluate": {"metric": metric}, "base": {"threads": args.threads}}))
    paths = Paths(root)
    done = results["teachers"].get(task)
    if done and paths.teacher.is_dir():
        return paths, cfg
    shutil.rmtree(root, ignore_errors=True)
    ingest(cfg, paths)
    train = load_split(paths, "train")
    if train_rows and train_rows < len(train):
        _, train = stratified_split(train, train_rows, 0)
        write_parquet(paths.split("train"), train)
    start = time.perf_counter()
    try:
        report = teacher(cfg, paths)
    except GateError as err:  # a weak teacher is still measured: the ablation says what it adds
        print(f"{task}: {err}", flush=True)
        report = json.loads((paths.reports / "teacher.json").read_text())
    results["teachers"][task] = {
        "metric": metric, "train_rows": len(train), "epochs": cfg.teacher.epochs, "lr": cfg.teacher.lr, "test_rows": len(load_split(paths, "test")),
        "classes": len(json.loads(paths.summary.read_text())["labels"]),
        "accuracy": report["test"]["accuracy"], "f1_macro": report["test"]["f1_macro"],
        "seconds": round(time.perf_counter() - start, 1)}
    print(f"{task} teacher: {results['teachers'][task]}", flush=True)
    return paths, cfg


def distil_and_score(run_cfg, paths) -> tuple[dict, dict]:
    """Run the distill stage afresh (never a resume) into `paths` with `run_cfg`, then score the student
    on the test split: (the stage's report, {accuracy, f1_macro, seconds, preds}). Shared by the
    benches that compare students over seeds (ablation, label_efficiency, precision)."""
    from tasks.core.predict import predict_logits
    from tasks.distill import distill
    from tasks.infra.splits import load_labels, load_split
    from tasks.models.training import encode_split
    from tasks.models.loading import load_classifier, load_tokenizer
    from tasks.infra.stats import metric_value

    shutil.rmtree(paths.checkpoints("distill"), ignore_errors=True)
    start = time.perf_counter()
    report = distill(run_cfg, paths)
    seconds = time.perf_counter() - start
    names = load_labels(paths)
    tokenizer = load_tokenizer(str(paths.distilled))
    student, _ = load_classifier(str(paths.distilled), names)
    test = encode_split(tokenizer, load_split(paths, "test"), run_cfg.base.max_length)
    preds = predict_logits(student, test, tokenizer.pad_token_id).argmax(-1)
    return report, {"accuracy": metric_value(test.labels, preds, "accuracy"),
                    "f1_macro": metric_value(test.labels, preds, "f1_macro", len(names)),
                    "seconds": round(seconds, 1), "preds": preds.astype(int).tolist()}


def train_student(paths, cfg, task: str, depth: int, variant: str, seed: int, args: argparse.Namespace) -> dict:
    """Distil one student into `paths` and score it on the test split."""
    from tasks.infra.config import config_from_dict, to_dict

    weights = {k: v for k, v in VARIANTS[variant].items() if k != "unlabelled"}
    unlabelled = ({"source": "embedded", "path": UNLABELLED[task], "text_column": "text"}
                  if VARIANTS[variant].get("unlabelled") else {"source": None, "path": None, "text_column": "text"})
    data = to_dict(cfg)
    data["base"]["seed"] = seed
    data["distill"].update(weights, student_layers=depth, layer_map=None, epochs=args.epochs, patience=args.epochs,
                           unlabeled=unlabelled, unlabeled_max_rows=args.unlabelled_rows)
    report, scored = distil_and_score(config_from_dict(data), paths)
    return {"accuracy": scored["accuracy"], "f1_macro": scored["f1_macro"],
            "best_val": report[f"best_val_{cfg.evaluate.metric}"], "seconds": scored["seconds"],
            "cache": report["cache"], "transfer_rows": report["transfer_rows"], "params": report["params"],
            "preds": scored["preds"]}


def summarise(results: dict) -> dict:
    """Mean ± std over seeds per cell, and each variant's per-seed difference against `ce`."""
    from tasks.infra.stats import seed_summary

    cells: dict[str, dict[str, dict[int, dict]]] = {}
    for key, run in results["runs"].items():
        task, depth, variant, seed = key.split("/")
        cells.setdefault(f"{task}/{depth}", {}).setdefault(variant, {})[int(seed)] = run
    summary = {}
    for cell, variants in cells.items():
        ce = variants.get("ce", {})
        summary[cell] = {}
        for variant, runs in variants.items():
            row = {m: seed_summary([r[m] for r in runs.values()]) for m in ("accuracy", "f1_macro")}
            seeds = sorted(set(runs) & set(ce))
            if variant != "ce" and seeds:
                for m in ("accuracy", "f1_macro"):
                    diffs = [runs[s][m] - ce[s][m] for s in seeds]
                    row[f"vs_ce_{m}"] = {**seed_summary(diffs), "positive": sum(d > 0 for d in diffs)}
            row["seconds"] = seed_summary([r["seconds"] for r in runs.values()])["mean"]
            summary[cell][variant] = row
    return summary


def table(results: dict) -> str:
    """The README table: the task's metric, mean ± std over seeds, and the paired difference to CE."""
    summary = results.get("summary") or summarise(results)
    lines = ["| task (metric) | layers | variant | test score, mean ± std | vs CE-only, paired by seed | seeds better | s/run |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for cell, variants in summary.items():
        task, depth = cell.split("/")
        metric = results["teachers"].get(task, {}).get("metric", "accuracy")
        for variant, row in variants.items():
            score = row[metric]
            diff = row.get(f"vs_ce_{metric}")
            seeds = "" if score["n"] >= 3 else f" ({score['n']} seed{'s' if score['n'] > 1 else ''} only)"
            lines.append(f"| {task} ({metric}) | {depth} | {variant} | {score['mean']:.4f} ± {score['std']:.4f}{seeds} | "
                         + (f"{diff['mean']:+.4f} ± {diff['std']:.4f} | {diff['positive']}/{diff['n']}" if diff
                            else "– | –") + f" | {row['seconds']:.0f} |")
    teachers = [f"{t}: teacher {r['metric']} {r[r['metric']]:.4f} on {r['test_rows']} test rows "
                f"({r['classes']} classes, {r['train_rows']} train rows)" for t, r in results["teachers"].items()]
    return "\n".join(lines + [""] + teachers)


if __name__ == "__main__":
    main()
