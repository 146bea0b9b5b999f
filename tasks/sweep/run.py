"""The whole sweep (`kdistill sweep`, the Prefect flow `sweep`): the teacher measured once, the search, the
choice, the reports, and the winner's values written into params.yaml."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tasks.infra.config import Config
from tasks.infra.errors import ConfigError, GateError
from tasks.infra.storage import Paths, read_json, write_json
from tasks.sweep.choice import choose
from tasks.sweep.execution import Executor, grid_search, local_executor, optuna_search
from tasks.sweep.records import Trial, load_record, records_by_id, sweep_dirs
from tasks.sweep.reports import trial_line, write_reports
from tasks.sweep.space import describe_params, grid, space, sweep_context, teacher_layers, trial_id
from tasks.sweep.trial import measure


def apply_params(params_file: Path, params: dict) -> list[tuple]:
    """Write a trial's values into params.yaml's `distill:` section in place, comments and layout kept, as
    `dvc exp apply` would; checked by the schema before the file is touched.

    Returns:
        (dotted key, old value, new value) of each changed key.
    """
    from ruamel.yaml.comments import CommentedSeq

    # params.yaml's one round-trip writer is the Prefect form's (flows/workspace.py); it imports no Prefect.
    from tasks.infra.params_file import apply_overrides

    values = {}
    for key, value in params.items():
        if isinstance(value, list):  # written [0, 3], as params.yaml spells lists, not as a block
            value = CommentedSeq(value)
            value.fa.set_flow_style()
        values[key] = value
    return apply_overrides(Path(params_file), {"distill": values})


def teacher_reference(cfg: Config, paths: Paths, context: str) -> tuple[dict, np.ndarray]:
    """The teacher measured like a trial, once per sweep context (reports/sweep/teacher.json)."""
    out = sweep_dirs(paths)[0]
    if (out / "teacher.json").is_file() and (out / "teacher_val_preds.npy").is_file():
        saved = read_json(out / "teacher.json")
        if saved.get("context") == context:
            return saved, np.load(out / "teacher_val_preds.npy")
    metrics, preds = measure(cfg, paths, paths.teacher, ["torch-fp32"])
    metrics.update(context=context, depth=teacher_layers(paths))
    write_json(out / "teacher.json", metrics)
    np.save(out / "teacher_val_preds.npy", preds)
    return metrics, preds


def sweep(cfg: Config, paths: Paths, params_file: Path | None = None, execute: Executor | None = None,
          echo: Callable[[str], None] = print) -> dict:
    """Run the sweep, write reports/sweep/, and apply the chosen trial to `params_file`.

    Args:
        cfg: the config; its `sweep:` section is the search.
        paths: the workspace, with a trained teacher (models/teacher) and data/processed.
        params_file: params.yaml to write the choice into; None leaves it alone.
        execute: runs trial specs (default: `local_executor`; the Prefect flow passes its tasks).
        echo: where the per-trial lines go.

    Returns:
        The summary of reports/sweep/metrics.json.

    Raises:
        ConfigError: a depth or layer map the teacher cannot give; a separately pretrained student.
        GateError: no trial within the budget (reports written, params.yaml untouched).
    """
    from tasks.infra.splits import load_labels

    if cfg.distill.student_model:
        raise ConfigError("sweep: distill.student_model is set; the sweep builds students from the teacher's "
                          "layers (set it to null)")
    if cfg.sweep.work_pool and execute is None:
        raise ConfigError(f"sweep.work_pool: {cfg.sweep.work_pool!r}: trials on a work pool are started by the Prefect "
                          "flow (the sweep deployment, or python -m flows.sweep); set it to null for kdistill sweep")
    start = time.perf_counter()
    dims = space(cfg, teacher_layers(paths))
    context = sweep_context(cfg, paths)
    metric = cfg.evaluate.metric
    teacher, teacher_preds = teacher_reference(cfg, paths, context)
    execute = execute or local_executor(cfg, paths)
    specs = [{"id": trial_id(context, p), "params": p, "pruning": None} for p in grid(dims)]
    finished = {s["id"]: r for s in specs if (r := load_record(paths, s["id"])) is not None}
    records: dict[str, Trial] = {}
    total = len(specs) if cfg.sweep.method == "grid" else cfg.sweep.n_trials

    def report(record: Trial) -> None:
        if record.done and record.val_preds is None:  # from another process: its predictions are on disk
            record = load_record(paths, record.id)
        finished[record.id] = records[record.id] = record
        echo(trial_line(len(records), total, record, metric))

    if cfg.sweep.method == "grid":
        for s in specs:
            if s["id"] in finished:
                echo(f"trial {s['id']} {describe_params(s['params'])}: finished earlier, not rerun")
        grid_search(specs, finished, execute, report)
    else:
        optuna_search(cfg, paths, dims, context, finished, execute, report, teacher)
    # Every finished trial of this search space and context counts, an earlier run's included.
    ordered = [finished[s["id"]] for s in specs if s["id"] in finished]
    labels = _val_labels(paths)
    choice = choose(ordered, teacher_preds, labels, cfg, len(load_labels(paths)))
    summary = write_reports(cfg, paths, ordered, teacher, choice, round(time.perf_counter() - start, 1))
    echo(choice["reason"])
    if choice["chosen"] is None:
        raise GateError(f"sweep: {choice['reason']}; params.yaml unchanged (see {sweep_dirs(paths)[0] / 'table.md'})")
    if params_file is not None:
        changes = apply_params(Path(params_file), records_by_id(ordered)[choice["chosen"]].params)
        written = ", ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes) or "already there"
        echo(f"{params_file}: {written}; the next `dvc repro` evaluates and promotes it through the gates")
    return summary


def _val_labels(paths: Paths) -> np.ndarray:
    from tasks.infra.splits import load_split

    return load_split(paths, "val")["label"].to_numpy()
