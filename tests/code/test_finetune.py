"""finetune stage: none copies, full trains, lora trains adapters + head and saves a plain merged model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import make_tiny_bert, save_model_dir
from safetensors.torch import load_file

from tasks.infra.config import load_config
from tasks.finetune import finetune
from tasks.ingest import ingest
from tasks.models.loading import load_classifier
from tasks.infra.storage import Paths

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path, tiny_tokenizer):
    """Processed data (a slice of the default) and a tiny 'distilled' student in models/distilled."""
    ingest(load_config(REPO / "params.yaml", ["ingest.max_rows=200"]), Paths(tmp_path))
    save_model_dir(make_tiny_bert(len(tiny_tokenizer), layers=2), tiny_tokenizer, tmp_path / "models" / "distilled")
    return Paths(tmp_path)


def _weights(folder: Path) -> dict:
    return load_file(folder / "model.safetensors")


@pytest.mark.parametrize("method", ["none", "full", "lora"])
def test_finetune_methods(project, method):
    cfg = load_config(REPO / "params.yaml", [f"finetune.method={method}", "finetune.epochs=1", "finetune.lr=1e-3",
                                             "base.threads=1"])
    report = finetune(cfg, project)
    before, after = _weights(project.distilled), _weights(project.student)
    assert before.keys() == after.keys()  # a plain model folder in every case: no peft needed to serve
    changed = {k for k in before if not (before[k] == after[k]).all()}
    if method == "none":
        assert not changed and report["history"] == []
        return
    assert len(report["history"]) == 1
    assert any(k.startswith("classifier") for k in changed)  # the head is trained (and saved) either way
    if method == "lora":
        # LoRA merged into the attention / feed-forward weights; embeddings stay frozen.
        assert any("attention.self.query" in k for k in changed)
        assert not any("embeddings" in k for k in changed)
        adapter = json.loads((project.student / "adapter" / "adapter_config.json").read_text())
        assert adapter["r"] == cfg.finetune.lora_r and "classifier" in adapter["modules_to_save"]
    model, ready = load_classifier(str(project.student), ["negative", "positive"])
    assert ready and model.config.num_hidden_layers == 2
