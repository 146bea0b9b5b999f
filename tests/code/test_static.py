"""The static-embedding student (issue 23): model2vec's table of a tiny teacher, a head, and every consumer.

Tiny models only: a 4-layer random BERT (width 32) and a tokenizer trained in the test (tests/conftest.py);
model2vec's distillation runs on it offline in a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from tasks.cli import main
from tasks.distill import make_student
from tasks.infra.config import DistillConfig, load_config
from tasks.infra.errors import ConfigError
from tasks.models.loading import load_classifier, load_tokenizer
from tasks.infra.storage import Paths
from tasks.models.static import StaticClassifier, build_static, is_static
from tests.conftest import CORPUS, TINY_PARAMS, make_tiny_bert

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[2]
LABELS = ["negative", "positive"]


def _batch(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    enc = tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=False)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@pytest.fixture(scope="module")
def static_student(tiny_tokenizer):
    teacher = make_tiny_bert(len(tiny_tokenizer))
    student, layer_map = make_student(DistillConfig(student="static", static_dims=16), teacher, LABELS, tiny_tokenizer)
    return student, layer_map


def test_the_static_kind_is_model2vecs_table_of_the_teacher_with_a_new_head(static_student, tiny_tokenizer):
    student, layer_map = static_student
    assert isinstance(student, StaticClassifier) and layer_map == []  # no layers to align
    assert student.embeddings.weight.shape == (len(tiny_tokenizer), 16) and student.config.num_hidden_layers == 0
    # model2vec gave (nearly) every token a row; the ones it dropped are zero, never random
    assert (student.embeddings.weight.abs().sum(1) > 0).sum() >= len(tiny_tokenizer) - len(tiny_tokenizer.all_special_ids)
    assert student.embeddings.weight.requires_grad  # distill.static_train_embeddings: true by default


def test_logits_are_the_head_of_the_mean_of_the_non_special_tokens(static_student, tiny_tokenizer):
    student, _ = static_student
    batch = _batch(tiny_tokenizer, ["a great film", "an awful boring movie"])
    with torch.no_grad():
        logits = student.eval()(**batch).logits
        for row in range(2):
            ids = [i for i, m in zip(batch["input_ids"][row].tolist(), batch["attention_mask"][row].tolist())
                   if m and i not in tiny_tokenizer.all_special_ids]
            pooled = torch.nn.functional.normalize(student.embeddings.weight[ids].mean(0), dim=-1) \
                if student.config.normalize else student.embeddings.weight[ids].mean(0)
            assert torch.allclose(logits[row], student.classifier(pooled), atol=1e-5)  # padding and [CLS]/[SEP] left out


def test_a_saved_static_student_loads_and_serves_like_any_classifier(static_student, tiny_tokenizer, tmp_path):
    from tasks.models.monitor import encode
    from tasks.production.export import export_onnx, load_predictor

    student, _ = static_student
    student.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded, head_ready = load_classifier(str(tmp_path), LABELS)
    assert is_static(loaded) and head_ready
    batch = _batch(tiny_tokenizer, CORPUS[:4])
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(**batch).logits, student.eval()(**batch).logits, atol=1e-6)
    assert export_onnx(tmp_path, tmp_path / "model.onnx") < 1e-4  # the ONNX serving variants take it
    predictor = load_predictor(tmp_path, "torch-int8", threads=1)
    assert predictor.predict_logits(batch["input_ids"].numpy(), batch["attention_mask"].numpy()).shape == (4, 2)
    probs, embs = encode(loaded, load_tokenizer(str(tmp_path)), CORPUS[:3], 32)  # drift.embedder: student
    assert probs.shape == (3, 2) and embs.shape == (3, 16)


def test_static_dims_above_the_teachers_width_is_one_line(tiny_tokenizer):
    teacher = make_tiny_bert(len(tiny_tokenizer))
    with pytest.raises(ConfigError, match=r"^distill.static_dims=64: above the width of .* \(32, hidden_size"):
        make_student(DistillConfig(student="static", static_dims=64), teacher, LABELS, tiny_tokenizer)


def test_a_static_student_with_token_alignment_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "params.yaml", ["distill.student=static", "distill.hidden_loss=tokens"])
    assert str(err.value).count("\n") == 0
    assert "distill.hidden_loss: tokens aligns the student's layers" in str(err.value)


def test_build_static_takes_any_table_and_its_special_tokens(tiny_tokenizer):
    table = torch.randn(len(tiny_tokenizer), 8).numpy()
    model = build_static(table, tiny_tokenizer, LABELS, head_hidden=5)
    assert model.config.skip_token_ids == sorted(set(tiny_tokenizer.all_special_ids))
    assert isinstance(model.classifier, torch.nn.Sequential)  # distill.static_hidden > 0: an MLP head
    assert model.eval()(**_batch(tiny_tokenizer, ["[CLS] [SEP]"])).logits.shape == (1, 2)


# ------------------------------------------------------------------ the pipeline with a static student

def _workspace(tmp_path: Path, tiny_dir: Path, **distill) -> tuple[Path, list[str]]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY_PARAMS.items():
        params[section].update(values)
    params["teacher"]["model"] = str(tiny_dir)
    params["ingest"]["max_rows"] = 200
    params["base"]["max_length"] = 32
    params["distill"].update({"student": "static", "static_dims": 16, "static_epochs": 2, **distill})
    params["score"]["settle_seconds"] = 0
    root = tmp_path / "ws"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root, ["--params", str(root / "params.yaml"), "--root", str(root)]


@pytest.fixture(scope="module")
def static_run(tmp_path_factory, tiny_teacher_dir):
    """`kdistill run` with distill.student=static on a tiny workspace; the tests read what it left."""
    root, args = _workspace(tmp_path_factory.mktemp("static"), tiny_teacher_dir)
    return root, args, main([*args, "run"])


def test_run_distills_evaluates_and_promotes_a_static_student(static_run):
    root, _, code = static_run
    assert code == 0
    paths = Paths(root)
    distill = json.loads((paths.reports / "distill.json").read_text())
    assert distill["student"] == "static" and distill["static_dims"] == 16 and distill["student_layers"] == 0
    assert distill["history"] and all("cos" not in h for h in distill["history"])  # no hidden-state term
    metrics = json.loads((paths.reports / "metrics.json").read_text())
    assert metrics["student"]["params"] < metrics["teacher"]["params"] and metrics["student"]["latency_ms_b1"] > 0
    production = json.loads((root / "models" / "production" / "config.json").read_text())
    assert is_static(production) and production["hidden_size"] == 16


def test_predict_and_score_answer_with_the_static_production_model(static_run, capsys):
    root, args, _ = static_run
    capsys.readouterr()
    assert main([*args, "predict", "--model", str(root / "models" / "production"), "a great film"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["label"] in LABELS and abs(sum(row["probabilities"].values()) - 1) < 1e-4
    incoming = root / "data" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"text": CORPUS}).to_csv(incoming / "batch.csv", index=False)
    assert main([*args, "score"]) == 0
    log = pd.concat(pd.read_parquet(p) for p in (root / "data" / "production").rglob("*.parquet"))
    assert len(log) == len(CORPUS) and set(log["prediction"]) <= set(LABELS)


def test_static_dims_above_the_teachers_width_stops_the_run_in_one_line(tmp_path, tiny_teacher_dir, capsys):
    root, args = _workspace(tmp_path, tiny_teacher_dir, static_dims=64)
    assert main([*args, "distill"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: distill.static_dims=64: above the width of the teacher")
    assert not (root / "models").exists()  # refused before any stage ran


def test_the_table_is_cached_per_teacher_and_width(tiny_tokenizer, tmp_path, monkeypatch):
    import tasks.models.static as static

    teacher = make_tiny_bert(len(tiny_tokenizer))
    first = static.static_from_teacher(teacher, tiny_tokenizer, LABELS, 16, 0, True, cache=(tmp_path, "t1"))
    monkeypatch.setattr(static, "model2vec_table", lambda *a, **k: pytest.fail("model2vec ran again"))
    again = static.static_from_teacher(teacher, tiny_tokenizer, LABELS, 16, 0, True, cache=(tmp_path, "t1"))
    assert torch.equal(first.embeddings.weight, again.embeddings.weight)
    with pytest.raises(pytest.fail.Exception):  # another teacher (or width) is another entry
        static.static_from_teacher(teacher, tiny_tokenizer, LABELS, 16, 0, True, cache=(tmp_path, "t2"))


def test_lora_on_a_static_student_is_one_line(tmp_path, tiny_teacher_dir, capsys):
    _, args = _workspace(tmp_path, tiny_teacher_dir)
    assert main([*args, "-S", "finetune.method=lora", "run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: finetune.method: lora adapts attention and feed-forward layers, and the static "
                       "student (distill.student: static) has none; expected full or none")
