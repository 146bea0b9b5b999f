"""A pretrained student across tokenizers (issue 22): an MPNet teacher and a BERT student with another vocabulary
(and width). Soft targets are per text: the teacher reads its own tokens (they key the cache), the student its own;
the hidden-state term is off where it cannot be compared, and the log says which."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.code.test_mpnet import make_mpnet_tokenizer, make_tiny_mpnet
from tests.conftest import CORPUS, save_model_dir
from tasks.core.cache import cache_key, fingerprint_tokens
from tasks.distill import distill, transfer_set
from tasks.infra.config import Config
from tasks.infra.errors import ConfigError
from tasks.infra.storage import Paths, hash_dir, write_json

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LABELS = [1, 0, 0, 1, 1, 0, 1, 0, 1, 0]


def make_bert_student(vocab_size: int, hidden: int):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    return BertForSequenceClassification(BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=64, num_labels=2))


@pytest.fixture
def workspace(tmp_path) -> Paths:
    """Processed splits of the test corpus and a tiny 4-layer MPNet teacher (vocabulary 100) at models/teacher."""
    paths = Paths(tmp_path / "ws")
    paths.processed.mkdir(parents=True)
    frame = pd.DataFrame({"text": CORPUS * 3, "label": LABELS * 3})
    for split in ("train", "val", "test"):
        frame.to_parquet(paths.split(split))
    write_json(paths.summary, {"labels": ["negative", "positive"]})
    save_model_dir(make_tiny_mpnet(100, layers=4), make_mpnet_tokenizer(), paths.teacher)
    return paths


@pytest.fixture
def student_dir(tmp_path, tiny_tokenizer):
    """A BERT student with the WordPiece test tokenizer (vocabulary ~120: its ids run past the teacher's)."""
    def make(hidden: int) -> Path:
        return save_model_dir(make_bert_student(len(tiny_tokenizer), hidden), tiny_tokenizer, tmp_path / f"s{hidden}")
    return make


def _cfg(student: Path, **distill) -> Config:
    cfg = Config()
    cfg.base.precision, cfg.base.threads = "fp32", 1
    for key, value in {"student_model": str(student), "epochs": 1, "batch_size": 8, "eval_batch_size": 8,
                       **distill}.items():
        setattr(cfg.distill, key, value)
    return cfg


def test_other_vocabulary_and_width_each_model_reads_its_own_tokens(workspace, student_dir, tiny_tokenizer, caplog):
    caplog.set_level(logging.INFO, logger="kd")
    report = distill(_cfg(student_dir(24)), workspace)
    assert report["student_tokenizer"] == "own"
    assert report["hidden_term"].startswith("off: the student's width 24 differs from the teacher's 32")
    assert any("hidden-state term off: the student's width 24" in r.getMessage() for r in caplog.records)
    # Its own layers, and no hidden-state term to pair them for: no layer map is reported (or logged).
    assert report["layer_map"] is None
    assert not any("(map " in r.getMessage() for r in caplog.records if r.getMessage().startswith("[distill]"))
    # The cache keys on the teacher's tokens of the transfer set (logits only, the hidden term being off).
    from tasks.models.loading import load_tokenizer

    teacher_tokens = transfer_set(load_tokenizer(str(workspace.teacher)), pd.read_parquet(workspace.split("train")), [],
                                  64)
    assert report["cache_key"] == cache_key(hash_dir(workspace.teacher), fingerprint_tokens(teacher_tokens), None, "fp32")
    # The student is saved with its own tokenizer, which evaluate, promote and serving then load.
    saved = load_tokenizer(str(workspace.distilled))
    assert saved.get_vocab() == tiny_tokenizer.get_vocab()


@pytest.mark.parametrize("cache", [True, False])
def test_same_width_keeps_the_pooled_term_and_an_online_teacher_reads_its_own_tokens(workspace, student_dir, cache):
    """Cache off: the teacher runs each step on the batch's rows in its own tokens (the student's ids, up to
    ~120, would index past the teacher's 100 embeddings)."""
    report = distill(_cfg(student_dir(32), cache=cache), workspace)
    assert report["hidden_term"] == "on (pooled states, alpha_cos 0.1)" and report["cache"] == ("miss" if cache else "off")
    assert report["history"] and report["student_tokenizer"] == "own"
    assert len(report["layer_map"]) == report["student_layers"]  # the map pairs layers for the pooled term


def test_per_token_alignment_is_off_across_tokenizers(workspace, student_dir):
    report = distill(_cfg(student_dir(32), hidden_loss="tokens"), workspace)
    assert report["hidden_term"].startswith("off: per-token alignment needs the teacher's tokens")


def test_a_student_whose_tokenizer_cannot_be_loaded_is_one_line(workspace, tmp_path):
    folder = tmp_path / "no-tokenizer"
    make_bert_student(120, 24).save_pretrained(folder)
    with pytest.raises(ConfigError, match=r"^distill.student_model='.*no-tokenizer': no tokenizer files") as err:
        distill(_cfg(folder), workspace)
    assert "\n" not in str(err.value) and not workspace.distilled.exists()
