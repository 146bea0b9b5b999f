"""training-pipeline: ingest → validate → teacher → distill → finetune → evaluate → promote.

Each stage is a Prefect task that runs the stage through DVC (`dvc repro --single-item STAGE`,
whose `cmd` is `python -m tasks.cli STAGE`, the same function `dvc repro` and the CLI call), so a
Prefect run and `dvc repro` agree: unchanged stages are skipped, outputs land in the DVC cache and
dvc.lock is updated (see flows/workspace.py for why, and for how UI parameters reach params.yaml).

- Parameters are typed overrides of params.yaml sections (flows/parameters.py); empty = params.yaml.
- A failed gate fails the task and the run with the gate's own one-line message, published as an
  artifact; it is never retried. Retries are only for failures a retry can fix: DVC's repository
  lock held by another DVC command, and ingest's reads (hub downloads).
- No timeouts: a long training run is legitimate.
- One run at a time per workspace: a Prefect global concurrency limit named after the workspace
  (limit 1, created on first use) is held for the whole run, whichever deployment or script
  started it; a second run waits for the slot.

Run once without a server: `python -m flows.training -S distill.temperature=4` (a temporary local
API starts); with `make ui` running and PREFECT_API_URL set, the run shows in the UI.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from flows.parameters import (
    BaseParams,
    DistillParams,
    EvaluateParams,
    FinetuneParams,
    IngestParams,
    PromoteParams,
    TeacherParams,
    check_overrides,
    to_overrides,
)
from flows.reports import PUBLISHERS, publish_failure, publish_validation
from flows.workspace import GateFailed, StageFailed, Workspace, describe, run_dvc_stage
from tasks.infra.params_file import apply_overrides
from tasks.infra.registry_view import SOURCE_ENV
from tasks.infra.storage import Paths, read_json

PIPELINE = ("ingest", "validate", "teacher", "distill", "finetune", "evaluate", "promote")


def retry_only_transient(task, task_run, state) -> bool:
    """Retry a stage only when its failure is I/O a second try can fix; never a gate or a user error."""
    return isinstance(state.data, StageFailed) and state.data.transient


@contextlib.contextmanager
def workspace_slot(ws: Workspace, timeout_seconds: float | None = None) -> Iterator[None]:
    """Hold the workspace's concurrency slot (a global limit of 1, created if missing).

    Args:
        ws: the workspace.
        timeout_seconds: how long to wait for the slot; None waits as long as the other run takes.

    Raises:
        TimeoutError: the slot did not free up in time.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(ws.slot_name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run created it first
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=ws.slot_name, limit=1))
    _logger().info("workspace %s: taking concurrency slot %s (one run at a time)", ws.root, ws.slot_name)
    # The lease is renewed in the background; a failed renewal must not kill a long training run.
    with concurrency(ws.slot_name, occupy=1, timeout_seconds=timeout_seconds, strict=True,
                     raise_on_lease_renewal_failure=False):
        yield


def _logger():
    import logging

    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("kd")


def flow_run_source() -> str:
    """Who asked for a registry change, as the registry records it: this Prefect flow run (name and id)."""
    name = runtime.flow_run.name
    return f"prefect flow run {name} ({runtime.flow_run.id})" if name else "prefect"


@task(name="params", task_run_name="params", cache_policy=NO_CACHE)
def apply_params(root: str, overrides: dict) -> list[list]:
    """Write the run's parameter overrides into params.yaml (validated first); log each change."""
    logger = get_run_logger()
    changes = apply_overrides(Path(root) / "params.yaml", overrides)
    for key, old, new in changes:
        logger.info("params.yaml: %s: %r -> %r", key, old, new)
    if not changes:
        logger.info("params.yaml unchanged: this run uses the workspace's parameters as they are")
    return [list(change) for change in changes]


@task(name="stage", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[10, 60],
      retry_condition_fn=retry_only_transient)
def run_stage(stage: str, root: str) -> dict:
    """Run one stage through DVC, its output streamed into this task's log; publish its artifacts.

    Raises:
        GateFailed: the stage's gate stopped the pipeline (message: the gate's one line).
        StageFailed: any other failure (message: the stage's one-line error when it printed one).
    """
    logger = get_run_logger()
    paths = Paths(Path(root))
    run = run_dvc_stage(Path(root), stage, logger.log, env={SOURCE_ENV: flow_run_source()})
    logger.info(describe(run))
    if run.status == "failed":
        error = run.failure()
        if not error.transient:
            if stage == "validate":
                publish_validation(paths)  # validate writes its reports before it fails
            publish_failure(stage, str(error), isinstance(error, GateFailed))
        raise error
    if (publish := PUBLISHERS.get(stage)) is not None:
        publish(paths)
    return {"status": run.status, "seconds": round(run.seconds, 1)}


STAGE_TASKS = {name: run_stage.with_options(name=name, task_run_name=name) for name in PIPELINE}
# The parameters' defaults: every field empty, i.e. params.yaml as it is.
_EMPTY = {cls: cls() for cls in (BaseParams, IngestParams, TeacherParams, DistillParams, FinetuneParams,
                                 EvaluateParams, PromoteParams)}


@flow(name="training-pipeline", persist_result=True,
      description="ingest → validate → teacher → distill → finetune → evaluate → promote, each stage through "
                  "DVC. Empty parameters keep params.yaml's values; set ones are written to params.yaml.")
def training_pipeline(
        base: BaseParams = _EMPTY[BaseParams], ingest: IngestParams = _EMPTY[IngestParams],
        teacher: TeacherParams = _EMPTY[TeacherParams], distill: DistillParams = _EMPTY[DistillParams],
        finetune: FinetuneParams = _EMPTY[FinetuneParams], evaluate: EvaluateParams = _EMPTY[EvaluateParams],
        promote: PromoteParams = _EMPTY[PromoteParams]):
    """Run the pipeline in the workspace, with the given params.yaml overrides.

    Returns:
        {"stages": {stage: {"status": ran | skipped | restored, "seconds"}}, "params_changed": [...],
         "promotion": reports/promote.json}; the run's final message says whether production changed.
    """
    ws = Workspace.current()
    overrides = to_overrides({"base": base, "ingest": ingest, "teacher": teacher, "distill": distill,
                              "finetune": finetune, "evaluate": evaluate, "promote": promote})
    with workspace_slot(ws):
        changed = apply_params(str(ws.root), overrides)
        stages = {name: STAGE_TASKS[name](name, str(ws.root)) for name in PIPELINE}
    promotion = read_json(ws.root / "reports" / "promote.json")
    verdict = (f"promoted version {promotion['version']} to production" if promotion["promoted"]
               else f"production unchanged (version {promotion['production_version']}): {promotion['reason']}")
    get_run_logger().info("%s", verdict)
    return Completed(message=verdict, data={"stages": stages, "params_changed": changed, "promotion": promotion,
                                            "workspace": str(ws.root)})


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.training [-S section.key=value ...]`: one run, without a deployment.

    Returns:
        0 when the run completed, 2 for a bad parameter (before the run starts), 3 when a gate
        stopped it, 1 for any other failure.
    """
    from tasks.infra.config import parse_overrides
    from tasks.infra.errors import UserError

    parser = argparse.ArgumentParser(prog="python -m flows.training", description=__doc__.splitlines()[0])
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, e.g. -S distill.temperature=4 (repeatable)")
    try:  # one line naming the key, as `kdistill -S` gives, not Prefect's report after a server start
        overrides = parse_overrides(parser.parse_args(argv).set)
        check_overrides(overrides, Workspace.current().params_file)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    state = training_pipeline(**overrides, return_state=True)
    if state.is_completed():
        print(state.message)
        return 0
    error = state.result(raise_on_failure=False)
    print(f"error: {error if isinstance(error, Exception) else state.message}", file=sys.stderr)
    return 3 if isinstance(error, GateFailed) else 1


if __name__ == "__main__":
    sys.exit(main())
