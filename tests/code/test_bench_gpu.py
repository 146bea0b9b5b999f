"""bench/gpu_distill.py stays runnable: a tiny CPU smoke run, and the real thing where CUDA is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import load_bench

REPO = Path(__file__).resolve().parents[2]
CHECK = """
import runpy, sys
sys.argv = ["gpu_distill.py"] + sys.argv[1:]
runpy.run_path("bench/gpu_distill.py", run_name="__main__")
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"prefect", "dvc", "evidently", "great_expectations"})
assert not heavy, f"the GPU path imported {heavy}"
"""


@pytest.fixture(scope="module")
def gpu_bench():
    return load_bench("gpu_distill")


def test_defaults_are_the_issue_22_profile(gpu_bench):
    args = gpu_bench.parse_args([])
    assert args.arch == "mpnet" and args.precision == "auto" and "ours+cache+compile" in args.variants
    teacher, depth = gpu_bench.make_models(tiny=True, arch="mpnet")
    assert teacher.config.model_type == "mpnet" and depth == 4
    assert gpu_bench.special_ids(teacher.config) == (0, 2, 1)  # <s> </s> <pad>, not BERT's 101 102 0
    assert gpu_bench.special_ids(gpu_bench.make_models(tiny=True, arch="bert")[0].config) == (101, 102, 0)


@pytest.mark.parametrize("argv, message", [
    (["--variants", "ours,turbo"], "unknown ['turbo']"),
    (["--data", "movies"], "--data needs --teacher-model"),
    (["--teacher-model", "all-mpnet-base-v2", "--tiny"], "exclude each other"),
    (["--teacher-model", "x", "--data", "movies", "--variants", "ours"], "keep it in --variants"),
    (["--epochs", "0"], "--epochs: expected a positive number"),
    (["--arch", "gpt2"], "invalid choice"),
])
def test_bad_options_are_one_line_before_anything_loads(gpu_bench, capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        gpu_bench.parse_args(argv)
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_time_to_accuracy_counts_training_and_cache_not_validation(gpu_bench):
    epochs = [{"seconds": 10.0, "val_accuracy": 0.80}, {"seconds": 9.0, "val_accuracy": 0.86},
              {"seconds": 9.0, "val_accuracy": 0.90}]
    assert gpu_bench.time_to_accuracy(epochs, 0.86, cache_seconds=3.0) == 22.0
    assert gpu_bench.time_to_accuracy(epochs, 0.95) is None
    assert gpu_bench.time_to_accuracy(epochs, None) is None


def _run(args: list[str], out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHECK, *args, "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_gpu_bench_smoke_on_cpu_needs_only_torch_and_transformers(tmp_path):
    report = _run(["--tiny", "--device", "cpu", "--rows", "96", "--seq", "24", "--batch-size", "16", "--epochs", "1",
                   "--variants", "baseline,ours,ours+cache"], tmp_path / "gpu.json")
    assert report["machine"]["arch"] == "mpnet" and report["machine"]["processes"] == 1
    assert set(report["results"]) == {"baseline", "ours", "ours+cache"}
    assert all(r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 for r in report["results"].values())
    assert report["results"]["ours+cache"]["cache_seconds"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bench_bert_base_shape_on_cuda(tmp_path):
    report = _run(["--rows", "1024", "--epochs", "2"], tmp_path / "gpu.json")
    results = report["results"]
    assert results["ours+cache"]["samples_per_s"] > results["baseline"]["samples_per_s"]
    assert results["ours+cache"]["mfu"] is not None and results["ours+cache"]["peak_memory_gb"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bench_real_mpnet_reaches_the_trainers_val_accuracy(tmp_path):
    from tasks.models.base_teacher import model_dir

    if not (model_dir("all-mpnet-base-v2") / "assembled.json").is_file():
        pytest.skip("all-mpnet-base-v2 not assembled (make base-teacher)")
    report = _run(["--teacher-model", "all-mpnet-base-v2", "--data", "movies", "--rows", "4000", "--epochs", "3",
                   "--variants", "baseline,ours+cache"], tmp_path / "gpu.json")
    assert report["machine"]["baseline_best_val_accuracy"] > 0.8
    assert report["results"]["ours+cache"]["seconds_to_baseline_val"] is not None


@pytest.mark.slow
def test_gpu_bench_time_to_accuracy_path_on_cpu(tmp_path):
    """--teacher-model and --data on a tiny saved MPNet: the teacher is fine-tuned first, every variant is
    validated each epoch, and the time to the baseline's best val accuracy is reported (None allowed)."""
    from tests.code.test_mpnet import make_mpnet_tokenizer, make_tiny_mpnet
    from tests.conftest import save_model_dir

    tok = make_mpnet_tokenizer()
    folder = save_model_dir(make_tiny_mpnet(len(tok), layers=4), tok, tmp_path / "teacher")
    report = _run(["--device", "cpu", "--teacher-model", str(folder), "--data", "movies", "--rows", "96", "--seq", "24",
                   "--batch-size", "16", "--epochs", "2", "--teacher-epochs", "1", "--variants", "baseline,ours+cache"],
                  tmp_path / "gpu.json")
    machine, results = report["machine"], report["results"]
    assert machine["data"] == "movies" and machine["teacher_finetune"]["seconds"] > 0
    assert 0 <= machine["baseline_best_val_accuracy"] <= 1
    assert len(results["baseline"]["epochs"]) == 2 and len(results["ours+cache"]["epochs"]) == 2
    # The baseline reaches its own best by definition.
    assert results["baseline"]["seconds_to_baseline_val"] is not None
