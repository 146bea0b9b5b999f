"""sweep: the compression sweep as a Prefect flow; each trial a task with its own log.

The same function as `kdistill sweep` (tasks/sweep/run.py `sweep`): trains the students of params.yaml's
`sweep:` section from the workspace's teacher, picks the cheapest within the accuracy budget and
writes its values into params.yaml's `distill:` section, so the next training-pipeline run (or
`dvc repro`) evaluates and promotes it through the usual gates.

- Parameters: the form's fields are `sweep:` keys (derived from the schema, flows/parameters.py);
  empty keeps params.yaml's value. They apply to this run only; `apply: false` leaves params.yaml alone.
- Each trial runs in its own process (`python -m tasks.sweep --spec ...`) inside a task named after
  it, its output streamed into the task's log; `sweep.parallel` trials at a time.
- Across machines: with `sweep.work_pool` set, each trial's task starts a run of the `sweep-trial`
  deployment (`sweep_trial` below, registered on the pool by `python -m flows.serve --work-pool POOL`)
  and waits for it. A worker runs the trial in its own checkout, which must hold the same teacher and
  data (`dvc pull`): the trial's id hashes them, and a worker whose hash differs refuses the trial in
  one line. The record (metrics, val predictions) comes back as the run's `sweep-trial-<id>`
  artifact, so the Prefect server is the only thing shared; the sweep writes it into its own
  models/sweep/<id>/, where resume finds it. Optuna's pruning needs the study's database on this
  machine, so trials on a pool are not pruned.
- Artifacts: the trials' table and the choice (key `sweep`); nothing within budget fails the run with
  the gate's one line (exit code 3 on the CLI).
- One run at a time per workspace (the workspace slot of flows/training.py).

Run once without a server: `python -m flows.sweep` (a temporary local API starts).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.states import Completed, Failed

from flows.parameters import form_section, to_overrides
from flows.reports import publish_failure
from flows.training import workspace_slot
from flows.workspace import Workspace

if TYPE_CHECKING:
    from tasks.sweep.records import Trial

FORM = ("method", "n_trials", "depths", "temperatures", "objective", "max_drop", "max_latency_ms", "parallel", "work_pool")
TRIAL_DEPLOYMENT = "sweep-trial/sweep-trial"  # flow name / deployment name (flows/serve.py DEPLOYMENTS)
SweepParams = form_section("sweep", FORM)


@task(name="trial", cache_policy=NO_CACHE)
def run_trial(root: str, config: dict, spec: dict) -> dict:
    """One trial in its own process here, or (sweep.work_pool) as a run of the sweep-trial deployment;
    its log lines become this task's. Returns its trial.json record (`Trial.to_json`): plain JSON for Prefect."""
    from tasks.infra.config import config_from_dict
    from tasks.infra.storage import Paths
    from tasks.sweep.execution import trial_process

    logger = get_run_logger()
    cfg = config_from_dict(config)
    if cfg.sweep.work_pool:
        return trial_on_pool(Paths(Path(root)), config, spec, logger.info).to_json()
    return trial_process(cfg, Paths(Path(root)), spec, on_line=logger.info).to_json()


def artifact_key(trial: str) -> str:
    return f"sweep-trial-{trial}"


def trial_on_pool(paths, config: dict, spec: dict, log: Callable[[str], None]) -> Trial:
    """Run one trial as a run of the sweep-trial deployment, wait, and keep its record here
    (models/sweep/<id>/trial.json and val_preds.npy, as a local trial leaves them)."""
    import json

    import numpy as np
    from prefect.artifacts import Artifact
    from prefect.deployments import run_deployment

    from tasks.sweep.records import Trial, save_record, sweep_dirs

    run = run_deployment(TRIAL_DEPLOYMENT, parameters={"config": config, "spec": {**spec, "pruning": None}},
                         timeout=None)
    log(f"trial {spec['id']}: flow run {run.name} on work pool {run.work_pool_name}: {run.state.type.value}")
    if not run.state.is_completed():
        raise RuntimeError(f"sweep trial {spec['id']}: its run {run.name} ended {run.state.type.value}: {run.state.message}")
    artifact = Artifact.get(artifact_key(spec["id"]))
    if artifact is None:
        raise RuntimeError(f"sweep trial {spec['id']}: its run {run.name} left no {artifact_key(spec['id'])} artifact")
    record = json.loads(artifact.data.split("```json\n", 1)[1].rsplit("\n```", 1)[0])
    preds = record.pop("val_preds", None)
    trial = Trial.from_json(record, None if preds is None else np.asarray(preds, dtype=np.int64))
    save_record(sweep_dirs(paths)[1] / spec["id"], trial)  # trial.json last: the resume marker
    return trial


@flow(name="sweep-trial", log_prints=True,
      description="One trial of a compression sweep, started by the sweep flow when sweep.work_pool is set; "
                  "runs in this worker's checkout, which must hold the sweep's teacher and data.")
def sweep_trial(config: dict, spec: dict):
    """Train and measure one trial in this workspace; its record becomes the `sweep-trial-<id>` artifact.

    Args:
        config: the sweep's whole config (tasks.infra.config.to_dict).
        spec: the trial: {"id", "params", "pruning": None}.
    """
    import json

    from tasks.infra.config import config_from_dict
    from tasks.sweep.execution import trial_process
    from tasks.sweep.records import load_record
    from tasks.sweep.space import sweep_context, trial_id

    logger = get_run_logger()
    ws = Workspace.current()
    cfg = config_from_dict(config)
    if trial_id(sweep_context(cfg, ws.paths), spec["params"]) != spec["id"]:
        message = (f"sweep trial {spec['id']}: this worker's teacher, data or settings ({ws.root}) are not the "
                   "sweep's; check out the same commit and `dvc pull` its models/teacher and data")
        publish_failure("sweep-trial", message, gate=False)
        return Failed(message=message)
    record = load_record(ws.paths, spec["id"])  # finished here before: not rerun
    if record is None:
        trial_process(cfg, ws.paths, spec, on_line=logger.info)
        record = load_record(ws.paths, spec["id"])
    data = record.to_json()
    if record.done:
        data["val_preds"] = record.val_preds.tolist()
    create_markdown_artifact(key=artifact_key(spec["id"]), markdown=f"```json\n{json.dumps(data)}\n```",
                             description=f"sweep trial {spec['id']}: {record.status}")
    return Completed(message=f"trial {spec['id']}: {record.status}")


def prefect_executor(root: Path, cfg) -> Callable[[list[dict]], Iterator[Trial]]:
    """The sweep's executor: each spec a `trial` task, `sweep.parallel` at a time."""
    from tasks.infra.config import to_dict
    from tasks.sweep.records import Trial

    config, parallel = to_dict(cfg), cfg.sweep.parallel

    def execute(specs: list[dict]) -> Iterator[dict]:
        for start in range(0, len(specs), parallel):
            futures = [run_trial.with_options(task_run_name=f"trial {s['id']}").submit(str(root), config, s)
                       for s in specs[start:start + parallel]]
            for future in as_completed(futures):
                yield Trial.from_json(future.result())

    return execute


def publish_table(root: Path, reason: str) -> None:
    """The trials' table (reports/sweep/table.md) and the choice, as the run's artifact."""
    table = root / "reports" / "sweep" / "table.md"
    body = table.read_text(encoding="utf-8") if table.is_file() else ""
    create_markdown_artifact(key="sweep", markdown=f"## Compression sweep\n\n{reason}\n\n{body}\n\n"
                             f"Plot: `{root / 'reports' / 'sweep' / 'pareto.png'}`", description=reason[:500])


@flow(name="sweep", persist_result=True, log_prints=True,
      description="Compression sweep: students from the one teacher; the cheapest within the accuracy budget is "
                  "written into params.yaml for the next training-pipeline run.")
def sweep(sweep: SweepParams | None = None, apply: bool = True):
    """Run the compression sweep in the workspace.

    Args:
        sweep: overrides of params.yaml's `sweep:` keys for this run (empty: params.yaml's).
        apply: write the chosen trial's values into params.yaml's `distill:` section.
    """
    from tasks.infra.config import load_config
    from tasks.infra.errors import GateError
    from tasks.sweep.run import sweep as run_sweep

    logger = get_run_logger()
    ws = Workspace.current()
    cfg = load_config(ws.params_file, to_overrides({"sweep": sweep}))
    with workspace_slot(ws):
        try:
            summary = run_sweep(cfg, ws.paths, ws.params_file if apply else None,
                                execute=prefect_executor(ws.root, cfg), echo=logger.info)
        except GateError as err:
            publish_table(ws.root, str(err))
            publish_failure("sweep", str(err), gate=True)
            return Failed(message=str(err))
    publish_table(ws.root, summary["reason"])
    return Completed(message=summary["reason"], data=summary)


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.sweep [--no-apply]`: one sweep without a deployment."""
    parser = argparse.ArgumentParser(prog="python -m flows.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--no-apply", action="store_true", help="leave params.yaml unchanged")
    args = parser.parse_args(argv)
    state = sweep(apply=not args.no_apply, return_state=True)
    print(state.message, file=sys.stdout if state.is_completed() else sys.stderr)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
