"""Register the project's Prefect deployments and run them: `make serve` (`python -m flows.serve`).

`DEPLOYMENTS` is the one place deployments are declared: the monitoring and retraining flows add
one line each. Cron schedules come from params.yaml's `schedule` section (null: by hand only);
restart `make serve` after changing one.

- `python -m flows.serve` serves them from this process (long-running; runs execute here).
- `python -m flows.serve --work-pool POOL [--workspace DIR]` registers the same deployments on a
  work pool instead, for workers on other machines (`prefect worker start --pool POOL` on each,
  inside a kdistill checkout with its venv); see the README.

Every deployment but sweep-trial has a concurrency limit of 1 (later runs queue), on top of the
per-workspace slot each flow holds (flows/training.py); sweep-trial runs are a sweep's trials, as
many at once as the sweep sends out (sweep.parallel), one process each on whichever worker takes it.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from pathlib import Path

from prefect import Flow, deploy, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType

from flows.workspace import ROOT_ENV, Workspace
from tasks.infra.config import load_config


@dataclass(frozen=True)
class Spec:
    """One deployment: which flow, under which name, on which params.yaml schedule."""

    flow: str  # "module:function", imported when the deployments are built
    name: str  # the deployment's name: Deployments → NAME in the UI
    schedule: str | None  # key in params.yaml's `schedule` section holding its cron; None: by hand only
    description: str = ""
    schedule_parameters: tuple[tuple[str, str], ...] = ()  # the parameters of a scheduled run
    concurrency: int | None = 1  # runs at once (later ones queue); None: no limit


DEPLOYMENTS = [
    Spec("flows.training:training_pipeline", "training-pipeline", "training_pipeline",
         "The whole pipeline, each stage through DVC; Run → Custom run to change parameters."),
    Spec("flows.monitor:drift_monitor", "drift-monitor", "drift_monitor",
         "The latest window of the production log vs the training data; Evidently report and verdict."),
    Spec("flows.retrain:retrain", "retrain", "retrain",
         "One continual-learning cycle; started by drift-monitor on drift, on its schedule, or by hand.",
         (("trigger", "schedule"),)),
    Spec("flows.retrain:rollback", "rollback", None,
         "Make an earlier promoted version production again: Run → Custom run, set `version`."),
    Spec("flows.sweep:sweep", "sweep", None,
         "Compression sweep: students from the one teacher, the cheapest within the accuracy budget written into "
         "params.yaml; Run → Custom run to set the search."),
    Spec("flows.sweep:sweep_trial", "sweep-trial", None,
         "One trial of a sweep, started by the sweep flow when sweep.work_pool is set; not meant to be run by hand.",
         concurrency=None),
]


def load_flow(spec: Spec) -> Flow:
    """The flow object a spec names."""
    module, name = spec.flow.split(":")
    return getattr(importlib.import_module(module), name)


def build_deployments(root: Path, work_pool: str | None = None, workspace: str | None = None) -> list[RunnerDeployment]:
    """The deployments of `DEPLOYMENTS`, with their schedules from root/params.yaml.

    Args:
        root: the workspace whose params.yaml holds the schedules.
        work_pool: register for this work pool instead of serving from this process.
        workspace: with a work pool, the checkout on the worker machines the runs use (default: root).

    Returns:
        Deployments ready for `serve` or `deploy`.
    """
    schedules = load_config(root / "params.yaml").schedule
    out = []
    for spec in DEPLOYMENTS:
        cron = getattr(schedules, spec.schedule) if spec.schedule else None
        kwargs = {}
        if work_pool:
            where = str(workspace or root)
            kwargs = {"work_pool_name": work_pool, "job_variables": {"working_dir": where, "env": {ROOT_ENV: where}}}
        out.append(load_flow(spec).to_deployment(
            name=spec.name, description=spec.description, tags=["kdistill"],
            schedules=[Cron(cron, timezone=schedules.timezone, parameters=dict(spec.schedule_parameters) or None)]
            if cron else None,
            concurrency_limit=ConcurrencyLimitConfig(limit=spec.concurrency, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
            if spec.concurrency else None,
            # By module path: a worker imports the flow from its installed checkout, no code upload.
            entrypoint_type=EntrypointType.MODULE_PATH, **kwargs))
    return out


def main(argv: list[str] | None = None) -> None:
    """Serve the deployments, or register them on a work pool."""
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--work-pool", help="register on this work pool instead of serving here")
    parser.add_argument("--workspace", help="with --work-pool: the checkout path on the worker machines")
    args = parser.parse_args(argv)
    root = Workspace.current().root
    deployments = build_deployments(root, args.work_pool, args.workspace)
    if args.work_pool:
        deploy(*deployments, work_pool_name=args.work_pool, build=False, push=False, ignore_warnings=True)
    else:
        serve(*deployments)


if __name__ == "__main__":
    main()
