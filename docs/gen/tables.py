"""One renderer per results file: the table(s) of reports/bench/*.json and reports/sweep/, with the
line that says where each comes from. Numbers are formatted here, never written."""

from __future__ import annotations

import sys

from docs.gen.common import ROOT, cell, load_json, provenance, settings_line, table


def _pm(summary: dict | None, digits: int = 4) -> str:
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}" if summary else "–"


def _bench_module(name: str):
    """A bench script as a module, for its own table function (one home for its table)."""
    if str(ROOT / "bench") not in sys.path:
        sys.path[:0] = [str(ROOT / "bench")]
    return __import__(name)


def sweep(rel: str) -> str:
    """A sweep's trials (reports/sweep/trials.json or a bench copy): the teacher, then each trial, with its
    family (transformer or static, pruned or not); a static trial's shape is its width."""
    from tasks.sweep.space import family

    data = load_json(rel)
    summary, teacher = data["summary"], data["teacher"]
    metric = summary["metric"]
    rows = [["teacher", "", teacher.get("depth", ""), "all", "", f"{teacher['val'][metric]:.4f}", "",
             f"{teacher['test']['accuracy']:.4f}", f"{teacher['param_count']:,}", "torch-fp32",
             f"{teacher['torch_fp32']['latency_ms_b1']:.2f}", f"{teacher['torch_fp32']['throughput_b32']:.0f}", ""]]
    for t in data["trials"]:
        p, choice = t["params"], t.get("choice", {})
        name = f"**{t['id']}**" if t["id"] == summary["chosen"] else t["id"]
        static = p.get("student") == "static"
        shape = f"{p['static_dims']}d" if static else " ".join(map(str, p.get("layer_map") or []))
        head = [name, family(p), "" if static else p.get("student_layers", ""), shape, f"{p['temperature']:g}"]
        if t.get("status") != "done":
            rows.append(head + [t.get("status", ""), "", "", "", "", "", "", choice.get("why", "")])
            continue
        vs = choice.get("vs_teacher", {})
        rows.append(head + [f"{t['val'][metric]:.4f}",
                            f"{vs['diff']:+.4f} ({vs['ci_low']:+.3f}..{vs['ci_high']:+.3f})" if vs else "",
                            f"{t['test']['accuracy']:.4f}", f"{t['param_count']:,}", t["served"]["variant"],
                            f"{t['served']['latency_ms_b1']:.2f}", f"{t['served']['throughput_b32']:.0f}",
                            "within budget" if choice.get("budget") else choice.get("why", "")])
    head = ["trial", "family", "layers", "layer map / width", "T", f"val {metric}", "vs teacher (CI)",
            "test accuracy", "params", "served as", "batch-1 ms", "rows/s at 32", "budget"]
    return "\n\n".join([table(head, rows, "lllllrrrrlrrl"), f"{summary['reason']}.", provenance(rel, data)])


def students(rel: str = "reports/bench/students.json") -> str:
    """bench/students.py: static and pruned students against the teacher, with the goals (its own table)."""
    data = load_json(rel)
    return "\n\n".join([_bench_module("students").table(data), provenance(rel, data)])


def base_teacher(rel: str = "reports/bench/base_teacher.json") -> str:
    """bench/base_teacher.py (issue 22): its tables, what of the full bench is still to run, and every part's command."""
    if not (ROOT / rel).is_file():
        return f"Not run yet: `{rel}` does not exist."
    data, bench = load_json(rel), _bench_module("base_teacher")
    gone = bench.missing(data)
    status = ("Every cell of the full bench has run." if not gone else
              "**Partial**: the full bench (3 tasks × 3 seeds) still lacks " + "; ".join(gone) + ".")
    parts = "Run in parts: " + "; ".join(f"`{c}`" for c in data.get("commands", [])) + "."
    return "\n\n".join([status, bench.table(data), parts, provenance(rel, data)])


def base_teacher_part(rel: str) -> str:
    """A separate part of bench/base_teacher.py with other settings (its own file): its tables, student epochs and command."""
    if not (ROOT / rel).is_file():
        return f"Not run yet: `{rel}` does not exist."
    data = load_json(rel)
    epochs = data.get("settings", {}).get("epochs")
    return "\n\n".join([_bench_module("base_teacher").table(data), f"*Student epochs: {epochs}.*",
                        provenance(rel, data)])


def serving(rel: str = "reports/bench/serving.json") -> str:
    data = load_json(rel)
    rows = [[r["model"], f"**{r['variant']}**" if r["model"] == "student" and r["variant"] == data["chosen"]["variant"]
             else r["variant"], f"{r['latency_ms_b1']:.2f}", f"{r['latency_ms_b1_p99']:.2f}", f"{r['throughput_b32']:.1f}",
             f"{r['size_mb']:.1f}", f"{r['accuracy']:.4f}"] for r in data["rows"]]
    c = data["chosen"]
    verdict = (f"Chosen for these weights: **{c['variant']}**, {c['speedup_b1_vs_teacher_fp32']:.2f}× the fp32 teacher at "
               f"batch 1, {c['accuracy_drop_vs_student_fp32'] * 100:.2f} accuracy points below the fp32 student "
               f"(target met: {str(c['target_met']).lower()}).")
    return "\n\n".join([table(["model", "variant", "batch-1 median ms", "batch-1 p99 ms", "rows/s at batch 32", "size MB",
                               "test accuracy"], rows, "llrrrrr"), verdict, settings_line(data), provenance(rel, data)])


def stage_profile() -> str:
    """The three stage profiles side by side: seconds (share) per part of one epoch."""
    files = [("teacher, AdamW foreach (before)", "reports/bench/stage_profile_teacher_foreach_adamw.json"),
             ("teacher, AdamW fused (now)", "reports/bench/stage_profile_teacher.json"),
             ("distill (now)", "reports/bench/stage_profile_distill.json")]
    runs = [(label, load_json(rel)) for label, rel in files]
    parts = list(runs[0][1]["parts"])
    rows = [[part] + [f"{d['parts'][part]:.2f} s ({d['parts'][part] / d['seconds']:.1%})" for _, d in runs]
            for part in parts]
    rows.append(["total"] + [f"{d['seconds']:.2f} s" for _, d in runs])
    notes = [f"*{label}: `{rel}`; recorded: stage={d['stage']}, overrides={' '.join(d['overrides'])}, "
             f"threads={d['threads']}, root={cell(d['root'])}; command, machine and date not recorded in the JSON.*"
             for (label, d), (_, rel) in zip(runs, files)]
    return "\n\n".join([table(["part"] + [label for label, _ in runs], rows, "lrrr")] + notes)


def precision(rel: str = "reports/bench/precision.json") -> str:
    data = load_json(rel)
    names = {"train-teacher": "teacher training step", "train-student": "student distillation step (cached targets)",
             "cache-build": "cache build (teacher forward)", "predict-student": "student batch prediction",
             "latency-b1": "student at batch 1"}
    rows = [[names.get(k, k), f"{r['fp32_samples_per_s']:.1f}", f"{r['bf16_samples_per_s']:.1f}", f"{r['bf16_speedup']:.2f}×"]
            for k, r in data["results"].items()]
    a = data["agreement"]
    agree = (f"On {a['rows']} test rows, bf16 and fp32 predictions agree on {a['bf16_equals_fp32']:.1%} "
             f"(accuracy {a['accuracy_fp32']:.3f} fp32, {a['accuracy_bf16']:.3f} bf16).")
    return "\n\n".join([table(["path", "fp32 samples/s", "bf16 samples/s", "bf16 speed-up"], rows, "lrrr"), agree,
                        settings_line(data), provenance(rel, data)])


def precision_accuracy(rel: str = "reports/bench/precision_accuracy.json") -> str:
    data = load_json(rel)
    s = data["summary"]
    rows = []
    for seed, r in s["per_seed"].items():
        rows.append([seed, f"{data['runs'][f'fp32/{seed}']['accuracy']:.4f}", f"{data['runs'][f'bf16/{seed}']['accuracy']:.4f}",
                     f"{r['diff']:+.4f} ({r['ci'][0]:+.4f}..{r['ci'][1]:+.4f})", f"{r['agreement']:.2%}"])
    rows.append(["mean ± std", _pm(s["fp32"]["accuracy"]), _pm(s["bf16"]["accuracy"]), _pm(s["bf16_minus_fp32"]), ""])
    return "\n\n".join([table(["seed", "fp32 test accuracy", "bf16 test accuracy", "bf16 − fp32 (interval)", "same answers"],
                              rows, "lrrrr"), f"*Test rows: {data['test_rows']}; threads: {data['threads']}; root: "
                        f"{cell(data['root'])}.*", provenance(rel, data)])


def distill_vs_trainer(rel: str = "reports/bench/distill_vs_trainer.json") -> str:
    data = load_json(rel)
    names = {"trainer-dynamic": "Trainer, dynamic padding + group_by_length (baseline)",
             "trainer-static": "Trainer, static padding", "ours": "kdistill `distill`"}
    rows = [[names.get(k, k), f"{r['train_seconds']:.1f}", f"{r['samples_per_s']:.1f}", f"{r['tokens_per_s']:,.0f}",
             f"{r['time_to_target_s']:.1f}" if r.get("time_to_target_s") else "not reached", f"{r['peak_rss_mb']:,.0f}",
             f"{max(h['val_accuracy'] for h in r['history']):.3f}", f"{r['accuracy']:.3f}", r.get("precision", "")]
            for k, r in data["results"].items()]
    s = data["summary"]
    line = (f"Against the best baseline ({s['best_baseline']}): {s['speedup_samples_per_s']:.2f}× the samples/s, "
            f"{s['speedup_time_to_target']:.2f}× to the target validation accuracy {s['target_val_accuracy']:.3f}; "
            f"{s['speedup_vs_static_samples_per_s']:.2f}× the static-padding Trainer.")
    return "\n\n".join([table(["", "train s", "samples/s", "real tokens/s", "to target s", "peak RSS MB", "best val acc",
                               "test acc", "precision"], rows, "lrrrrrrrl"), line, settings_line(data),
                        provenance(rel, data)])


def scaling(rel: str = "reports/bench/scaling.json") -> str:
    data = load_json(rel)
    rows = [[f"{r['rows']:,} ({r['factor']}×)", f"{r['tokens']:,}", f"{r['cache_seconds']:.1f}", f"{r['train_seconds']:.1f}",
             f"{r['ms_per_row']:.2f}", f"{r['peak_rss_mb']:,.0f}"] for r in data["results"]]
    s = data["summary"]
    line = (f"{s['rows_ratio_8x']:g}× the rows took {s['time_ratio_8x']:.2f}× the time; peak memory "
            f"{s['peak_rss_ratio_8x']:.2f}×. Extra rows: {data['extra_rows_from']}; {data['epochs']} epoch.")
    return "\n\n".join([table(["rows", "real tokens", "cache s", "train s", "ms per row", "peak RSS MB"], rows, "rrrrrr"),
                        line, provenance(rel, data)])


def distill_epochs(rel: str = "reports/bench/distill_epochs.json") -> str:
    """bench/distill_epochs.py: the default's distill stage at each epochs value, paired by seed."""
    if not (ROOT / rel).is_file():
        return f"Not run yet: `{rel}` does not exist."
    data = load_json(rel)
    return "\n\n".join([_bench_module("distill_epochs").table(data), provenance(rel, data)])


def make_run(rel: str = "reports/bench/make_run.json") -> str:
    """bench/make_run.py: `make run` on a fresh clone, per DVC stage."""
    if not (ROOT / rel).is_file():
        return f"Not run yet: `{rel}` does not exist."
    data = load_json(rel)
    return "\n\n".join([_bench_module("make_run").table(data), provenance(rel, data)])


def make_run_line(rel: str = "reports/bench/make_run.json") -> str:
    """README's sentence on how long `make run` takes, from bench/make_run.py's last runs."""
    if not (ROOT / rel).is_file():
        return f"How long `make run` takes is not measured yet (`bench/make_run.py` writes `{rel}`)."
    data = load_json(rel)
    runs, cores = data["runs"], data.get("machine", {}).get("cores", "?")
    said = []
    if runs.get("fresh", {}).get("returncode") == 0:
        r = runs["fresh"]
        said.append(f"on a fresh clone `make run` took {r['wall_seconds'] / 60:.1f} min, "
                    f"{r['before_first_stage_seconds'] / 60:.1f} of them installing the stack")
    if runs.get("reuse", {}).get("returncode") == 0:
        said.append(f"with the stack installed, the pipeline took {runs['reuse']['pipeline_seconds'] / 60:.1f} min")
    if not said:
        return f"`{rel}` holds no finished `make run`."
    commits = sorted({runs[m]["commit"] for m in ("fresh", "reuse") if runs.get(m, {}).get("returncode") == 0})
    return (f"Measured by `bench/make_run.py` on {cores} CPU cores (commit {', '.join(commits)}): " + "; ".join(said)
            + ". Per-stage times: [Pipeline, training and serving](docs/results/pipeline.md).")


def hidden_loss(rel: str = "reports/bench/hidden_loss.json") -> str:
    data = load_json(rel)
    rows = [[k, f"{r['seconds']:.1f}", f"{r['samples_per_s']:.1f}", f"{r['accuracy']:.4f}"] for k, r in data["results"].items()]
    return "\n\n".join([table(["alignment", "seconds (cache + train)", "samples/s", "student test accuracy"], rows, "lrrr"),
                        f"*Recorded: rows={data['rows']}, epochs={data['epochs']}, threads={data['threads']}.*",
                        provenance(rel, data)])


def ablation(rel: str = "reports/bench/ablation.json") -> str:
    data = load_json(rel)
    commands = [p["command"] for p in data.get("parts", []) if p.get("command")]
    extra = "".join(f"\n\n*Part command: `{c}`.*" for c in commands)
    return "\n\n".join([_bench_module("ablation").table(data), provenance(rel, data)]) + extra


def label_efficiency(rel: str = "reports/bench/label_efficiency.json") -> str:
    data = load_json(rel)
    return "\n\n".join([_bench_module("label_efficiency").table(data), provenance(rel, data)])


def zero_shot(rel: str = "reports/bench/zero_shot.json") -> str:
    data = load_json(rel)
    rows = []
    for task, r in data.items():
        sup, zs = r["supervised_teacher"], r["zero_shot_teacher"]
        for metric in ("accuracy", "f1_macro"):
            rows.append([f"{task}, {r['test_rows']:,} test rows: {metric}", f"{sup[metric]:.4f}",
                         f"{zs['uncentred']['test'][metric]:.4f}", f"{zs[metric]:.4f}",
                         f"{r[f'student_mean_{metric}']:.4f} ± {r[f'student_std_{metric}']:.4f}"])
    notes = [f"*{task}: supervised teacher: {r['supervised_teacher'].get('source', 'fine-tuned by the bench')}; "
             f"students: seeds {', '.join(str(s['seed']) for s in r['students'])}, {r['students'][0]['layers']} layers, "
             f"{r['students'][0]['epochs']} epochs; threads {r['threads']}.*" for task, r in data.items()]
    return "\n\n".join([table(["test split", "supervised teacher (all train labels)", "zero-shot teacher, raw",
                               "zero-shot teacher, centred (default)", "student distilled from it"], rows, "lrrrr")]
                       + notes + [provenance(rel, data)])


def drift_calibration(rel: str = "reports/bench/drift_calibration.json") -> str:
    data = load_json(rel)
    fm = data["full_monitor"]
    cols = [("held-out (0%)", fm["false_alarms"])] + [(f"{float(f):.0%}", fm["detection"][f]) for f in fm["detection"]]
    rows = [["windows flagged (full monitor)"] + [f"{c['flagged']} / {c['windows']}" for _, c in cols],
            ["median share past the cut"] + [f"{c['median_scores']['outliers']:.1%}" for _, c in cols],
            ["median text AUC / embedding AUC"] + [f"{c['median_scores']['text']:.2f} / {c['median_scores']['embedding']:.2f}"
                                                    for _, c in cols]]
    sizes = data["outliers_alone"]
    fractions = list(next(iter(sizes.values())))
    size_rows = [[f"{n} rows"] + [f"{sizes[n][f]:.1%}" for f in fractions] for n in sizes]
    fa = fm["false_alarms"]
    timing = data.get("seconds_per_run")
    timed = (f"Median time per monitoring run: {timing['median']:.2f} s over {timing['runs']} runs."
             if timing else "No monitoring run was timed (`--timing 0`: the machine was shared).")
    line = (f"False alarms: {fa['flagged']} of {fa['windows']} held-out windows (one-sided 95% upper bound "
            f"{fa['upper95']:.1%}). {timed} Model: {cell(data['model'])} (test accuracy {data['baseline_accuracy']}); "
            f"windows of {data['window_rows']} rows; {data['reference_rows']:,} reference rows; {data['heldout_rows']} held-out rows.")
    parts = [table(["share of another domain"] + [c for c, _ in cols], rows, "l" + "r" * len(cols)), line]
    by_split = fm.get("false_alarms_by_split")
    if by_split:  # the false-alarm rate of the whole monitor, apart for test and val windows, and each descriptor's
        names = sorted({d for c in by_split.values() for d in c["descriptor_rates"]})
        split_rows = [[split, f"{c['flagged']} / {c['windows']}", f"{c['rate']:.1%}", f"{c['upper95']:.1%}"]
                      + [f"{c['descriptor_rates'][d]:.1%}" for d in names] for split, c in by_split.items()]
        parts += ["False alarms of the whole monitor by split, and how often each descriptor's K-S test fired:",
                  table(["held-out windows of", "flagged", "rate", "95% upper bound"]
                        + [f"`{d}` fired" for d in names], split_rows, "l" + "r" * (3 + len(names)))]
    return "\n\n".join(parts + [
                        "The `outliers` signal alone, share of windows flagged by window size "
                        f"({data['signal_windows']:,} windows per point):",
                        table(["window"] + [f"{float(f):.0%}" for f in fractions], size_rows, "l" + "r" * len(fractions)),
                        provenance(rel, data)])


def drift_log_growth(rel: str = "reports/bench/drift_log_growth.json") -> str:
    data = load_json(rel)
    rows = [[f"{r['factor']}× ({r['parts']:,} parts, {r['log_rows']:,} rows)", f"{r['window_rows_s'] * 1000:.1f}",
             f"{r['window_days_s'] * 1000:.0f}", f"{r['retrain_since_s'] * 1000:.0f}", f"{r['before_full_read_s'] * 1000:,.0f}"]
            for r in data["results"]]
    g = data["growth_first_to_last"]
    line = (f"Growth from the smallest to the largest log: {g['window_rows_s']}× for the row window, "
            f"{g['before_full_read_s']}× for reading every part. {data['note']}.")
    return "\n\n".join([table(["log", "drift, last rows (ms)", "drift, last days (ms)", "retrain pool (ms)",
                               "before: every part (ms)"], rows, "lrrrr"), line, settings_line(data),
                        provenance(rel, data)])


def continual(rel: str = "reports/bench/continual.json") -> str:
    data = load_json(rel)
    rows = []
    for i, c in enumerate(data["cycles"], 1):
        first = c["rows"][0]
        rows.append([f"{i}: {c['domain']} (fired: {', '.join(c['fired'])})", "champion", f"{first['champion_old']:.4f}",
                     f"{first['champion_new']:.4f}", "", "", ""])
        for r in c["rows"]:
            rows.append(["", r["variant"], f"{r['old']:.4f}", f"{r['new']:.4f}", f"{r['forgetting']:+.4f}",
                         f"{r['gain']:+.4f}", ("yes → v" + str(r["version"])) if r["promoted"] else f"no: {r['reason']}"])
    rb = data["rollback"]
    line = (f"Rollback from version {rb['from']} to {rb['to']}: weights identical to the archive: "
            f"{str(rb['weights_identical']).lower()}. Rows per cycle: {data['labelled_per_cycle']:,} labelled, "
            f"{data['stream_per_cycle']:,} unlabelled production texts; {data['seconds']:,.0f} s in all.")
    return "\n\n".join([table(["cycle", "variant", "old test", "new test", "forgetting", "gain", "promoted"], rows,
                              "llrrrrl"), line, f"*Root: {cell(data['root'])}.*", provenance(rel, data)])


def api_load(rel: str = "reports/bench/api_load.json") -> str:
    data = load_json(rel)
    rows = [[f"{data['requests']}", f"{data['concurrency']}", f"{data['errors']}", f"{data['requests_per_s']:.1f}",
             f"{data['p50_ms']:.1f}", f"{data['p99_ms']:.1f}"]]
    return "\n\n".join([table(["requests", "concurrent clients", "errors", "requests/s", "p50 ms", "p99 ms"], rows, "rrrrrr"),
                        f"*Model: {cell(data['model'])}; CPUs: {data['cpu_count']}.*", provenance(rel, data)])


def headline() -> str:
    """README's one results table: the teacher and the student the sweep chose on the embedded default."""
    rel = "reports/sweep/trials.json"
    data = load_json(rel)
    s, t = data["summary"], data["teacher"]
    chosen = next(x for x in data["trials"] if x["id"] == s["chosen"])
    st = s["student"]
    rows = [["layers", f"{t['depth']}", f"{chosen['params']['student_layers']}"],
            ["parameters", f"{t['param_count']:,}", f"{st['params']:,}"],
            ["test accuracy", f"{s['teacher']['test_accuracy']:.4f}", f"{st['test_accuracy']:.4f}"],
            ["served as", "torch-fp32", st["served_variant"]],
            ["batch-1 latency, 1 thread", f"{s['teacher']['latency_ms']:.2f} ms", f"{st['latency_ms']:.2f} ms "
             f"(**{s['speedup_b1']:.1f}× faster**)"]]
    return "\n\n".join([table(["embedded default (movie reviews)", "teacher", "student"], rows, "lrr"),
                        provenance(rel, data)])
