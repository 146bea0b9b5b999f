"""evaluate: the teacher against the final student on the test split — quality, size and CPU
speed — written to reports/metrics.json, with the `evaluate.min_retention` gate."""

from __future__ import annotations

import logging
import statistics
import time

import numpy as np
import torch

from tasks.infra.splits import load_labels, load_split
from tasks.models.training import encode_split
from tasks.infra.config import Config
from tasks.core.data import Collator, TokenDataset
from tasks.core.loop import resolve_device
from tasks.core.predict import predict_logits
from tasks.infra.errors import DataError, GateError
from tasks.infra.metrics import classification_metrics, write_confusion_csv
from tasks.models.loading import count_params, load_classifier, load_tokenizer
from tasks.infra.storage import Paths, dir_size_mb, read_json, stage_log, write_json

log = logging.getLogger("kd")


@torch.inference_mode()
def measure_speed(model: torch.nn.Module, data: TokenDataset, pad_id: int, threads: int, runs: int,
                  warmup: int, batches: int, batch_size: int = 32) -> dict[str, float]:
    """CPU latency at batch 1 and throughput at batch 32, at a fixed thread count.

    The inputs are already tokenised test rows, taken in order, so teacher and student see the
    same ones; tokenisation is excluded (it is the same for both).

    Returns:
        latency_ms_b1 (median), latency_ms_b1_p99, throughput_b32 (rows/s), threads.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    model = model.cpu().eval()
    collate = Collator(pad_id)
    try:
        singles = [collate([data[i % len(data)]]) for i in range(runs + warmup)]
        times = []
        for i, batch in enumerate(singles):
            start = time.perf_counter()
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
        groups = [collate([data[(b * batch_size + j) % len(data)] for j in range(batch_size)])
                  for b in range(batches + 1)]
        model(input_ids=groups[0]["input_ids"], attention_mask=groups[0]["attention_mask"])  # warm-up
        start = time.perf_counter()
        for batch in groups[1:]:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        throughput = batches * batch_size / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    times.sort()
    return {"latency_ms_b1": round(statistics.median(times), 3),
            "latency_ms_b1_p99": round(times[min(len(times) - 1, int(0.99 * len(times)))], 3),
            "throughput_b32": round(throughput, 1), "threads": threads}


def evaluate(cfg: Config, paths: Paths) -> dict:
    """Run the evaluate stage. Writes reports/metrics.json and confusion-matrix plot data.

    Raises:
        GateError: student / teacher score (in `evaluate.metric`) below `evaluate.min_retention`.
    """
    ec = cfg.evaluate
    with stage_log("evaluate") as info:
        names = load_labels(paths)
        test = load_split(paths, "test")
        device = resolve_device(cfg.base.device)
        results, preds = {}, {}
        for role, folder in (("teacher", paths.teacher), ("student", paths.student)):
            tokenizer = load_tokenizer(str(folder), key=f"models/{folder.name}")
            model, _ = load_classifier(str(folder), names, key=f"models/{folder.name}")
            data = encode_split(tokenizer, test, cfg.base.max_length)
            logits = predict_logits(model.to(device), data, tokenizer.pad_token_id, 128, device, progress=f"{role} test",
                                    precision=cfg.base.precision)
            preds[role] = logits.argmax(-1)
            quality = classification_metrics(data.labels, preds[role], names)
            speed = measure_speed(model, data, tokenizer.pad_token_id, ec.threads, ec.latency_runs,
                                  ec.warmup_runs, ec.throughput_batches)
            results[role] = {"accuracy": quality["accuracy"], "f1_macro": quality["f1_macro"],
                             "params": count_params(model), "size_mb": round(dir_size_mb(folder), 2),
                             "latency_ms_b1": speed["latency_ms_b1"], "throughput_b32": speed["throughput_b32"],
                             "latency_ms_b1_p99": speed["latency_ms_b1_p99"],
                             "per_class": quality["per_class"], "confusion": quality["confusion"]}
            write_confusion_csv(paths.plots / f"confusion_{role}.csv", data.labels, preds[role], names)
        t, s = results["teacher"], results["student"]
        metric = ec.metric
        metrics = {
            "teacher": t, "student": s, "metric": metric,
            "retention": round(s[metric] / max(t[metric], 1e-12), 4),
            "agreement": round(float(np.mean(preds["teacher"] == preds["student"])), 4),
            "speedup_b1": round(t["latency_ms_b1"] / max(s["latency_ms_b1"], 1e-12), 3),
            "size_ratio": round(s["size_mb"] / max(t["size_mb"], 1e-12), 4),
            "threads": ec.threads, "test_rows": len(test),
        }
        write_json(paths.reports / "metrics.json", metrics)
        info["read"] += [paths.teacher, paths.student, paths.split("test")]
        info["wrote"].append(paths.reports / "metrics.json")
        log.info("[evaluate] teacher %s %.4f, student %.4f, retention %.4f, agreement %.4f, "
                 "b1 latency %.2f → %.2f ms (%.2f×)", metric, t[metric], s[metric], metrics["retention"],
                 metrics["agreement"], t["latency_ms_b1"], s["latency_ms_b1"], metrics["speedup_b1"])
    if metrics["retention"] < ec.min_retention:
        raise GateError(f"evaluate gate: retention {metrics['retention']:.4f} (student {metric} {s[metric]:.4f} / "
                        f"teacher {t[metric]:.4f}) < evaluate.min_retention {ec.min_retention}")
    return metrics


def format_number(value: float | None, digits: int = 4) -> str:
    """A metric for a table: thousands separators for ints, fixed decimals for floats, – for none."""
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def metrics_table(metrics: dict) -> str:
    """Teacher vs student on the test split (reports/metrics.json) as a markdown table."""
    t, s = metrics["teacher"], metrics["student"]
    rows = [("accuracy", "accuracy", 4), ("macro-F1", "f1_macro", 4), ("parameters", "params", 0),
            ("size (MB)", "size_mb", 1), ("latency, batch 1 (ms)", "latency_ms_b1", 2),
            ("throughput, batch 32 (rows/s)", "throughput_b32", 1)]
    lines = ["## Teacher vs student (test split)", "", "| metric | teacher | student | student / teacher |",
             "|---|---:|---:|---:|"]
    for label, key, digits in rows:
        a, b = t.get(key), s.get(key)
        ratio = f"{b / a:.3f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else "–"
        lines.append(f"| {label} | {format_number(a, digits)} | {format_number(b, digits)} | {ratio} |")
    lines += ["", (f"Retention ({metrics.get('metric', 'accuracy')}) **{format_number(metrics.get('retention'))}**, agreement {format_number(metrics.get('agreement'))}, "
                   f"speed-up {format_number(metrics.get('speedup_b1'), 2)}× at batch 1 ({metrics.get('threads')} thread(s)), "
                   f"{metrics.get('test_rows')} test rows.")]
    return "\n".join(lines)


def print_summary(cfg: Config, paths: Paths) -> None:
    """Print the teacher-vs-student table of the last evaluate run (`kdistill summary`)."""
    report = paths.reports / "metrics.json"
    if not report.is_file():
        raise DataError(f"{report}: not found; run the pipeline first (make run)")
    print(metrics_table(read_json(report)))
