"""sweep: the compression sweep as a Prefect flow; each trial a task with its own log.

The same function as `kdistill sweep` (tasks/sweep.py `sweep`): trains the students of params.yaml's
`sweep:` section from the workspace's teacher, picks the cheapest within the accuracy budget and
writes its values into params.yaml's `distill:` section, so the next training-pipeline run (or
`dvc repro`) evaluates and promotes it through the usual gates.

- Parameters: the form's fields are `sweep:` keys (derived from the schema, flows/parameters.py);
  empty keeps params.yaml's value. They apply to this run only; `apply: false` leaves params.yaml alone.
- Each trial runs in its own process (`python -m tasks.sweep --spec ...`) inside a task named after
  it, its output streamed into the task's log; `sweep.parallel` trials at a time.
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

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.states import Completed, Failed

from flows.parameters import form_section, to_overrides
from flows.reports import publish_failure
from flows.training import workspace_slot
from flows.workspace import Workspace

FORM = ("method", "n_trials", "depths", "temperatures", "objective", "max_drop", "max_latency_ms", "parallel")
SweepParams = form_section("sweep", FORM)


@task(name="trial", cache_policy=NO_CACHE)
def run_trial(root: str, config: dict, spec: dict) -> dict:
    """One trial in its own process; its log lines become this task's."""
    from tasks.infra.config import config_from_dict
    from tasks.infra.storage import Paths
    from tasks.sweep import trial_process

    logger = get_run_logger()
    return trial_process(config_from_dict(config), Paths(Path(root)), spec, on_line=logger.info)


def prefect_executor(root: Path, cfg) -> Callable[[list[dict]], Iterator[dict]]:
    """The sweep's executor: each spec a `trial` task, `sweep.parallel` at a time."""
    from tasks.infra.config import to_dict

    config, parallel = to_dict(cfg), cfg.sweep.parallel

    def execute(specs: list[dict]) -> Iterator[dict]:
        for start in range(0, len(specs), parallel):
            futures = [run_trial.with_options(task_run_name=f"trial {s['id']}").submit(str(root), config, s)
                       for s in specs[start:start + parallel]]
            for future in as_completed(futures):
                yield future.result()

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
    from tasks.sweep import sweep as run_sweep

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
