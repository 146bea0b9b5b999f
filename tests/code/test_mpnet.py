"""MPNet (all-mpnet-base-v2's architecture) wherever the code assumed BERT: student building from its layers
(relative attention bias, RoBERTa-style positions, no pooler), the teacher-output cache and
loss, ONNX fp32/int8 serving, LoRA targets and the drift embedder. A tiny MPNet from a config in code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import CORPUS, save_model_dir
from tasks.core.data import Collator, make_dataset
from tasks.core.student import build_student, default_layer_map
from tasks.distill import make_step, student_layer_map, teacher_outputs
from tasks.infra.config import DistillConfig, FinetuneConfig, load_config
from tasks.infra.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[2]
LABELS = [1, 0, 0, 1, 1, 0, 1, 0, 1, 0]
CPU = torch.device("cpu")


def make_mpnet_tokenizer(texts: list[str] | None = None, vocab_size: int = 100):
    """A WordPiece tokenizer with MPNet's special tokens in MPNet's order (<s> 0, <pad> 1, </s> 2), like the
    real one, over `texts` (default: the test corpus). Its vocabulary is built here in a sorted order, not
    trained: the tokenizers trainer breaks ties in a per-process hash order, so a trained vocabulary, and every
    tiny model fitted on its ids, differed from one test process to the next."""
    from collections import Counter

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(w for text in (texts or CORPUS) for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    vocab = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>", *chars, *("##" + c for c in chars)]
    vocab += [w for w, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])) if w not in vocab]
    vocab += [f"[unused{i}]" for i in range(vocab_size - len(vocab))]  # exactly vocab_size ids, as BERT pads its own
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab[:vocab_size])}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="[UNK]",
                                   pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>")


def make_tiny_mpnet(vocab_size: int, layers: int = 12, hidden: int = 32, seed: int = 0):
    """A tiny MPNetForSequenceClassification (random weights; 130 positions: 128 usable tokens)."""
    from transformers import MPNetConfig, MPNetForSequenceClassification

    torch.manual_seed(seed)
    config = MPNetConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=130, num_labels=2,
                         id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    return MPNetForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def tok():
    return make_mpnet_tokenizer()


@pytest.fixture(scope="module")
def teacher(tok):
    torch.manual_seed(0)  # the same tiny teacher whatever ran before (int8's agreement below depends on the weights)
    return make_tiny_mpnet(len(tok))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, teacher, tok) -> Path:
    return save_model_dir(teacher, tok, tmp_path_factory.mktemp("mpnet") / "teacher")


@pytest.fixture(scope="module")
def corpus(tok):
    return make_dataset(tok, CORPUS, LABELS, 32)


def _batch(data, pad_id: int) -> dict[str, torch.Tensor]:
    return Collator(pad_id)([data[i] for i in range(len(data))])


def test_the_12_to_6_distilbert_map_copies_mpnet_layers_and_shared_weights(teacher):
    layer_map = default_layer_map(12, 6)
    assert layer_map == [0, 2, 4, 7, 9, 11]
    student = build_student(teacher, layer_map)
    assert type(student).__name__ == "MPNetForSequenceClassification" and student.config.num_hidden_layers == 6
    t, s = teacher.state_dict(), student.state_dict()
    for i, j in enumerate(layer_map):
        for part in ("attention.attn.q.weight", "attention.attn.o.bias", "intermediate.dense.weight",
                     "output.LayerNorm.weight"):
            assert torch.equal(s[f"mpnet.encoder.layer.{i}.{part}"], t[f"mpnet.encoder.layer.{j}.{part}"])
    # Shared by every layer, outside the layer list: the relative attention bias, positions, the head.
    for key in ("mpnet.encoder.relative_attention_bias.weight", "mpnet.embeddings.position_embeddings.weight",
                "mpnet.embeddings.word_embeddings.weight", "classifier.dense.weight", "classifier.out_proj.weight"):
        assert torch.equal(s[key], t[key]), key


def test_every_teacher_layer_kept_is_the_teacher(teacher, corpus, tok):
    """With the identity map the student must compute exactly the teacher's logits, padding included:
    nothing of MPNet (relative bias, padding-offset positions) is lost in the copy."""
    batch = _batch(corpus, tok.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    full = build_student(teacher, list(range(12))).eval()
    with torch.no_grad():
        torch.testing.assert_close(full(**inputs).logits, teacher(**inputs).logits, atol=1e-6, rtol=0)


@pytest.mark.parametrize("depth", [1, 3, 4, 11])
def test_students_of_any_depth_run(teacher, corpus, tok, depth):
    layer_map = student_layer_map(DistillConfig(student_layers=depth), 12)
    student = build_student(teacher, layer_map).eval()
    batch = _batch(corpus, tok.pad_token_id)
    out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    assert out.logits.shape == (len(CORPUS), 2) and len(out.hidden_states) == depth + 1


def test_a_layer_map_past_the_teachers_depth_is_one_line(teacher_dir, teacher):
    from tasks.cli import check_model_params

    with pytest.raises(ConfigError, match=r"^distill.layer_map \[0, 6, 12\]: expected increasing indices in 0..11$"):
        student_layer_map(DistillConfig(layer_map=[0, 6, 12]), 12)
    with pytest.raises(ConfigError, match=r"^distill.student_layers: expected 1..12"):
        student_layer_map(DistillConfig(student_layers=13), 12)
    cfg = load_config(REPO / "params.yaml", {"teacher": {"model": str(teacher_dir)}, "distill": {"layer_map": [0, 12]}})
    with pytest.raises(ConfigError, match=r"^distill.layer_map: .*0..11 \(the teacher .* has 12 layers\)$"):
        check_model_params(cfg)


def test_mpnet_positions_start_after_padding(teacher_dir):
    """130 positions, padding index 1: 128 usable tokens, as RoBERTa (the real MPNet: 514 -> 512)."""
    from tasks.models.loading import check_max_length

    check_max_length(128, str(teacher_dir))
    with pytest.raises(ConfigError, match=r"base.max_length=129: above the position limit .* \(128 tokens"):
        check_max_length(129, str(teacher_dir))


def test_cache_and_loss_with_an_mpnet_teacher(tmp_path, teacher, teacher_dir, corpus, tok):
    dc = DistillConfig(eval_batch_size=4)
    layer_map = default_layer_map(12, 6)
    cached, state, _ = teacher_outputs(dc, teacher_dir, tmp_path / "cache", teacher, corpus, tok.pad_token_id,
                                       layer_map, CPU, precision="fp32")
    assert state == "miss" and cached.pooled.shape == (len(CORPUS), 6, 32)
    again, state, _ = teacher_outputs(dc, teacher_dir, tmp_path / "cache", teacher, corpus, tok.pad_token_id,
                                      layer_map, CPU, precision="fp32")
    assert state == "hit"
    batch = _batch(corpus, tok.pad_token_id)
    with torch.no_grad():
        online = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    np.testing.assert_allclose(again.logits, online.numpy(), atol=1e-5, rtol=0)
    from tasks.distill import loss_weights

    student = build_student(teacher, layer_map).train()
    for source in (again, None):  # the cached targets, and the teacher run online
        loss, parts = make_step(teacher, source, loss_weights(dc), layer_map, dc.hidden_loss)(student, batch)
        loss.backward()
        assert set(parts) == {"kd", "ce", "cos"} and torch.isfinite(loss)
    assert student.mpnet.encoder.relative_attention_bias.weight.grad is not None


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, teacher, corpus, tok) -> Path:
    """The 6-layer student fitted to the corpus (a random one gives every text the same answer)."""
    torch.manual_seed(0)
    student = build_student(teacher, default_layer_map(12, 6)).eval()  # eval: no dropout, the same fit every run
    batch = _batch(corpus, tok.pad_token_id)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    for _ in range(20):
        loss = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_model_dir(student.eval(), tok, tmp_path_factory.mktemp("mpnet") / "student")


def test_onnx_fp32_and_int8_serve_the_mpnet_student(student_dir, corpus, tok):
    from tasks.production.export import load_predictor, predict_dataset

    logits = {v: predict_dataset(load_predictor(student_dir, v, threads=1), corpus, tok.pad_token_id, batch_size=4)
              for v in ("torch-fp32", "onnx-fp32", "onnx-int8")}
    np.testing.assert_allclose(logits["onnx-fp32"], logits["torch-fp32"], atol=1e-4, rtol=0)
    assert (logits["torch-fp32"].argmax(-1) == LABELS).mean() >= 0.9  # fitted: the comparison below can fail
    # int8 runs and mostly agrees. On ten rows of a 32-wide model fitted in 20 steps, weight quantisation can flip
    # rows near the boundary: all 10 agree with the seeded teacher and the sorted vocabulary above, and up to 4 of
    # 10 flipped when the vocabulary was trained (its order changed from process to process), so everything that
    # feeds this fit is fixed. int8's quality on the real MPNet belongs to bench/base_teacher.py.
    int8 = logits["onnx-int8"]
    assert int8.shape == logits["torch-fp32"].shape and np.isfinite(int8).all()
    assert (int8.argmax(-1) == logits["torch-fp32"].argmax(-1)).mean() >= 0.7


def test_lora_targets_every_mpnet_projection_and_keeps_the_head_whole(student_dir):
    from tasks.finetune import lora_wrap
    from tasks.models.loading import load_classifier

    model, _ = load_classifier(str(student_dir), ["negative", "positive"])
    wrapped = lora_wrap(model, FinetuneConfig(method="lora"))
    adapted = {n.split("base_model.model.")[-1].rsplit(".lora_A", 1)[0] for n, _ in wrapped.named_parameters()
               if ".lora_A." in n}
    expected = {f"mpnet.encoder.layer.{i}.{m}" for i in range(6)
                for m in ("attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o",
                          "intermediate.dense", "output.dense")}
    assert adapted == expected
    head = {n for n, p in wrapped.named_parameters() if p.requires_grad and ".lora_" not in n}
    assert head and all(".classifier.modules_to_save." in n for n in head)


def test_drift_embedder_can_be_mpnet(teacher_dir):
    """drift.embedder: MPNet's mean-pooled last hidden states, without its classifier head."""
    from tasks.models.monitor import encode, load_embedder

    embedder, embedder_tok = load_embedder(str(teacher_dir), None, None)
    assert type(embedder).__name__ == "MPNetModel"
    probs, embs = encode(embedder, embedder_tok, CORPUS, max_length=32)
    assert probs is None and embs.shape == (len(CORPUS), 32) and np.isfinite(embs).all()
    assert np.abs(embs[0] - embs[1]).max() > 1e-4  # texts differ, so do their embeddings
