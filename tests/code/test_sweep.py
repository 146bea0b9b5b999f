"""Code tests of the compression sweep (tasks/sweep/) on a tiny teacher and 200 movie rows:
the grid and the Optuna search, one teacher run for every layer map, resume, the choice rule, the
params.yaml edit, and the user errors of `kdistill sweep`."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import embedded_sample
from tasks.infra.config import load_config
from tasks.infra.storage import Paths, read_json, write_json

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[2]
TINY = {  # seconds a trial: one epoch, few timing runs, two cheap variants; everything within budget
    "base": {"max_length": 32, "precision": "fp32"},  # trial processes resolve "auto" without conftest's patch
    "distill": {"epochs": 1, "batch_size": 16},
    "evaluate": {"latency_runs": 3, "warmup_runs": 1},
    "sweep": {"depths": [1, 2], "temperatures": [2.0, 4.0], "epochs": [1], "max_drop": 1.0,
              "variants": ["torch-fp32", "torch-int8"], "prune_vocab": [False], "static_dims": []},
}


@pytest.fixture
def ws(tmp_path, tiny_teacher_dir) -> Path:
    return make_workspace(tmp_path / "ws", tiny_teacher_dir)


def make_workspace(root: Path, tiny_teacher_dir: Path) -> Path:
    """data/processed (120/40/40 movie rows), the tiny 4-layer teacher at models/teacher, params.yaml with TINY."""
    paths = Paths(root)
    paths.processed.mkdir(parents=True)
    movies = embedded_sample("movies", 200, 0).assign(label=lambda f: (f["label"] == "positive").astype("int64"))
    for split, frame in (("train", movies.iloc[:120]), ("val", movies.iloc[120:160]), ("test", movies.iloc[160:])):
        frame.reset_index(drop=True).to_parquet(paths.split(split))
    write_json(paths.summary, {"labels": ["negative", "positive"], "data_hash": "movies-200"})
    shutil.copytree(tiny_teacher_dir, paths.teacher)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    params["teacher"]["model"] = str(tiny_teacher_dir)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def cfg_of(ws: Path, *overrides: str):
    return load_config(ws / "params.yaml", list(overrides))


@pytest.fixture
def builds(monkeypatch) -> list:
    """Every run of the teacher over the transfer set (a cache build), recorded."""
    from tasks.core.cache import LogitCache

    calls, build = [], LogitCache.build

    def counting(self, *args, **kwargs):
        calls.append(self.key)
        return build(self, *args, **kwargs)

    monkeypatch.setattr(LogitCache, "build", counting)
    return calls


def test_grid_trains_every_combination_from_one_teacher_run(ws, builds):
    from tasks.sweep.run import sweep

    lines: list[str] = []
    summary = sweep(cfg_of(ws), Paths(ws), ws / "params.yaml", echo=lines.append)
    trials = read_json(ws / "reports" / "sweep" / "trials.json")["trials"]
    assert len(trials) == 4 and {t["params"]["student_layers"] for t in trials} == {1, 2}
    assert {tuple(t["params"]["layer_map"]) for t in trials} == {(0,), (0, 3)}  # 4 layers: distill's default maps
    assert len(builds) == 1, "the teacher ran more than once over the transfer set"
    assert [t["cache"] for t in trials] == ["miss", "hit", "hit", "hit"]
    assert sum(line.startswith("trial ") and "/4 " in line for line in lines) == 4
    assert all(("ms" in line and " s" in line) for line in lines if line.startswith("trial "))
    for t in trials:
        assert t["status"] == "done" and 0 <= t["val"]["accuracy"] <= 1 and t["torch_fp32"]["latency_ms_b1"] > 0
        assert t["served"]["variant"] in ("torch-fp32", "torch-int8") and t["test"]["f1_macro"] >= 0
    chosen = next(t for t in trials if t["id"] == summary["chosen"])
    distill = load_config(ws / "params.yaml").distill
    assert (distill.student_layers, distill.layer_map, distill.temperature) == (
        chosen["params"]["student_layers"], chosen["params"]["layer_map"], chosen["params"]["temperature"])
    for name in ("table.md", "pareto.png", "metrics.json", "trials.csv"):
        assert (ws / "reports" / "sweep" / name).stat().st_size > 0
    assert f"**{summary['chosen']}**" in (ws / "reports" / "sweep" / "table.md").read_text()
    # What dvc.yaml registers for `dvc metrics show` / `dvc plots show` is what the sweep writes.
    import pandas as pd

    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert "reports/sweep/metrics.json" in dvc["metrics"] and "reports/sweep/pareto.png" in dvc["plots"]
    (spec,) = [next(iter(p.values())) for p in dvc["plots"] if isinstance(p, dict) and "sweep" in str(p)]
    ((csv, y),) = spec["y"].items()
    frame = pd.read_csv(ws / csv)
    assert len(frame) == 4 and frame[[spec["x"], y]].notna().all().all()


def test_the_cache_serves_every_layer_map(ws, builds):
    """Depth 1 after depth 3: the entry built for one map serves the other, with the mapped layers' states."""
    from tasks.core.cache import LogitCache
    from tasks.sweep.run import sweep

    sweep(cfg_of(ws, "sweep.layer_maps=[[1, 2, 3], [3]]", "sweep.temperatures=[2.0]"), Paths(ws), echo=print)
    assert len(builds) == 1
    entry = LogitCache(Paths(ws).cache, builds[0]).load()
    assert entry.pooled.shape[1] == 4  # every teacher layer stored
    np.testing.assert_array_equal(entry.select([3]).pooled[:, 0], entry.pooled[:, 3])


def test_parallel_trials_run_as_processes_reading_the_one_cache(ws, builds):
    """sweep.parallel 2: the first trial alone in this process (it builds the cache), the rest two at a
    time in their own processes, which find the cache built."""
    from tasks.sweep.records import sweep_dirs
    from tasks.sweep.run import sweep

    sweep(cfg_of(ws, "sweep.parallel=2", "sweep.depths=[1, 2, 3]", "sweep.temperatures=[2.0]"), Paths(ws), echo=print)
    trials = read_json(ws / "reports" / "sweep" / "trials.json")["trials"]
    assert [t["status"] for t in trials] == ["done"] * 3 and len(builds) == 1
    assert sorted(t["cache"] for t in trials) == ["hit", "hit", "miss"]
    logs = sorted(sweep_dirs(Paths(ws))[1].glob("*/log.txt"))
    assert len(logs) == 2 and all("[distill]" in log.read_text() for log in logs)


def test_resume_runs_only_unfinished_trials(ws, monkeypatch):
    import tasks.distill
    from tasks.sweep.records import sweep_dirs
    from tasks.sweep.run import sweep

    ran = []
    distill = tasks.distill.distill
    monkeypatch.setattr(tasks.distill, "distill", lambda cfg, *a, **k: ran.append(cfg.distill.student_layers)
                        or distill(cfg, *a, **k))
    first = sweep(cfg_of(ws, "sweep.temperatures=[2.0]"), Paths(ws), echo=print)
    assert sorted(ran) == [1, 2]
    # An interrupted sweep: one trial never wrote its record.
    trials = read_json(ws / "reports" / "sweep" / "trials.json")["trials"]
    (sweep_dirs(Paths(ws))[1] / trials[1]["id"] / "trial.json").unlink()
    ran.clear()
    lines: list[str] = []
    again = sweep(cfg_of(ws, "sweep.temperatures=[2.0]"), Paths(ws), echo=lines.append)
    assert ran == [trials[1]["params"]["student_layers"]]
    assert any("finished earlier, not rerun" in line and trials[0]["id"] in line for line in lines)
    assert again["trials"] == first["trials"] == 2


def test_optuna_search_finishes_n_trials_and_resumes(ws):
    import optuna

    from tasks.sweep.records import sweep_dirs
    from tasks.sweep.run import sweep

    cfg = cfg_of(ws, "sweep.method=optuna", "sweep.n_trials=3", "sweep.depths=[1, 2, 3]")
    lines: list[str] = []
    sweep(cfg, Paths(ws), echo=lines.append)
    storage = f"sqlite:///{sweep_dirs(Paths(ws))[1] / 'optuna.db'}"
    (name,) = optuna.get_all_study_names(storage)
    states = [t.state for t in optuna.load_study(study_name=name, storage=storage).trials]
    finished = [s for s in states if s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 3
    ran_first = sum(line.startswith("trial ") for line in lines)
    assert 1 <= ran_first <= 3  # a sampled repeat reuses its finished twin
    lines.clear()
    sweep(cfg, Paths(ws), echo=lines.append)  # resumed: n_trials already finished, nothing trains
    assert not [line for line in lines if line.startswith("trial ") and "/3 " in line]


def test_optuna_hook_prunes_after_an_epoch(ws, monkeypatch):
    import optuna

    import tasks.sweep.trial as sw
    from tasks.sweep.space import trial_params

    monkeypatch.setattr(sw, "make_pruner", lambda: optuna.pruners.ThresholdPruner(lower=2.0))  # always below
    storage = f"sqlite:///{ws / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    trial = study.ask()
    params = trial_params([0, 2], 2.0, [0.5, 0.5], 1e-4, 3)
    record = sw.run_trial(cfg_of(ws), Paths(ws), {"id": "pruned1", "params": params,
                                                  "pruning": {"storage": storage, "study": "s",
                                                              "trial_id": trial._trial_id}})
    assert record.status == "pruned" and "after epoch 1" in record.reason
    assert len(record.history) == 1 and record.val is None and "val" not in record.to_json()
    assert study.trials[0].intermediate_values.keys() == {1}


def rec(tid: str, preds: list[int], latency: float, depth: int = 1, size: float = 1.0):
    from tasks.sweep.records import Trial
    from tasks.sweep.space import trial_params

    params = trial_params(list(range(depth)), 2.0, [0.5, 0.5], 1e-4, 1)
    return Trial(id=tid, status="done", params=params, val_preds=np.array(preds), val={"accuracy": 0.0},
                 served={"latency_ms_b1": latency, "size_mb": size})


def scored(records: list, labels: np.ndarray) -> list:
    for r in records:
        r.val["accuracy"] = float(np.mean(r.val_preds == labels))
    return records


def three_trials() -> tuple[list, np.ndarray]:
    """A teacher right on all 200 val rows; 'best' (5 ms) equals it, 'near' (2 ms) is 4 rows worse (-0.02,
    within the noise), 'far' (1 ms) 60 rows worse (-0.30, significantly below)."""
    labels = np.array([0, 1] * 100)
    near = labels.copy()
    near[:4] = 1 - near[:4]
    far = labels.copy()
    far[:60] = 1 - far[:60]
    return scored([rec("best", labels, 5.0, 3), rec("near", near, 2.0, 2), rec("far", far, 1.0, 1)], labels), labels


def test_latency_objective_takes_the_fastest_trial_within_max_drop_of_the_teacher(ws):
    from tasks.sweep.choice import choose

    records, labels = three_trials()
    # max_drop 0.05: 'far' is out (0.30 below the teacher), 'near' (0.02 below) is the fastest left.
    choice = choose(records, labels, labels, cfg_of(ws, "sweep.max_drop=0.05"), 2)
    assert choice["chosen"] == "near" and choice["best"] == "best"
    assert not choice["trials"]["far"]["budget"] and "0.3000 below the teacher" in choice["trials"]["far"]["why"]
    # The budget is the point estimate: 0.02 below is out at max_drop 0.01 (though not significant), in at 0.02.
    assert choose(records, labels, labels, cfg_of(ws, "sweep.max_drop=0.01"), 2)["chosen"] == "best"
    assert choose(records, labels, labels, cfg_of(ws, "sweep.max_drop=0.02"), 2)["chosen"] == "near"
    # A wide budget: the fastest of all, even significantly below the others.
    assert choose(records, labels, labels, cfg_of(ws, "sweep.max_drop=1.0"), 2)["chosen"] == "far"
    # A latency cap under every trial: nothing within budget.
    out = choose(records, labels, labels, cfg_of(ws, "sweep.max_drop=1.0", "sweep.max_latency_ms=0.5"), 2)
    assert out["chosen"] is None and out["reason"].startswith("no trial within budget")


def test_size_objective_takes_the_smallest_trial_within_budget(ws):
    from tasks.sweep.choice import choose

    records, labels = three_trials()
    for r, mb in zip(records, (30.0, 50.0, 40.0)):
        r.served["size_mb"] = mb
    assert choose(records, labels, labels, cfg_of(ws, "sweep.objective=size", "sweep.max_drop=1.0"), 2)["chosen"] == "best"


def test_accuracy_objective_takes_the_fastest_trial_not_significantly_below_the_best(ws):
    from tasks.sweep.choice import choose

    records, labels = three_trials()
    choice = choose(records, labels, labels, cfg_of(ws, "sweep.objective=accuracy", "sweep.max_drop=1.0"), 2)
    # 'near' is 4 rows below 'best' (noise) and faster: it wins; 'far' is significantly below and no contender.
    assert choice["best"] == "best" and choice["chosen"] == "near"
    assert choice["trials"]["near"]["contender"] and not choice["trials"]["far"]["contender"]
    assert choice["trials"]["far"]["budget"]
    # With 'near' out of budget, the best itself.
    assert choose(records, labels, labels, cfg_of(ws, "sweep.objective=accuracy", "sweep.max_drop=0.01"), 2)["chosen"] == "best"


def test_choice_ties_break_deterministically(ws):
    from tasks.sweep.choice import choose

    labels = np.array([0, 1] * 50)
    records = scored([rec("b2", labels, 2.004, 2), rec("a1", labels, 2.001, 2), rec("c0", labels, 2.0, 3)], labels)
    cfg = cfg_of(ws)
    # Latencies within 5% of the lowest and equal scores: the shallower, then the lower id.
    assert choose(records, labels, labels, cfg, 2)["chosen"] == "a1"
    assert choose(list(reversed(records)), labels, labels, cfg, 2)["chosen"] == "a1"
    records.append(dataclasses.replace(rec("p", labels, 0.1), status="pruned"))
    out = choose(records, labels, labels, cfg, 2)
    assert out["chosen"] == "a1" and not out["trials"]["p"]["budget"]


def test_latencies_within_timing_noise_tie_and_the_more_accurate_wins(ws):
    from tasks.sweep.choice import choose

    labels = np.array([0, 1] * 100)
    worse = labels.copy()
    worse[:2] = 1 - worse[:2]
    cfg = cfg_of(ws, "sweep.max_drop=0.05")
    # 1.04 ms is within 5% of 1.00 ms: a tie, and the more accurate trial wins it.
    records = scored([rec("fast", worse, 1.00, 3), rec("close", labels, 1.04, 3)], labels)
    assert choose(records, labels, labels, cfg, 2)["chosen"] == "close"
    # 1.10 ms is not: the faster trial wins.
    records = scored([rec("fast", worse, 1.00, 3), rec("slower", labels, 1.10, 3)], labels)
    assert choose(records, labels, labels, cfg, 2)["chosen"] == "fast"


def test_pareto_front():
    from tasks.sweep.choice import pareto_front

    from tasks.sweep.records import Trial

    def r(tid, latency, acc):
        return Trial(id=tid, params={}, status="done", served={"latency_ms_b1": latency}, val={"accuracy": acc})

    records = [r("fast", 1.0, 0.7), r("slow", 3.0, 0.9), r("dominated", 3.5, 0.8), r("mid", 2.0, 0.85)]
    assert pareto_front(records, "accuracy") == {"fast", "slow", "mid"}


def test_apply_params_keeps_comments_and_other_keys(tmp_path):
    from tasks.sweep.run import apply_params
    from tasks.sweep.space import trial_params

    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = params.read_text().splitlines()
    apply_params(params, trial_params([0, 3], 4.0, [0.7, 0.3], 3e-4, 2))
    after = params.read_text().splitlines()
    assert len(after) == len(before)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert {b.split(":")[0].strip() for _, b in changed} <= {"student_layers", "layer_map", "temperature", "alpha_kd",
                                                             "alpha_ce", "lr", "epochs"}
    assert [line for line in after if "#" in line] == [line for line in after if "#" in line]
    assert all(line.split("#", 1)[1] == a.split("#", 1)[1] for a, line in changed if "#" in a)
    d = load_config(params).distill
    assert (d.student_layers, d.layer_map, d.temperature, d.alpha_kd, d.alpha_ce, d.lr, d.epochs) == (
        2, [0, 3], 4.0, 0.7, 0.3, 3e-4, 2)
    assert load_config(params).teacher == load_config(REPO / "params.yaml").teacher


@pytest.mark.parametrize("override, key", [
    ("sweep.objective=speed", "sweep.objective"),
    ("sweep.temperatures=[]", "sweep.temperatures"),
    ("sweep.depths=[2, 4]", "sweep.depths"),  # the tiny teacher has 4 layers
    ("sweep.layer_maps=[[0, 1, 2, 3]]", "sweep.layer_maps[0]"),
])
def test_user_errors_are_one_line_naming_the_key(ws, capsys, override, key):
    from tasks.cli import main

    code = main(["--params", str(ws / "params.yaml"), "--root", str(ws), "-S", override, "sweep"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and key in err[0] and "Traceback" not in err[0]


def test_nothing_within_budget_exits_3_and_leaves_params(ws, capsys):
    from tasks.cli import main

    before = (ws / "params.yaml").read_text()
    code = main(["--params", str(ws / "params.yaml"), "--root", str(ws), "-S", "sweep.max_latency_ms=0.000001",
                 "-S", "sweep.temperatures=[2.0]", "-S", "sweep.depths=[1]", "sweep"])
    captured = capsys.readouterr()
    assert code == 3
    assert captured.err.strip().splitlines()[-1].startswith("error: sweep: no trial within budget")
    assert (ws / "params.yaml").read_text() == before
    assert (ws / "reports" / "sweep" / "table.md").is_file()


def test_a_work_pool_needs_the_prefect_flow(ws, capsys):
    from tasks.cli import main

    assert main(["--root", str(ws), "--params", str(ws / "params.yaml"), "-S", "sweep.work_pool=gpu", "sweep"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sweep.work_pool: 'gpu': trials on a work pool are started by the Prefect flow" in err[0]


def test_a_trial_record_round_trips_through_trial_json_and_refuses_unknown_keys():
    from tasks.sweep.records import Trial

    trial = rec("t1", [0, 1, 1], 2.5, depth=2)
    again = Trial.from_json(trial.to_json(), trial.val_preds)
    assert again == dataclasses.replace(trial, val_preds=again.val_preds)
    np.testing.assert_array_equal(again.val_preds, trial.val_preds)
    assert "val_preds" not in trial.to_json() and "reason" not in trial.to_json()  # only what the trial has
    with pytest.raises(ValueError, match="unknown record keys \\['latency'\\]"):
        Trial.from_json({**trial.to_json(), "latency": 1.0})


def test_the_sweep_covers_every_student_family_in_one_front(ws, builds):
    """depth x pruning x static: a pruned trial is its twin's model pruned, static ones share one model2vec table."""
    from tasks.sweep.run import sweep
    from tasks.sweep.space import FAMILIES

    cfg = cfg_of(ws, "sweep.depths=[1]", "sweep.temperatures=[2.0]", "sweep.prune_vocab=[false, true]",
                 "sweep.static_dims=[8]", "distill.static_epochs=1")
    sweep(cfg, Paths(ws), None, echo=print)
    trials = {t["id"]: t for t in read_json(ws / "reports" / "sweep" / "trials.json")["trials"]}
    families = {(t["params"]["student"], t["params"]["prune_vocab"]): t for t in trials.values()}
    assert set(families) == {("transformer", False), ("transformer", True), ("static", False), ("static", True)}
    assert all(t["status"] == "done" for t in trials.values()) and len(builds) == 1  # one teacher run for all
    pruned, twin = families[("transformer", True)], families[("transformer", False)]
    assert pruned["twin"] == twin["id"] and pruned["vocab"]["vocab_kept"] < pruned["vocab"]["vocab_from"]
    assert pruned["param_count"] < twin["param_count"] and pruned["history"] == twin["history"]
    static = families[("static", False)]
    assert static["param_count"] < twin["param_count"] and static["served"]["latency_ms_b1"] > 0
    assert len(list((ws / "models" / "cache").glob("static-*.npy"))) == 1  # model2vec ran once for width 8
    csv = (ws / "reports" / "sweep" / "trials.csv").read_text()
    assert all(name in csv for name in FAMILIES)
    table = (ws / "reports" / "sweep" / "table.md").read_text()
    assert "| static | 0 | 8d |" in table and "transformer, pruned" in table
    # the docs' table of a sweep renders every family, and says what made the file (the space searched too)
    from docs.gen.tables import sweep as docs_table

    made = read_json(ws / "reports" / "sweep" / "trials.json")
    assert made["space"]["static_dims"] == [8] and made["date"].endswith("+00:00") and made["machine"]["cores"]
    page = docs_table(str(ws / "reports" / "sweep" / "trials.json"))
    assert "| static |  | 8d |" in page and "| transformer, pruned |" in page and "not recorded" not in page


def test_a_static_width_above_the_teachers_is_one_line(ws, capsys):
    from tasks.cli import main

    code = main(["--params", str(ws / "params.yaml"), "--root", str(ws), "-S", "sweep.static_dims=[64]", "sweep"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: distill.static_dims=64: above the width")
