"""The choice rule of the package docstring: the budget, the winner, its tie-breaks, and the Pareto front."""

from __future__ import annotations

import numpy as np

from tasks.infra.config import Config
from tasks.infra.stats import paired_comparison
from tasks.sweep.records import Trial
from tasks.sweep.space import describe_params

COST_TIE = 0.05  # costs within 5% of the lowest tie: batch-1 medians of one model shape differ by that much run to run


def within_drop(diff: float, max_drop: float) -> bool:
    """The accuracy budget, for the choice and the Optuna objective alike: a trial's val score minus the
    teacher's (the point estimate) is at most sweep.max_drop below zero."""
    return diff >= -max_drop - 1e-12


def _cost(record: Trial, kind: str) -> float:
    """latency: served batch-1 ms; size: served MB."""
    return float(record.served["latency_ms_b1" if kind == "latency" else "size_mb"])


def choose(records: list[Trial], teacher_preds: np.ndarray, labels: np.ndarray, cfg: Config,
           num_classes: int) -> dict:
    """The choice of the module docstring.

    Args:
        records: finished trials; a done one carries `val_preds` [N].
        teacher_preds: the teacher's val predictions [N].
        labels: the val labels [N].
        cfg: sweep.objective, sweep.max_drop, sweep.max_latency_ms; evaluate.metric, evaluate.confidence.
        num_classes: C, for macro-F1.

    Returns:
        {"chosen": id or None, "best": id or None (the most accurate in budget), "trials": {id: {"budget",
        "why", "vs_teacher", "vs_best", "contender"}}, "reason": one line}. A contender is a trial the
        winner was picked from: every in-budget trial for latency and size, those not significantly
        below the best for accuracy.
    """
    sc, metric, conf = cfg.sweep, cfg.evaluate.metric, cfg.evaluate.confidence

    def compare(a: np.ndarray, b: np.ndarray):
        return paired_comparison(labels, a, b, metric, num_classes, conf, seed=cfg.base.seed)

    info: dict[str, dict] = {}
    within = []
    for r in records:
        if r.status != "done":
            info[r.id] = {"budget": False, "why": r.status, "contender": False}
            continue
        vs_teacher = compare(teacher_preds, r.val_preds)
        why = None
        if not within_drop(vs_teacher.diff, sc.max_drop):
            why = f"{-vs_teacher.diff:.4f} below the teacher > max_drop {sc.max_drop:g}"
        elif sc.max_latency_ms is not None and r.served["latency_ms_b1"] > sc.max_latency_ms:
            why = f"latency {r.served['latency_ms_b1']:.2f} ms > {sc.max_latency_ms:g} ms"
        info[r.id] = {"budget": why is None, "why": why or "within budget", "vs_teacher": vs_teacher.to_dict(),
                         "contender": False}
        if why is None:
            within.append(r)
    if not within:
        return {"chosen": None, "best": None, "trials": info,
                "reason": f"no trial within budget: every one is out ({_budget_text(cfg)})"}

    def tie_break(r: Trial) -> tuple:
        return -r.val[metric], r.params["student_layers"], r.id

    best = min(within, key=tie_break)
    contenders = []
    for r in within:
        vs_best = compare(best.val_preds, r.val_preds)
        contender = sc.objective != "accuracy" or not vs_best.significant_loss
        info[r.id].update(vs_best=vs_best.to_dict(), contender=contender)
        if contender:
            contenders.append(r)
    cost = "size" if sc.objective == "size" else "latency"
    lowest = min(_cost(r, cost) for r in contenders)
    chosen = min((r for r in contenders if _cost(r, cost) <= lowest * (1 + COST_TIE)), key=tie_break)
    if sc.objective == "accuracy":
        why = (f"the fastest of {len(contenders)} trial(s) not significantly below the most accurate "
               f"({best.id}, val {metric} {best.val[metric]:.4f})")
    else:
        why = f"the {_objective_text(sc.objective)} of {len(contenders)} trial(s) within budget"
    reason = (f"chosen: trial {chosen.id} ({describe_params(chosen.params)}), val {metric} "
              f"{chosen.val[metric]:.4f}: {why}; {len(within)} of {len(records)} within budget ({_budget_text(cfg)})")
    return {"chosen": chosen.id, "best": best.id, "trials": info, "reason": reason}


def _objective_text(objective: str) -> str:
    return {"latency": "fastest", "size": "smallest", "accuracy": "most accurate"}[objective]


def _budget_text(cfg: Config) -> str:
    sc = cfg.sweep
    text = f"val {cfg.evaluate.metric} at most {sc.max_drop:g} below the teacher's"
    return text + (f", batch-1 latency <= {sc.max_latency_ms:g} ms" if sc.max_latency_ms is not None else "")


def pareto_front(records: list[Trial], metric: str) -> set[str]:
    """Done trials no other one beats on both served latency (lower) and val score (higher)."""
    done = [r for r in records if r.status == "done"]

    def point(r: Trial) -> tuple[float, float]:
        return r.served["latency_ms_b1"], r.val[metric]

    return {r.id for r in done if not any(
        point(o)[0] <= point(r)[0] and point(o)[1] >= point(r)[1] and point(o) != point(r) for o in done)}
