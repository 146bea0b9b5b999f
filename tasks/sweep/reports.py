"""reports/sweep/: trials.json, trials.csv (a DVC plot), metrics.json (DVC metrics), table.md and pareto.png;
and the CLI's line per finished trial."""

from __future__ import annotations

from pathlib import Path

from tasks.infra.config import Config, to_dict
from tasks.infra.provenance import stamp
from tasks.infra.storage import Paths, write_json, write_text
from tasks.sweep.choice import pareto_front
from tasks.sweep.records import Trial, sweep_dirs
from tasks.sweep.space import FAMILIES, describe_params, family


def trial_rows(records: list[Trial], choice: dict, metric: str) -> list[dict]:
    """One flat row per trial: what table.md, trials.csv (a DVC plot) and trials.json list."""
    front = pareto_front(records, metric)
    rows = []
    for r in records:
        p, info = r.params, choice["trials"][r.id]
        row = {"trial": r.id, "status": r.status, "family": family(p), "depth": p.get("student_layers", 0),
               "layer_map": " ".join(map(str, p.get("layer_map") or [])), "static_dims": p.get("static_dims"),
               "temperature": p["temperature"], "alpha_kd": p["alpha_kd"], "alpha_ce": p["alpha_ce"],
               "lr": p.get("lr"), "epochs": p.get("epochs")}
        if r.status == "done":
            vt = info["vs_teacher"]
            row.update({"val_score": r.val[metric], f"val_{metric}": r.val[metric], "vs_teacher": vt["diff"], "vs_teacher_ci_low": vt["ci_low"],
                        "vs_teacher_ci_high": vt["ci_high"], "test_accuracy": r.test["accuracy"],
                        "test_f1_macro": r.test["f1_macro"], "params": r.param_count,
                        "size_mb": r.size_mb, "fp32_latency_ms": r.torch_fp32["latency_ms_b1"],
                        "fp32_throughput_b32": r.torch_fp32["throughput_b32"], "served_variant": r.served["variant"],
                        "latency_ms": r.served["latency_ms_b1"], "throughput_b32": r.served["throughput_b32"],
                        "served_size_mb": r.served["size_mb"]})
        row.update(budget=info["why"], pareto=r.id in front, contender=info["contender"],
                   chosen=r.id == choice["chosen"], seconds=r.seconds)
        rows.append(row)
    return rows


def table_markdown(rows: list[dict], teacher: dict, metric: str, choice: dict) -> str:
    """reports/sweep/table.md: the teacher, then every trial; P marks the Pareto front, ** the choice."""
    t = teacher
    lines = [f"| trial | family | depth | map / dims | T | kd/ce | lr | epochs | val {metric} | vs teacher (CI) | "
             "test acc | test F1 | params | MB | fp32 b1 ms | served | b1 ms | b32 rows/s | budget |",
             "|" + "---|" * 19,
             f"| teacher | | {t.get('depth', '')} | all | | | | | {t['val'][metric]:.4f} | | {t['test']['accuracy']:.4f} | "
             f"{t['test']['f1_macro']:.4f} | {t['param_count']:,} | {t['size_mb']:.1f} | {t['torch_fp32']['latency_ms_b1']:.2f} | "
             f"torch-fp32 | {t['torch_fp32']['latency_ms_b1']:.2f} | {t['torch_fp32']['throughput_b32']:.0f} | |"]
    for r in rows:
        name = f"**{r['trial']}**" if r["chosen"] else r["trial"]
        name += " P" if r["pareto"] else ""
        shape = f"{r['static_dims']}d" if r["static_dims"] else r["layer_map"]
        lr = f"{r['lr']:.0e}" if r["lr"] is not None else "static"
        head = (f"| {name} | {r['family']} | {r['depth']} | {shape} | {r['temperature']:g} | "
                f"{r['alpha_kd']:g}/{r['alpha_ce']:g} | {lr} | {r['epochs'] if r['epochs'] is not None else ''} |")
        if r["status"] != "done":
            lines.append(head + f" {r['status']} |" + " |" * 10 + f" {r['budget']} |")
            continue
        lines.append(head + f" {r[f'val_{metric}']:.4f} | {r['vs_teacher']:+.4f} ({r['vs_teacher_ci_low']:+.3f}.."
                     f"{r['vs_teacher_ci_high']:+.3f}) | {r['test_accuracy']:.4f} | {r['test_f1_macro']:.4f} | "
                     f"{r['params']:,} | {r['size_mb']:.1f} | {r['fp32_latency_ms']:.2f} | {r['served_variant']} | "
                     f"{r['latency_ms']:.2f} | {r['throughput_b32']:.0f} | {r['budget']} |")
    return "\n".join(lines + ["", f"{choice['reason']}.", ""])


def plot_front(path: Path, rows: list[dict], teacher: dict, metric: str, max_drop: float) -> None:
    """reports/sweep/pareto.png: val score against served batch-1 latency, the front joined, the choice ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "done"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = dict(zip(FAMILIES, (("o", "tab:blue"), ("^", "tab:cyan"), ("s", "tab:green"), ("D", "tab:olive"))))
    for name, (marker, colour) in styles.items():  # one marker per family, each in the legend
        mine = [r for r in done if r["family"] == name]
        if mine:
            ax.scatter([r["latency_ms"] for r in mine], [r[f"val_{metric}"] for r in mine], marker=marker, c=colour,
                       label=name)
    for r in done:
        shape = (f"{r['static_dims']}d" if r["static_dims"] else f"{r['depth']}L") + ("p" if "pruned" in r["family"] else "")
        ax.annotate(f"{shape} T{r['temperature']:g}", (r["latency_ms"], r[f"val_{metric}"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    front = sorted((r for r in done if r["pareto"]), key=lambda r: r["latency_ms"])
    ax.plot([r["latency_ms"] for r in front], [r[f"val_{metric}"] for r in front], "--s", c="tab:orange", mfc="none",
            label="Pareto front")
    tv, tl = teacher["val"][metric], teacher["torch_fp32"]["latency_ms_b1"]
    ax.scatter([tl], [tv], marker="*", s=160, c="black", label="teacher (torch-fp32)")
    ax.axhline(tv - max_drop, ls=":", c="gray", label=f"teacher - max_drop ({max_drop:g})")
    chosen = [r for r in done if r["chosen"]]
    if chosen:
        ax.scatter([chosen[0]["latency_ms"]], [chosen[0][f"val_{metric}"]], s=260, facecolors="none",
                   edgecolors="red", linewidths=2, label=f"chosen ({chosen[0]['trial']})")
    ax.set_xscale("log")  # static students sit one to two orders of magnitude left of the transformers
    ax.set_xlabel("batch-1 latency, served variant (ms, log scale)")
    ax.set_ylabel(f"val {metric}")
    ax.set_title("Compression sweep: accuracy against latency")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _from_cli() -> bool:
    import sys

    return Path(sys.argv[0]).name in ("kdistill", "cli.py") if sys.argv else False


def write_reports(cfg: Config, paths: Paths, records: list[Trial], teacher: dict, choice: dict,
                  seconds: float) -> dict:
    """reports/sweep/: trials.json, trials.csv (DVC plot), metrics.json (DVC metrics), table.md, pareto.png.

    Returns:
        The summary written to metrics.json.
    """
    import pandas as pd

    out, metric = sweep_dirs(paths)[0], cfg.evaluate.metric
    rows = trial_rows(records, choice, metric)
    chosen = next((r for r in rows if r["chosen"]), None)
    summary = {"chosen": choice["chosen"], "reason": choice["reason"], "objective": cfg.sweep.objective,
               "metric": metric, "trials": len(records), "within_budget": sum(1 for i in choice["trials"].values()
                                                                            if i["budget"]),
               "seconds": seconds, "teacher": {"val": teacher["val"][metric], "test_accuracy": teacher["test"]["accuracy"],
                                               "latency_ms": teacher["torch_fp32"]["latency_ms_b1"]}}
    if chosen is not None:
        summary["student"] = {k: chosen[k] for k in (f"val_{metric}", "test_accuracy", "test_f1_macro", "params",
                                                     "size_mb", "served_variant", "latency_ms", "fp32_latency_ms")}
        summary["speedup_b1"] = round(teacher["torch_fp32"]["latency_ms_b1"] / max(chosen["latency_ms"], 1e-9), 2)
    clean = [r.to_json() | {"choice": choice["trials"][r.id]} for r in records]
    # what the docs print under the table: the command (`kdistill sweep ...`, or the flow's), machine and date
    made = stamp({"space": to_dict(cfg)["sweep"]}, paths.root.resolve(), "kdistill" if _from_cli() else None)
    write_json(out / "trials.json", {"summary": summary, "teacher": {k: v for k, v in teacher.items() if k != "context"},
                                     "trials": clean, **made})
    write_json(out / "metrics.json", summary)
    write_text(out / "trials.csv", pd.DataFrame(rows).to_csv(index=False))
    write_text(out / "table.md", table_markdown(rows, teacher, metric, choice))
    plot_front(out / "pareto.png", rows, teacher, metric, cfg.sweep.max_drop)
    return summary


def trial_line(n: int, total: int, record: Trial, metric: str) -> str:
    """The CLI's line for a finished trial."""
    head = f"trial {n}/{total} {record.id} {describe_params(record.params)}:"
    if record.status == "pruned":
        return f"{head} {record.reason}, {record.seconds:.0f} s"
    s, f = record.served, record.torch_fp32
    return (f"{head} val {metric} {record.val[metric]:.4f}, {s['variant']} {s['latency_ms_b1']:.2f} ms "
            f"(torch-fp32 {f['latency_ms_b1']:.2f} ms), {record.seconds:.0f} s")
