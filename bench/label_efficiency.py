"""Few labels: when does unlabelled text pay? A seeded label-efficiency curve, per task.

Each task's train split is capped (`--train-rows`, a stratified sample fixed by seed 0, as in
bench/ablation.py) and its val split too (`--val-rows`: a few-label user has no large val split;
it only picks the best epoch and the teacher). Then, for each labelled fraction and seed, a labelled
subset is drawn from the capped train rows (stratified, at least one row per class; the seed
changes which rows are labelled as well as the training order and the new heads) and the rest of
the capped train rows become an unlabelled transfer file (text only). Each cell compares:

- `a` (labels alone): the 3-layer student made from layers 0, 2, 4 of the pretrained base model
  (the default layer map; no teacher), cross-entropy on the labelled rows;
- `b` (few labels + unlabelled text): the teacher fine-tuned on the labelled rows, then distilled
  into the same 3-layer shape over the labelled rows plus the unlabelled file (`distill.unlabeled`,
  soft targets only; params.yaml's loss weights);
- the few-label teacher two ways where `--setfit-fractions` says: plain fine-tuning, and SetFit's
  contrastive tuning of the body before the same fine-tuning (tasks/models/contrastive.py,
  `teacher.method: setfit`); `b` distils from whichever scores better on val.

Every stage is the pipeline's own function (ingest, teacher, distill), so this is the path a user
gets from `kdistill run` with `distill.unlabeled` set. Small labelled sets are repeated within an epoch so
that the teacher and `a` get at least `--min-steps` optimiser steps (the best epoch on val is kept). Results are written after every run
(`--out`), so an interrupted bench resumes where it stopped; `--plot` draws the PNG.

    python bench/label_efficiency.py --threads 1          # the README's run
    python bench/label_efficiency.py --table              # print the README table of the saved results
    python bench/label_efficiency.py --plot               # redraw reports/bench/label_efficiency.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from ablation import TASK_METRIC, distil_and_score, save

METHODS = ("a", "b")
LABELS = {"a": "a: student, labels alone (CE)", "b": "b: student distilled from the few-label teacher + unlabelled text"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="movies,trec6")
    parser.add_argument("--fractions", default="0.01,0.05,0.2,1.0", help="labelled share of the capped train rows")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--train-rows", type=int, default=600, help="train rows kept per task (stratified)")
    parser.add_argument("--val-rows", type=int, default=200, help="val rows kept per task (stratified)")
    parser.add_argument("--epochs", type=int, default=2, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=3, help="teacher epochs")
    parser.add_argument("--teacher-lr", type=float, default=1e-4)
    parser.add_argument("--min-steps", type=int, default=30, help="optimiser steps at least (small labelled sets)")
    parser.add_argument("--setfit-fractions", default="0.01,0.05", help="fractions where SetFit is tried too")
    parser.add_argument("--setfit-steps", type=int, default=20, help="contrastive steps (16 pairs each)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default=str(ROOT / "runs" / "label_efficiency"))
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench" / "label_efficiency.json"))
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    parser.add_argument("--plot", action="store_true", help="only draw the PNG of --out")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"runs": {}, "tasks": {}}
    if args.table or args.plot:
        if args.plot:
            plot(results, out.with_suffix(".png"))
        print(table(results))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tasks.infra.config import load_config, to_dict

    params = to_dict(load_config(ROOT / "params.yaml"))  # read once: a long bench must not see later edits
    results["settings"] = {k: v for k, v in vars(args).items() if k not in ("table", "plot", "work", "out")}
    results["settings"]["command"] = "python bench/label_efficiency.py " + " ".join(sys.argv[1:])
    start = time.perf_counter()
    bases = {task: prepare_task(task, Path(args.work) / task, args, results, params) for task in args.tasks.split(",")}
    # Fraction first: a bench cut short still has every task and seed at the fewest labels.
    for fraction in map(float, args.fractions.split(",")):
        for task, base in bases.items():
            for seed in map(int, args.seeds.split(",")):
                key = f"{task}/{fraction:g}/{seed}"
                if key in results["runs"] and "b" in results["runs"][key]:
                    continue
                run_cell(base, key, task, fraction, seed, args, results, params, out)
                r = results["runs"][key]
                print(f"{key}: {r['labelled']} labelled; a {r['a']['accuracy']:.4f}, b {r['b']['accuracy']:.4f} "
                      f"(teacher {r['teacher']}; {time.perf_counter() - start:.0f} s in all)", flush=True)
            results["summary"] = summarise(results)
            save(out, results)
    results["summary"] = summarise(results)
    save(out, results)
    plot(results, out.with_suffix(".png"))
    print(table(results))


def task_config(task: str, args: argparse.Namespace, params: dict, **sections):
    """The run's config: params.yaml's values with the task, the bench's settings and `sections` merged in."""
    from tasks.infra.config import config_from_dict, merge

    metric = TASK_METRIC.get(task, "accuracy")
    data = merge(params, {"ingest": {"source": "embedded", "embedded": task},
                          "evaluate": {"metric": metric}, "base": {"threads": args.threads},
                          "teacher": {"min_accuracy": 0.0, "lr": args.teacher_lr}})
    return config_from_dict(merge(data, sections))


def prepare_task(task: str, root: Path, args: argparse.Namespace, results: dict, params: dict):
    """Ingest the task once, cap its train and val rows; returns the workspace's Paths."""
    from tasks.infra.splits import load_labels, load_split
    from tasks.infra.storage import Paths, write_parquet
    from tasks.ingest import ingest, stratified_split

    paths = Paths(root / "base")
    if task in results["tasks"] and paths.summary.is_file():
        return paths
    shutil.rmtree(paths.root, ignore_errors=True)
    ingest(task_config(task, args, params), paths)
    sizes = {}
    for split, rows in (("train", args.train_rows), ("val", args.val_rows)):
        frame = load_split(paths, split)
        if rows and rows < len(frame):
            _, frame = stratified_split(frame, rows, 0)
            write_parquet(paths.split(split), frame)
        sizes[split] = len(frame)
    sizes["test"] = len(load_split(paths, "test"))
    results["tasks"][task] = {"metric": TASK_METRIC.get(task, "accuracy"), "classes": len(load_labels(paths)),
                              "rows": sizes}
    return paths


def labelled_subset(train, fraction: float, seed: int):
    """(labelled, unlabelled) rows: a stratified `fraction` of `train`, at least one row per class."""
    import pandas as pd

    from tasks.ingest import stratified_split

    rows = max(round(fraction * len(train)), train["label"].nunique())
    if rows >= len(train):
        return train, train.iloc[:0]
    rest, labelled = stratified_split(train, rows, seed)
    missing = sorted(set(train["label"]) - set(labelled["label"]))
    if missing:  # a rare class the draw missed: swap one of its rows in for a row of the largest class
        extra = pd.concat([rest[rest["label"] == c].sample(1, random_state=seed) for c in missing])
        drop = labelled[labelled["label"] == labelled["label"].value_counts().idxmax()].index[:len(missing)]
        rest = pd.concat([rest.drop(extra.index), labelled.loc[drop]])
        labelled = pd.concat([labelled.drop(drop), extra])
    return labelled.reset_index(drop=True), rest.reset_index(drop=True)


def repeats_for(rows: int, batch_size: int, epochs: int, args: argparse.Namespace) -> int:
    """How often the labelled rows are repeated per epoch so that `epochs` give at least `--min-steps` steps.

    Repeating within an epoch, rather than running more epochs, is the same training with fewer
    validation passes and checkpoints (which cost more than 10 one-batch steps).
    """
    return max(1, math.ceil(args.min_steps * batch_size / (epochs * rows)))


def make_workspace(base, root: Path, labelled, unlabelled, repeats: int = 1):
    """A cell's workspace: the task's val/test splits, the labelled train split (`repeats` times over), and
    the unlabelled file (text only)."""
    import pandas as pd

    from tasks.infra.storage import Paths, write_parquet

    paths = Paths(root)
    if not paths.summary.is_file():
        shutil.copytree(base.processed, paths.processed, dirs_exist_ok=True)
        write_parquet(root / "unlabelled.parquet", unlabelled[["text"]])
    write_parquet(paths.split("train"), pd.concat([labelled] * repeats, ignore_index=True))
    return paths


def run_cell(base, key: str, task: str, fraction: float, seed: int, args, results: dict, params: dict,
             out: Path) -> None:
    """Train and score a cell's teachers, `a` and `b`, saving the results after each."""
    from tasks.infra.splits import load_split

    train = load_split(base, "train")
    labelled, unlabelled = labelled_subset(train, fraction, seed)
    root = Path(args.work) / task / f"{fraction:g}" / str(seed)
    cell = results["runs"].setdefault(key, {"labelled": len(labelled), "unlabelled": len(unlabelled)})
    t_repeats = repeats_for(len(labelled), params["teacher"]["batch_size"], args.teacher_epochs, args)
    methods = ["finetune"] + (["setfit"] if f"{fraction:g}" in args.setfit_fractions.split(",") else [])
    for method in methods:
        if f"teacher_{method}" not in cell:
            paths = make_workspace(base, root / method, labelled, unlabelled, t_repeats)
            cell[f"teacher_{method}"] = train_teacher(paths, task, method, seed, t_repeats, args, params)
            save(out, results)
    metric = results["tasks"][task]["metric"]
    cell["teacher"] = max(methods, key=lambda m: cell[f"teacher_{m}"]["val"][metric])  # picked on val, never test
    paths = make_workspace(base, root / cell["teacher"], labelled, unlabelled, t_repeats)
    if not paths.teacher.is_dir():  # an interrupted bench lost the workspace: train the teacher again
        train_teacher(paths, task, cell["teacher"], seed, t_repeats, args, params)
    if "a" not in cell:
        s_repeats = repeats_for(len(labelled), params["distill"]["batch_size"], args.epochs, args)
        cell["a"] = labels_alone(base, make_workspace(base, root / "a", labelled, unlabelled, s_repeats),
                                 task, seed, s_repeats, args, params)
        save(out, results)
    # b distils over the labelled rows once each, plus the unlabelled file, as a user's pipeline run would.
    paths = make_workspace(base, paths.root, labelled, unlabelled)
    cell["b"] = distil(paths, paths.root / "unlabelled.parquet" if len(unlabelled) else None, task, seed, args, params)
    save(out, results)
    shutil.rmtree(root, ignore_errors=True)  # about 1 GB of models and checkpoints a cell; the results are saved


def train_teacher(paths, task: str, method: str, seed: int, repeats: int, args, params: dict) -> dict:
    """Fine-tune the teacher on the labelled rows (after SetFit's contrastive tuning for `setfit`)."""
    from tasks.teacher import teacher

    epochs = args.teacher_epochs
    cfg = task_config(task, args, params, base={"seed": seed},
                      teacher={"method": method, "epochs": epochs, "patience": epochs,
                               "setfit_steps": args.setfit_steps})
    start = time.perf_counter()
    report = teacher(cfg, paths)
    return {**{s: {m: report[s][m] for m in ("accuracy", "f1_macro")} for s in ("val", "test")},
            "epochs": epochs, "repeats": repeats, "seconds": round(time.perf_counter() - start, 1)}


def labels_alone(base, paths, task: str, seed: int, repeats: int, args, params: dict) -> dict:
    """`a`: the 3-layer student from the pretrained base's layers 0, 2, 4, CE on the labelled rows only."""
    from tasks.infra.splits import load_labels
    from tasks.models.loading import load_classifier, load_tokenizer, save_model

    model = params["teacher"]["model"]
    if not paths.teacher.is_dir():  # the untrained base as the "teacher" the student's layers come from
        classifier, _ = load_classifier(model, load_labels(base))
        save_model(classifier, load_tokenizer(model), paths.teacher)
    run = student_run(paths, None, task, seed, args.epochs, args, params,
                      {"alpha_kd": 0.0, "alpha_ce": 1.0, "alpha_cos": 0.0})
    return {**run, "repeats": repeats}


def distil(paths, unlabelled: Path | None, task: str, seed: int, args, params: dict) -> dict:
    """`b`: the student distilled from the cell's teacher over labelled + unlabelled rows."""
    return student_run(paths, unlabelled, task, seed, args.epochs, args, params, {})


def student_run(paths, unlabelled: Path | None, task: str, seed: int, epochs: int, args, params: dict,
                weights: dict) -> dict:
    """Run the distill stage into `paths` and score the student on the test split."""

    source = {"source": "file", "path": str(unlabelled), "text_column": "text"} if unlabelled else \
        {"source": None, "path": None, "text_column": "text"}
    cfg = task_config(task, args, params, base={"seed": seed},
                      distill={**weights, "student_layers": 3, "layer_map": None, "student_model": None,
                               "epochs": epochs, "patience": epochs, "unlabeled": source,
                               "unlabeled_max_rows": None})
    report, scored = distil_and_score(cfg, paths)
    return {"accuracy": scored["accuracy"], "f1_macro": scored["f1_macro"],
            "epochs": epochs, "transfer_rows": report["transfer_rows"], "seconds": scored["seconds"],
            "preds": scored["preds"]}


def summarise(results: dict) -> dict:
    """Per task and fraction: mean ± std over seeds of `a`, `b` and the teacher, and b - a paired by seed."""
    from tasks.infra.stats import seed_summary

    cells: dict[str, dict[int, dict]] = {}
    for key, run in results["runs"].items():
        task, fraction, seed = key.split("/")
        if "a" in run and "b" in run:
            cells.setdefault(f"{task}/{fraction}", {})[int(seed)] = run
    summary = {}
    for cell, runs in cells.items():
        row = {"labelled": seed_summary([r["labelled"] for r in runs.values()])["mean"],
               "teachers": {m: sum(r["teacher"] == m for r in runs.values()) for m in ("finetune", "setfit")}}
        for metric in ("accuracy", "f1_macro"):
            row[metric] = {m: seed_summary([r[m][metric] for r in runs.values()]) for m in METHODS}
            row[metric]["teacher"] = seed_summary([r[f"teacher_{r['teacher']}"]["test"][metric] for r in runs.values()])
            for method in ("finetune", "setfit"):
                got = [r[f"teacher_{method}"]["test"][metric] for r in runs.values() if f"teacher_{method}" in r]
                if got:
                    row[metric][f"teacher_{method}"] = seed_summary(got)
            diffs = [r["b"][metric] - r["a"][metric] for r in runs.values()]
            row[metric]["b-a"] = {**seed_summary(diffs), "positive": sum(d > 0 for d in diffs)}
        summary[cell] = row
    return summary


def table(results: dict) -> str:
    """The README table: per task and labelled fraction, a and b (mean ± std), b - a paired by seed."""
    summary = summarise(results)  # from the runs: a bench cut short has no up-to-date summary
    lines = [("| task (metric) | labelled rows | a: labels alone | b: + unlabelled text | b − a, paired | seeds b > a "
             "| teacher (kept: finetune/setfit) | fine-tuned teacher | SetFit teacher |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for cell, row in sorted(summary.items(), key=lambda kv: (kv[0].split("/")[0], float(kv[0].split("/")[1]))):
        task, fraction = cell.split("/")
        metrics = ["accuracy"] + (["f1_macro"] if results["tasks"][task]["classes"] > 2 else [])
        for metric in metrics:
            r = row[metric]
            fmt = lambda s: f"{s['mean']:.4f} ± {s['std']:.4f}" if s else "–"
            kept = f"{row['teachers']['finetune']}/{row['teachers']['setfit']}"
            lines.append(f"| {task} ({metric}) | {row['labelled']:.0f} ({float(fraction):.0%}) | {fmt(r['a'])} | "
                         f"{fmt(r['b'])} | {r['b-a']['mean']:+.4f} ± {r['b-a']['std']:.4f} | "
                         f"{r['b-a']['positive']}/{r['b-a']['n']} | {fmt(r['teacher'])} ({kept}) | "
                         f"{fmt(r.get('teacher_finetune'))} | {fmt(r.get('teacher_setfit'))} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Test score against labelled rows (log x), both methods with std error bars, one panel per task metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(results)  # from the runs: a bench cut short has no up-to-date summary
    panels = [(t, "accuracy") for t in results["tasks"]] + \
             [(t, "f1_macro") for t, info in results["tasks"].items() if info["classes"] > 2]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, (task, metric) in zip(axes[0], panels):
        rows = sorted((r["labelled"], r[metric]) for c, r in summary.items() if c.split("/")[0] == task)
        for method, style in (("a", "o--"), ("b", "s-"), ("teacher", "^:")):
            label = LABELS.get(method, "few-label teacher (6 layers)")
            ax.errorbar([n for n, _ in rows], [m[method]["mean"] for _, m in rows],
                        yerr=[m[method]["std"] for _, m in rows], fmt=style, capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("labelled train rows (log)")
        ax.set_ylabel(f"test {metric}")
        ax.set_title(f"{task}: {metric}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
