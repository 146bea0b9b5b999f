"""bench/gpu_distill.py stays runnable: a tiny CPU smoke run, and the real thing where CUDA is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CHECK = """
import runpy, sys
sys.argv = ["gpu_distill.py"] + sys.argv[1:]
runpy.run_path("bench/gpu_distill.py", run_name="__main__")
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"prefect", "dvc", "evidently", "great_expectations"})
assert not heavy, f"the GPU path imported {heavy}"
"""


def _run(args: list[str], out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHECK, *args, "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_gpu_bench_smoke_on_cpu_needs_only_torch_and_transformers(tmp_path):
    report = _run(["--tiny", "--device", "cpu", "--rows", "96", "--seq", "24", "--batch-size", "16", "--epochs", "1",
                   "--variants", "baseline,ours,ours+cache"], tmp_path / "gpu.json")
    assert set(report["results"]) == {"baseline", "ours", "ours+cache"}
    assert all(r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 for r in report["results"].values())
    assert report["results"]["ours+cache"]["cache_seconds"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bench_bert_base_shape_on_cuda(tmp_path):
    report = _run(["--rows", "1024", "--epochs", "2"], tmp_path / "gpu.json")
    results = report["results"]
    assert results["ours+cache"]["samples_per_s"] > results["baseline"]["samples_per_s"]
    assert results["ours+cache"]["mfu"] is not None
