"""Running trials: in this process one at a time, as `sweep.parallel` processes at once, or (the Prefect
flow's executor) as tasks; and the two searches, the grid and Optuna's (TPE, pruned after each epoch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tasks.infra.config import Config, to_dict
from tasks.infra.storage import Paths, read_json, write_json
from tasks.sweep.choice import within_drop
from tasks.sweep.records import Trial, sweep_dirs
from tasks.sweep.space import trial_id, trial_params
from tasks.sweep.trial import make_pruner, run_trial

Executor = Callable[[list[dict]], Iterable[Trial]]  # trial specs in, finished trials out (any order)


def worker_env(cfg: Config) -> dict:
    """A trial process's environment: its share of the cores when the config leaves threads to torch."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")])}
    if cfg.base.threads == 0:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cfg.sweep.parallel))
    return env


def trial_process(cfg: Config, paths: Paths, spec: dict, on_line: Callable[[str], None] | None = None) -> Trial:
    """Run one trial in its own process (`python -m tasks.sweep --spec ...`); its output goes to the
    trial's log.txt and, line by line, to `on_line` (a Prefect task's logger)."""
    folder = sweep_dirs(paths)[1] / spec["id"]
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "spec.json", {"config": to_dict(cfg), "spec": spec})
    cmd = [sys.executable, "-m", "tasks.sweep", "--root", str(paths.root), "--spec", str(folder / "spec.json")]
    with open(folder / "log.txt", "w", encoding="utf-8") as out, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=worker_env(cfg)) as proc:
        for line in proc.stdout:
            out.write(line)
            if on_line is not None:
                on_line(line.rstrip())
    if proc.returncode != 0:
        raise RuntimeError(f"sweep trial {spec['id']} failed (exit {proc.returncode}); see {folder / 'log.txt'}")
    return Trial.from_json(read_json(folder / "trial.json"))  # its val predictions stay on disk


def local_executor(cfg: Config, paths: Paths) -> Executor:
    """In this process one at a time (sweep.parallel 1), or sweep.parallel trial processes at once."""

    def execute(specs: list[dict]) -> Iterator[Trial]:
        if cfg.sweep.parallel == 1 or len(specs) == 1:
            for spec in specs:
                yield run_trial(cfg, paths, spec)
            return
        with ThreadPoolExecutor(cfg.sweep.parallel) as pool:
            for future in as_completed([pool.submit(trial_process, cfg, paths, spec) for spec in specs]):
                yield future.result()

    return execute


def grid_search(specs: list[dict], finished: dict[str, Trial], execute: Executor,
                report: Callable[[Trial], None]) -> None:
    """Run every unfinished spec: the first alone (it fills the teacher cache every other trial reads)."""
    todo = [s for s in specs if s["id"] not in finished]
    for batch in (todo[:1], todo[1:]):
        if batch:
            for record in execute(batch):
                report(record)


def optuna_value(record: Trial, teacher: dict, cfg: Config) -> float:
    """What the Optuna study maximises: for accuracy the val score; for latency or size, a trial within
    max_drop of the teacher (point estimate) scores 1 + teacher cost / its cost (> 1, cheaper higher),
    one outside it its val score (< 1)."""
    metric = cfg.evaluate.metric
    score = record.val[metric]
    if cfg.sweep.objective == "accuracy" or not within_drop(score - teacher["val"][metric], cfg.sweep.max_drop):
        return score
    key = "latency_ms_b1" if cfg.sweep.objective == "latency" else "size_mb"
    return 1.0 + teacher["served"][key] / max(record.served[key], 1e-9)


def optuna_search(cfg: Config, paths: Paths, dims: dict[str, list], context: str, finished: dict[str, Trial],
                  execute: Executor, report: Callable[[Trial], None], teacher: dict) -> None:
    """Ask the study for trials until `sweep.n_trials` have finished (those of earlier runs count).

    The study lives in models/sweep/optuna.db (SQLite), named after the sweep's context, so an
    interrupted search continues where it stopped. Trials are asked `sweep.parallel` at a time.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sc = cfg.sweep
    storage = f"sqlite:///{(sweep_dirs(paths)[1] / 'optuna.db').resolve()}"
    sweep_dirs(paths)[1].mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=f"sweep-{context[:16]}", storage=storage, load_if_exists=True,
                                direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.base.seed),
                                pruner=make_pruner())
    labels = {k: [json.dumps(v) for v in values] for k, values in dims.items()}  # categorical choices

    def tell(trial_number: int, record: Trial) -> None:
        if record.status == "pruned":
            study.tell(trial_number, state=TrialState.PRUNED)
        else:
            study.tell(trial_number, optuna_value(record, teacher, cfg))

    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # a killed sweep's trials
        study.tell(stale.number, state=TrialState.FAIL)
    while (done := len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))) < sc.n_trials:
        asked: dict[str, list[int]] = {}
        specs = []
        for _ in range(min(sc.parallel if done else 1, sc.n_trials - done)):  # the first alone: it fills the cache
            trial = study.ask()
            params = trial_params(*(json.loads(trial.suggest_categorical(k, labels[k])) for k in dims))
            tid = trial_id(context, params)
            if tid in finished:  # sampled before: the same result, no new training
                tell(trial.number, finished[tid])
                continue
            if tid not in asked:
                specs.append({"id": tid, "params": params, "pruning": {"storage": storage, "study": study.study_name,
                                                                        "trial_id": trial._trial_id}})
            asked.setdefault(tid, []).append(trial.number)
        for record in execute(specs):
            report(record)
            for number in asked[record.id]:
                tell(number, record)
