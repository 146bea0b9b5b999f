"""Students beyond depth (issue 23): static-embedding students and a pruned vocabulary against the teacher.

For each task the teacher is fine-tuned once (bench/ablation.py's `prepare_task`, seed 42) and its
output cache reused; then, per seed, these points are trained and scored on the whole test split:

- `static-kd+ce`, `static-kd`, `static-ce`: the static student (distill.student: static, model2vec's
  table of the fine-tuned teacher, `--static-dims`) trained by the distill stage on soft targets and
  labels (0.5/0.5), soft targets alone (1/0), or labels alone (0/1): the same student, KD against CE;
- `m2v+logreg` and `m2v-base+logreg`: the plainest baselines: model2vec embeddings (of the fine-tuned
  teacher, and of the base sentence embedder a practitioner would start from) with scikit-learn's
  logistic regression, C picked on val; deterministic, so one fit serves every seed;
- `3L` and `3L-pruned`: the 3-layer transformer student (params.yaml's loss) and the same weights with
  the vocabulary pruned to the transfer set's tokens (pruning happens after training).

Then, once per task, every point's seed-1 model and the fp32 teacher are timed in one process by the
same functions as the serving benchmark and the sweep (tasks/production/export.py): batch-1 latency
(interleaved blocks, so a load spike lands on all) and batch-32 throughput, per serving variant; a
point's served variant is the fastest within inference.max_drop of its own torch-fp32 on val.
Goals (movies): a student >= 12x faster than the fp32 teacher within 1 point (val), one >= 50x within
5 points. Results are saved after every run (`--out`): an interrupted bench resumes.

    python bench/students.py                        # the full run (see the README for its time)
    python bench/students.py --table                # print the tables of the saved results
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

from ablation import TASK_METRIC, distil_and_score, prepare_task, save  # noqa: E402

STATIC = {"static-kd+ce": (0.5, 0.5), "static-kd": (1.0, 0.0), "static-ce": (0.0, 1.0)}
BASELINES = ("m2v+logreg", "m2v-base+logreg")
POINTS = (*STATIC, *BASELINES, "3L", "3L-pruned")
GOALS = ((12.0, 0.01), (50.0, 0.05))  # (speed-up over the fp32 teacher at batch 1, val points lost at most)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="movies,trec6,trec50,sms-spam")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--train-rows", default="movies=2000,sms-spam=2000", help="task=N train rows kept; others: all")
    parser.add_argument("--eval-rows", type=int, default=0, help="cap val and test rows (smoke runs); 0: all")
    parser.add_argument("--epochs", type=int, default=3, help="3-layer student epochs (the best on val is kept)")
    parser.add_argument("--static-dims", type=int, default=256)
    parser.add_argument("--static-epochs", type=int, default=10)
    parser.add_argument("--teacher-epochs", type=int, default=4, help="(trec50: 6; bench/ablation.py TEACHER)")
    parser.add_argument("--teacher-lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2, help="training threads (timing: evaluate.threads)")
    parser.add_argument("--timing-runs", type=int, default=200, help="batch-1 runs per model and variant")
    parser.add_argument("--variants", default="torch-fp32,onnx-fp32,onnx-int8")
    parser.add_argument("--work", default=str(ROOT / "runs" / "students"))
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench" / "students.json"))
    parser.add_argument("--table", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"runs": {}, "teachers": {}, "timing": {}}
    if args.table:
        print(table(results))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from tasks.infra.config import load_config, to_dict

    torch.set_num_threads(args.threads)
    rows = dict(item.split("=") for item in args.train_rows.split(",") if item)
    results["settings"] = {k: v for k, v in vars(args).items() if k not in ("table", "work", "out")}
    results["settings"]["command"] = "python bench/students.py " + " ".join(sys.argv[1:])
    params = to_dict(load_config(ROOT / "params.yaml"))
    start = time.perf_counter()
    for task in args.tasks.split(","):
        paths, cfg = prepare_task(task, Path(args.work) / task, int(rows.get(task, 0)), args, results, params)
        cap_eval_rows(paths, args.eval_rows)
        seeds = [int(s) for s in args.seeds.split(",")]
        for seed in seeds:
            for point in POINTS:
                key = f"{task}/{point}/{seed}"
                if key in results["runs"]:
                    continue
                if point not in ("3L-pruned",):  # 3L-pruned is made with 3L
                    results["runs"].update(train_point(paths, cfg, task, point, seed, seed == seeds[0], args))
                    save(out, results)
                    print(f"{key}: {results['runs'][key]['test']:.4f} test, {results['runs'][key]['val']:.4f} val "
                          f"({time.perf_counter() - start:.0f} s in all)", flush=True)
        if task not in results["timing"]:
            results["timing"][task] = timing(paths, cfg, args)
            save(out, results)
    results["summary"] = summarise(results)
    save(out, results)
    print(table(results))


def cap_eval_rows(paths, rows: int) -> None:
    """Keep the first `rows` val and test rows (smoke runs only)."""
    import pandas as pd

    for split in ("val", "test") if rows else ():
        frame = pd.read_parquet(paths.split(split))
        if len(frame) > rows:
            frame.head(rows).to_parquet(paths.split(split))


def point_dir(paths, point: str) -> Path:
    return paths.root / "models" / "points" / point


def scores(model_dir: Path, paths, metric: str, max_length: int) -> dict:
    """Test and val score of a saved classifier, and its test predictions (paired comparisons)."""
    from tasks.core.predict import predict_logits
    from tasks.infra.splits import load_labels, load_split
    from tasks.models.training import encode_split
    from tasks.models.loading import load_classifier, load_tokenizer
    from tasks.infra.stats import metric_value

    names = load_labels(paths)
    tokenizer = load_tokenizer(str(model_dir))
    model, _ = load_classifier(str(model_dir), names)
    out = {}
    for split in ("val", "test"):
        data = encode_split(tokenizer, load_split(paths, split), max_length)
        preds = predict_logits(model, data, tokenizer.pad_token_id).argmax(-1)
        out[split] = metric_value(data.labels, preds, metric, len(names))
        out[f"{split}_preds"] = preds.astype(int).tolist()
    return out


def train_point(paths, cfg, task: str, point: str, seed: int, keep: bool, args) -> dict:
    """Train one point (3L also yields 3L-pruned) and score it; `keep` saves its model for the timing."""
    from tasks.distill import transfer_set, unlabeled_texts
    from tasks.infra.splits import load_split
    from tasks.infra.config import config_from_dict, to_dict
    from tasks.models.loading import count_params, load_classifier, load_tokenizer, save_model
    from tasks.infra.storage import dir_size_mb
    from tasks.models.vocab import prune_vocabulary

    metric, data = cfg.evaluate.metric, to_dict(cfg)
    data["base"]["seed"] = seed
    start = time.perf_counter()
    if point in BASELINES:
        folder = logreg_baseline(paths, cfg, point, args)
        made = {point: folder}
    else:
        if point in STATIC:
            kd, ce = STATIC[point]
            data["distill"].update(student="static", static_dims=args.static_dims, static_epochs=args.static_epochs,
                                   alpha_kd=kd, alpha_ce=ce, patience=args.static_epochs)
        else:
            data["distill"].update(student="transformer", student_layers=3, layer_map=None, epochs=args.epochs,
                                   patience=args.epochs)
        run_cfg = config_from_dict(data)
        distil_and_score(run_cfg, paths)
        made = {point: paths.distilled}
        if point == "3L":
            tokenizer = load_tokenizer(str(paths.distilled))
            model, _ = load_classifier(str(paths.distilled), None)
            transfer = transfer_set(tokenizer, load_split(paths, "train"), unlabeled_texts(run_cfg, paths),
                                    cfg.base.max_length)
            model, tokenizer, _ = prune_vocabulary(model, tokenizer, transfer)
            save_model(model, tokenizer, paths.root / "models" / "pruned")
            made["3L-pruned"] = paths.root / "models" / "pruned"
    seconds = round(time.perf_counter() - start, 1)
    runs = {}
    for name, folder in made.items():
        model, _ = load_classifier(str(folder), None)
        runs[f"{task}/{name}/{seed}"] = {**scores(folder, paths, metric, cfg.base.max_length), "seconds": seconds,
                                         "params": count_params(model), "size_mb": round(dir_size_mb(folder), 2)}
        if keep and folder != point_dir(paths, name):
            shutil.rmtree(point_dir(paths, name), ignore_errors=True)
            shutil.copytree(folder, point_dir(paths, name))
    return runs


def logreg_baseline(paths, cfg, point: str, args) -> Path:
    """model2vec embeddings + logistic regression (C from 0.1, 1, 10 on val), saved as a static model with a
    linear head so the same code scores and times it; fitted once per task."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from tasks.core.data import Collator
    from tasks.infra.splits import load_labels, load_split
    from tasks.models.training import encode_split
    from tasks.models.loading import load_classifier, load_tokenizer, resolve_model, save_model
    from tasks.infra.storage import hash_dir
    from tasks.models.static import static_from_teacher

    folder = point_dir(paths, point)
    if (folder / "config.json").is_file():
        return folder
    names = load_labels(paths)
    source = str(paths.teacher) if point == "m2v+logreg" else resolve_model(cfg.teacher.model)
    encoder, _ = load_classifier(source, names)
    tokenizer = load_tokenizer(source)
    model = static_from_teacher(encoder, tokenizer, names, args.static_dims, 0, False,
                                cache=(paths.cache, hash_dir(source, "*.safetensors"))).eval()
    model.config.normalize = True  # model2vec's StaticModel.encode normalises: the embeddings as shipped

    @torch.no_grad()
    def embed(split: str) -> tuple[np.ndarray, np.ndarray]:
        data = encode_split(tokenizer, load_split(paths, split), cfg.base.max_length)
        batch = Collator(tokenizer.pad_token_id)([data[i] for i in range(len(data))])
        mask = model.token_mask(batch["input_ids"], batch["attention_mask"])
        pooled = torch.nn.functional.normalize(
            (model.embeddings(batch["input_ids"]) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1),
            dim=-1)
        return pooled.numpy(), data.labels

    (xt, yt), (xv, yv) = embed("train"), embed("val")
    labelled = yt >= 0
    fits = {c: LogisticRegression(C=c, max_iter=2000).fit(xt[labelled], yt[labelled]) for c in (0.1, 1.0, 10.0)}
    best = max(fits, key=lambda c: (fits[c].score(xv, yv), -c))
    clf = fits[best]
    weight = np.zeros((len(names), xt.shape[1]), dtype=np.float32)
    bias = np.zeros(len(names), dtype=np.float32)
    if len(clf.classes_) == 2:  # binary: one row; as two logits, [0, w·x + b] gives the same softmax
        weight[clf.classes_[1]], bias[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
    else:
        weight[clf.classes_], bias[clf.classes_] = clf.coef_, clf.intercept_
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(weight))
        model.classifier.bias.copy_(torch.from_numpy(bias))
    model.config.logreg_c = best
    save_model(model, tokenizer, folder)
    return folder


def timing(paths, cfg, args) -> dict:
    """Every point's seed-1 model and the fp32 teacher, timed in one process: batch-1 latency in interleaved
    blocks, batch-32 throughput, val and test accuracy, per variant; plus each point's served variant."""
    import numpy as np
    import torch

    from tasks.infra.splits import load_split
    from tasks.models.training import encode_split
    from tasks.models.loading import load_tokenizer
    from tasks.production.export import (choose_variant, load_predictor, serving_inputs,
                                         throughput_and_accuracy)

    threads, warm, variants = cfg.evaluate.threads, cfg.evaluate.warmup_runs, args.variants.split(",")
    folders = {"teacher": paths.teacher, **{p: point_dir(paths, p) for p in POINTS if point_dir(paths, p).is_dir()}}
    inputs, predictors = {}, {}
    for name, folder in folders.items():
        tokenizer = load_tokenizer(str(folder))
        split = {s: encode_split(tokenizer, load_split(paths, s), cfg.base.max_length) for s in ("val", "test")}
        singles, test_batches = serving_inputs(split["test"], tokenizer.pad_token_id, warm + args.timing_runs, 32)
        _, val_batches = serving_inputs(split["val"], tokenizer.pad_token_id, 0, 32)
        inputs[name] = (singles, test_batches, val_batches, split)
        for variant in ["torch-fp32"] if name == "teacher" else variants:
            predictors[(name, variant)] = load_predictor(folder, variant, threads)
    torch.set_num_threads(threads)
    times: dict = {key: [] for key in predictors}
    for key, p in predictors.items():
        for ids, mask in inputs[key[0]][0][:warm]:
            p.predict_logits(ids, mask)
    for start in range(warm, warm + args.timing_runs, 20):  # every model, a block of 20 in turn
        for key, p in predictors.items():
            for ids, mask in inputs[key[0]][0][start:start + 20]:
                t0 = time.perf_counter()
                p.predict_logits(ids, mask)
                times[key].append((time.perf_counter() - t0) * 1000)
    out: dict = {}
    for (name, variant), p in predictors.items():
        _, test_batches, val_batches, split = inputs[name]
        throughput, test_acc = throughput_and_accuracy(p, test_batches, split["test"].labels)
        out.setdefault(name, {})[variant] = {
            "latency_ms_b1": round(float(np.median(times[(name, variant)])), 4), "throughput_b32": round(throughput, 1),
            "size_mb": round(p.size_mb, 2), "test_accuracy": round(test_acc, 4),
            "accuracy": throughput_and_accuracy(p, val_batches, split["val"].labels)[1]}
    for name, rows in out.items():
        rows["served"] = choose_variant(rows, cfg.inference.max_drop) if "torch-fp32" in rows else None
    out["threads"] = threads
    out["teacher_val"] = scores(paths.teacher, paths, cfg.evaluate.metric, cfg.base.max_length)["val"]  # task metric
    torch.set_num_threads(args.threads)
    return out


def summarise(results: dict) -> dict:
    """Per task and point: mean ± std over seeds (test, val), paired differences, and the speed of its served
    variant against the fp32 teacher; per task, the goals."""
    from tasks.infra.stats import seed_summary

    cells: dict[str, dict[str, dict[int, dict]]] = {}
    for key, run in results["runs"].items():
        task, point, seed = key.split("/")
        cells.setdefault(task, {}).setdefault(point, {})[int(seed)] = run
    pairs = {"static-kd+ce": "static-ce", "static-kd": "static-ce", "static-ce": "m2v+logreg", "3L-pruned": "3L"}
    summary = {}
    for task, points in cells.items():
        timing = results.get("timing", {}).get(task, {})  # per point and variant; teacher_val in the task's metric
        teacher = timing.get("teacher", {}).get("torch-fp32")
        summary[task] = {}
        for point, runs in points.items():
            row = {s: seed_summary([r[s] for r in runs.values()]) for s in ("test", "val")}
            row.update(params=next(iter(runs.values()))["params"], size_mb=next(iter(runs.values()))["size_mb"])
            base = points.get(pairs.get(point), {})
            seeds = sorted(set(runs) & set(base))
            if seeds:
                diffs = [runs[s]["test"] - base[s]["test"] for s in seeds]
                row["vs"] = {"point": pairs[point], **seed_summary(diffs), "positive": sum(d > 0 for d in diffs)}
            served = timing.get(point, {}).get(timing.get(point, {}).get("served") or "", None)
            if served and teacher:
                row["served"] = {"variant": timing[point]["served"], **served,
                                 "speedup_b1": teacher["latency_ms_b1"] / max(served["latency_ms_b1"], 1e-9),
                                 "throughput_ratio": served["throughput_b32"] / max(teacher["throughput_b32"], 1e-9)}
                row["val_drop"] = timing.get("teacher_val", teacher["accuracy"]) - row["val"]["mean"]
            summary[task][point] = row
        summary[task]["goals"] = goals(summary[task])
    return summary


def goals(points: dict) -> list[dict]:
    """Per goal: the fastest point that meets it, else each family's nearest miss and by how much."""
    out = []
    for speed, drop in GOALS:
        timed = {p: r for p, r in points.items() if "served" in r}
        meets = [p for p, r in timed.items() if r["served"]["speedup_b1"] >= speed and r["val_drop"] <= drop + 1e-9]
        best = max(meets, key=lambda p: timed[p]["served"]["speedup_b1"], default=None)
        misses = {p: {"speedup_b1": round(r["served"]["speedup_b1"], 1), "val_points_lost": round(100 * r["val_drop"], 2),
                      "short": ([f"{speed / r['served']['speedup_b1']:.2f}x too slow"]
                                if r["served"]["speedup_b1"] < speed else [])
                               + ([f"{100 * (r['val_drop'] - drop):.2f} points over"] if r["val_drop"] > drop + 1e-9
                                  else [])}
                  for p, r in timed.items() if p not in meets}
        out.append({"goal": f">= {speed:g}x faster than the fp32 teacher within {100 * drop:g} point(s) (val)",
                    "met_by": best, "meets": meets, "misses": misses})
    return out


def table(results: dict) -> str:
    """The README tables: every point's scores and speed against the fp32 teacher; then the goals."""
    summary = summarise(results)  # recomputed: a rule changed since the run still reads its raw results
    lines = ["| task | point | test, mean ± std | val | vs (paired by seed) | params | MB | served | b1 ms | "
             "× teacher b1 | b32 rows/s |", "|---|---|---:|---:|---|---:|---:|---|---:|---:|---:|"]
    for task, points in summary.items():
        teacher = results.get("timing", {}).get(task, {}).get("teacher", {}).get("torch-fp32")
        if teacher:
            lines.append(f"| {task} | teacher (fp32) | {results['teachers'][task]['accuracy']:.4f} | "
                         f"{teacher['accuracy']:.4f} | | | {teacher['size_mb']:.1f} | torch-fp32 | "
                         f"{teacher['latency_ms_b1']:.2f} | 1.0 | {teacher['throughput_b32']:.0f} |")
        for point in POINTS:
            r = points.get(point)
            if r is None:
                continue
            vs = (f"{r['vs']['mean']:+.4f} ± {r['vs']['std']:.4f} vs {r['vs']['point']} ({r['vs']['positive']}/"
                  f"{r['vs']['n']})") if "vs" in r else ""
            s = r.get("served")
            speed = (f"{s['variant']} | {s['latency_ms_b1']:.3f} | {s['speedup_b1']:.1f} | {s['throughput_b32']:.0f}"
                     if s else "| | |")
            lines.append(f"| {task} | {point} | {r['test']['mean']:.4f} ± {r['test']['std']:.4f} | {r['val']['mean']:.4f} "
                         f"| {vs} | {r['params']:,} | {r['size_mb']:.1f} | {speed} |")
        for goal in points.get("goals", []):
            met = goal["met_by"] or "none"
            misses = "; ".join(f"{p}: {', '.join(m['short'])}" for p, m in goal["misses"].items() if m["short"])
            lines.append(f"\n{task}: {goal['goal']}: met by {met}" + (f" (misses: {misses})" if misses else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
