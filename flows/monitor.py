"""drift-monitor: compare the latest window of the production log with the training data.

A thin shell over `tasks.production.drift.drift` (the same function `kdistill drift` calls): the verdict is
the flow's result, and a markdown artifact (key `drift-verdict`) shows the verdict table and the
path of the Evidently report. Scheduled by `make serve` from params.yaml's `schedule.drift_monitor`.

It does not take the workspace slot of flows/training.py: it only reads the model and the log and
writes its own folder under reports/drift/, and it must not wait hours behind a training run.

Run once without a server: `python -m flows.monitor [-S drift.window_rows=500]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.workspace import Workspace


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _quote(text: str, limit: int = 160) -> str:
    """A logged text as one markdown-safe line: no line breaks, table bars or markup characters, shortened."""
    flat = " ".join(text.split())
    flat = flat if len(flat) <= limit else flat[:limit - 1] + "…"
    return "“" + "".join("\\" + c if c in "\\`*_[]<>|#" else c for c in flat) + "”"


def retrain_detail(verdict: dict) -> str:
    """The retraining run's `detail`: the report folder, the signals that fired and the per-row share."""
    partial = "; partial drift: retraining learns the outlying rows" if verdict.get("partial") else ""
    return (f"{verdict['report_dir']} (fired: {', '.join(verdict['fired'])}; outlier share "
            f"{verdict['outlier_share']:.0%}{partial})")


def verdict_markdown(verdict: dict) -> str:
    """The verdict as a markdown table: one row per signal, whether it fired, its score and threshold."""
    if verdict["status"] != "ok":
        return (f"## Drift monitor: {verdict['status']}\n\n{verdict['window_rows']} rows in the window, "
                f"fewer than drift.min_window = {verdict['min_window']}: no verdict.\n\n"
                f"Folder: `{verdict['report_dir']}`")
    head = "**drift detected**" if verdict["drift_detected"] else "no drift"
    lines = [f"## Drift monitor: {head}", "",
             f"Model version {verdict['model_version']}; window {verdict['window_rows']} rows "
             f"({verdict.get('window_from')} to {verdict.get('window_to')}); reference {verdict['reference_rows']} "
             f"rows. Rule: {verdict['rule']}.", "", "| signal | fired | score | threshold |", "|---|---|---|---|"]
    for name, s in verdict["signals"].items():
        lines.append(f"| {name} | {'yes' if s['fired'] else 'no'} | {_fmt(s['score'])} | {_fmt(s['threshold'])} |")
    lines += ["", f"**{verdict['summary']}.**"]
    examples = verdict["signals"]["outliers"]["examples"][:5]
    if examples:
        lines += ["", "Most outlying texts:", ""] + [f"- {_quote(e['text'])} ({e['distance']:.3f})" for e in examples]
    folder = Path(verdict["report_dir"])
    report, predictions = folder / "report.html", folder / "predictions.html"
    links = f"Report: [{report}]({report.as_uri()}); predicted labels and confidence: [{predictions}]"
    lines += ["", f"{links}({predictions.as_uri()})"]
    started = verdict.get("retrain") or {}
    if started.get("flow_run_name"):
        lines += ["", f"Retraining started: flow run `{started['flow_run_name']}` ({started['flow_run_id']})."]
    elif started.get("skipped"):
        lines += ["", f"No retraining started: {started['skipped']}."]
    return "\n".join(lines)


RETRAIN_DEPLOYMENT = "retrain/retrain"


def trigger_retrain(root: Path, verdict: dict) -> dict:
    """Start the retrain deployment for a drift verdict (`retrain.on_drift`), without waiting for it.

    The retraining run is created as this monitor run's child, so the UI links the two; its
    `detail` parameter is the drift report folder, the signals that fired and the outlier share. After
    a partial drift, the cycle learns from the new segment (tasks.production.drift.drifted_segment).

    Returns:
        {"flow_run_id", "flow_run_name"}, or {"skipped": reason} when on_drift is off or there is
        no retrain deployment (`make serve` registers it).
    """
    from prefect import get_run_logger
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    from tasks.infra.config import load_config

    logger = get_run_logger()
    if not load_config(root / "params.yaml").retrain.on_drift:
        logger.info("drift detected; retrain.on_drift is false: no retraining started")
        return {"skipped": "retrain.on_drift is false"}
    try:
        run = run_deployment(RETRAIN_DEPLOYMENT, parameters={"trigger": "drift", "detail": retrain_detail(verdict)},
                             timeout=0)
    except ObjectNotFound:
        logger.warning("drift detected but there is no %s deployment (start `make serve`); run "
                       "`kdistill retrain --trigger drift --detail '%s'` by hand", RETRAIN_DEPLOYMENT,
                       retrain_detail(verdict))
        return {"skipped": f"no {RETRAIN_DEPLOYMENT} deployment"}
    logger.info("drift detected: started retraining run %s (%s)", run.name, run.id)
    return {"flow_run_id": str(run.id), "flow_run_name": run.name}


@task(name="drift", cache_policy=NO_CACHE)
def run_drift(root: str, overrides: list[str]) -> dict:
    """Run the monitor in the workspace with params.yaml (plus `overrides`, not written back)."""
    from tasks.infra.config import load_config
    from tasks.production.drift import drift
    from tasks.infra.storage import Paths

    return drift(load_config(Path(root) / "params.yaml", overrides), Paths(Path(root)))


@flow(name="drift-monitor", persist_result=True, log_prints=True,
      description="Latest window of data/production/ vs the training data: text, embedding, per-row outlier and "
                  "prediction drift; report in reports/drift/<timestamp>/.")
def drift_monitor(window_rows: int | None = None, window_days: int | None = None) -> dict:
    """Check the latest window for drift.

    Args:
        window_rows: the last N rows of the log (default: drift.window_rows).
        window_days: instead, every row of the last D days (default: drift.window_days).

    Returns:
        The verdict dict of `tasks.production.drift.drift`.
    """
    ws = Workspace.current()
    overrides = [f"drift.window_rows={window_rows}"] if window_rows else []
    overrides += [f"drift.window_days={window_days}"] if window_days else []
    verdict = run_drift(str(ws.root), overrides)
    if verdict.get("drift_detected"):
        verdict["retrain"] = trigger_retrain(ws.root, verdict)
    create_markdown_artifact(key="drift-verdict", markdown=verdict_markdown(verdict),
                             description="drift-monitor verdict")
    print(f"drift monitor: {verdict['status']}, drift_detected={verdict['drift_detected']}, "
          f"fired={verdict.get('fired', [])}" + (f"; {verdict['summary']}" if verdict.get("summary") else ""))
    return verdict


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.monitor`: one run, without a deployment; exit 0 (no drift), 4 (drift), 1 (failed)."""
    parser = argparse.ArgumentParser(prog="python -m flows.monitor", description=__doc__.splitlines()[0])
    parser.add_argument("--window-rows", type=int)
    parser.add_argument("--window-days", type=int)
    args = parser.parse_args(argv)
    state = drift_monitor(args.window_rows, args.window_days, return_state=True)
    if not state.is_completed():
        print(f"error: {state.message}", file=sys.stderr)
        return 1
    return 4 if state.result().get("drift_detected") else 0


if __name__ == "__main__":
    sys.exit(main())
