"""retrain and rollback: the continual-learning loop's Prefect flows.

`retrain` runs one cycle of `tasks.lifecycle.retrain.retrain` (gather → teacher first → warm-started student with
replay → old/new evaluation → champion/challenger → DVC version). It starts three ways:
- by the drift-monitor flow when it detects drift (`run_deployment`, linked as that monitor run's
  child in the UI, with `trigger=drift` and the drift report folder as `detail`);
- on the cron of params.yaml's `schedule.retrain` (`trigger=schedule`);
- by hand from the UI (Run → Custom run; `trigger=manual`).

At most one retraining runs at a time: the deployment's concurrency limit of 1 queues further
runs, the workspace slot (flows/training.py) makes it wait for a training-pipeline run, and the
workspace's cycle lock (tasks/lifecycle/registry.py) skips a cycle started while another one, say from the
CLI, holds it (`CycleRunning`), with a log line naming the holder.

Who ran a cycle or a rollback (this flow run) is passed to the task functions as `source=`: setting
it in os.environ would outlive the run in a long-lived worker and mislabel its later runs.

`rollback` makes an earlier promoted version production again (optionally with its data snapshots);
the API picks it up without a restart.

Run once without a server: `python -m flows.retrain [--trigger manual]` or
`python -m flows.retrain --rollback VERSION`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from flows.training import flow_run_source, workspace_slot
from flows.workspace import Workspace


def cycle_markdown(report: dict) -> str:
    """The cycle as a markdown table: each model on the old and the new test split, and the decision."""
    lines = [f"## Retraining cycle, version {report['version']}: {report['status']}", "",
             f"Trigger: {report['trigger']}" + (f" ({report['detail']})" if report.get("detail") else ""), "",
             f"Decision: {report['reason']}", ""]
    from tasks.lifecycle.retrain import score_rows

    if report.get("scores"):
        lines += ["| model | old test | new test |", "|---|---|---|"]
        lines += [f"| {name} | {s['old']:.4f} | {s['new']:.4f} |" for name, s in score_rows(report)]
    if "gain" in report:
        lines += ["", f"Challenger `{report['chosen']}`: gain {report['gain']:+.4f}, forgetting "
                      f"{report['forgetting']:+.4f}, retention {report['retention']:.4f} "
                      f"({report.get('metric', 'accuracy')})."]
    if report.get("comparisons"):
        lines += ["", "| challenger - champion | difference | interval | p | rows | significant |", "|---|---|---|---|---|---|"]
        lines += [f"| {split} test split | {c['diff']:+.4f} | {c['confidence']:.0%}: {c['ci_low']:+.4f} .. "
                  f"{c['ci_high']:+.4f} | {c['p_value']:.3g} | {c['rows']} | "
                  f"{'gain' if c['significant_gain'] else 'loss' if c['significant_loss'] else 'no'} |"
                  for split, c in report["comparisons"].items()]
    if "pseudo_label_effect" in report:
        e = report["pseudo_label_effect"]
        lines.append(f"Pseudo-labelled production text **{e['verdict']}** ({e['new']:+.4f} new, {e['old']:+.4f} old).")
    bad = [b for b in report.get("batches", []) if b["status"] == "quarantined"]
    if bad:
        lines += ["", "Quarantined batches:"] + [f"- `{b['file']}`: {'; '.join(b['errors'])}" for b in bad]
    return "\n".join(lines)


@task(name="retrain-cycle", cache_policy=NO_CACHE)
def run_cycle(root: str, trigger: str, detail: str | None) -> dict:
    """One cycle in the workspace; a cycle already running elsewhere makes this one a logged skip."""
    from tasks.infra.config import load_config
    from tasks.lifecycle.registry import CycleRunning
    from tasks.lifecycle.retrain import retrain
    from tasks.infra.storage import Paths

    cfg = load_config(Path(root) / "params.yaml")
    try:
        return retrain(cfg, Paths(Path(root)), trigger, detail, source=flow_run_source())
    except CycleRunning as err:
        get_run_logger().warning("%s", err)
        return {"status": "skipped", "promoted": False, "reason": str(err), "version": None, "trigger": trigger}


@flow(name="retrain", persist_result=True, log_prints=True,
      description="One continual-learning cycle: new labelled batches + production text, teacher first, warm-started "
                  "student with replay, champion/challenger on old and new test data, DVC version.")
def retrain(trigger: str = "manual", detail: str | None = None):
    """Run one retraining cycle.

    Args:
        trigger: manual | drift | schedule (recorded in the registry).
        detail: what caused it, e.g. the drift report folder (the monitor fills it in).
    """
    ws = Workspace.current()
    with workspace_slot(ws):
        report = run_cycle(str(ws.root), trigger, detail)
    if report["status"] == "skipped":
        return Completed(message=report["reason"], data=report)
    if "scores" in report:
        create_markdown_artifact(key="retrain-cycle", markdown=cycle_markdown(report),
                                 description=f"retraining cycle, version {report['version']}")
    message = (f"version {report['version']} {report['status']}: {report['reason']}" if report["version"] is not None
               else f"{report['status']}: {report['reason']}")
    get_run_logger().info("%s", message)
    return Completed(message=message, data=report)


@task(name="rollback", cache_policy=NO_CACHE)
def run_rollback(root: str, version: int, data: bool) -> dict:
    from tasks.infra.config import load_config
    from tasks.lifecycle.registry import rollback as do_rollback
    from tasks.infra.storage import Paths

    return do_rollback(load_config(Path(root) / "params.yaml"), Paths(Path(root)), version, data,
                       source=flow_run_source())


@flow(name="rollback", persist_result=True,
      description="Make an earlier promoted version the production model again (and optionally restore its data).")
def rollback(version: int, data: bool = False):
    """Roll production back to registry version `version`."""
    ws = Workspace.current()
    with workspace_slot(ws):
        result = run_rollback(str(ws.root), version, data)
    message = (f"production is version {version} again (was {result['previous']})" if result["changed"]
               else f"version {version} is already production: nothing changed")
    get_run_logger().info("%s", message)
    return Completed(message=message, data=result)


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.retrain`: one retraining (or `--rollback N`) without a deployment."""
    parser = argparse.ArgumentParser(prog="python -m flows.retrain", description=__doc__.splitlines()[0])
    parser.add_argument("--trigger", default="manual", choices=["manual", "drift", "schedule"])
    parser.add_argument("--detail")
    parser.add_argument("--rollback", type=int, metavar="VERSION")
    parser.add_argument("--data", action="store_true", help="with --rollback: restore the data snapshots too")
    args = parser.parse_args(argv)
    state = (rollback(args.rollback, args.data, return_state=True) if args.rollback is not None
             else retrain(args.trigger, args.detail, return_state=True))
    print(state.message, file=sys.stderr if not state.is_completed() else sys.stdout)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
