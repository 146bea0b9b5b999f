"""Distillation under DDP: two CPU processes (gloo) give the single-process result.

The global batch is split by rows across ranks, gradients are averaged, and dropout is off in
the tiny model, so the two runs take the same steps on the same rows; only float summation
order differs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import make_tiny_bert, save_model_dir
from safetensors.torch import load_file

from tasks.infra.config import load_config
from tasks.ingest import ingest
from tasks.infra.storage import Paths

REPO = Path(__file__).resolve().parents[2]
SETTINGS = ["ingest.max_rows=240", "distill.epochs=2", "distill.batch_size=16", "distill.alpha_cos=0.1",
            "distill.lr=5e-4", "base.threads=1", "base.precision=fp32"]  # fp32 on any CPU: the tolerance is fp32's


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _project(root: Path, tokenizer) -> None:
    """Processed data from the embedded default and a tiny, dropout-free teacher at models/teacher."""
    ingest(load_config(REPO / "params.yaml", SETTINGS), Paths(root))
    teacher = make_tiny_bert(len(tokenizer), layers=4)
    teacher.config.hidden_dropout_prob = teacher.config.attention_probs_dropout_prob = 0.0
    save_model_dir(teacher, tokenizer, root / "models" / "teacher")


def _distill(root: Path, launcher: list[str]) -> None:
    cmd = launcher + ["-m", "tasks.cli", "--root", str(root), "--params", str(REPO / "params.yaml"), "-q"]
    cmd += [arg for s in SETTINGS for arg in ("-S", s)] + ["distill"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, tiny_tokenizer):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _project(single, tiny_tokenizer)
    shutil.copytree(single, ddp)
    _distill(single, [sys.executable])
    _distill(ddp, [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                   f"--master_port={_free_port()}"])

    a = load_file(single / "models" / "distilled" / "model.safetensors")
    b = load_file(ddp / "models" / "distilled" / "model.safetensors")
    assert a.keys() == b.keys()
    start = load_file(single / "models" / "teacher" / "model.safetensors")
    moved = max((a[k] - start[k]).abs().max().item() for k in a if k in start and "layer" not in k)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved > 1e-3  # training changed the weights, so agreement below means something
    assert worst < 1e-4, f"DDP and single-process weights differ by {worst}"

    ra = json.loads((single / "reports" / "distill.json").read_text())
    rb = json.loads((ddp / "reports" / "distill.json").read_text())
    assert rb["processes"] == 2 and ra["processes"] == 1
    for ea, eb in zip(ra["history"], rb["history"], strict=True):
        assert eb["train_loss"] == pytest.approx(ea["train_loss"], abs=1e-4)  # reduced across ranks
        assert eb["val_accuracy"] == pytest.approx(ea["val_accuracy"], abs=1e-9)
    # The teacher-logit cache was built sharded by rank.
    shards = sorted(p.name for p in (ddp / "models" / "cache").rglob("logits*.npy"))
    assert shards == ["logits.0-of-2.npy", "logits.1-of-2.npy"]
