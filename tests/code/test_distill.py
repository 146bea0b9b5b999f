"""distill stage helpers: student construction and the unlabelled transfer set."""

from __future__ import annotations


import pandas as pd
import pytest
from tests.conftest import make_tiny_bert

from tasks.infra.config import DistillConfig
from tasks.distill import load_unlabeled, make_student
from tasks.infra.errors import ConfigError


def test_student_from_teacher_layers_uses_the_default_map(tiny_tokenizer):
    teacher = make_tiny_bert(len(tiny_tokenizer), layers=4)
    student, layer_map = make_student(DistillConfig(), teacher, ["negative", "positive"])
    assert layer_map == [0, 3] and student.config.num_hidden_layers == 2


def test_pretrained_student_gets_a_map_of_its_own_depth(tmp_path, tiny_tokenizer):
    teacher = make_tiny_bert(len(tiny_tokenizer), layers=4)
    make_tiny_bert(len(tiny_tokenizer), layers=3, seed=1).save_pretrained(tmp_path / "s3")
    dc = DistillConfig(student_model=str(tmp_path / "s3"), alpha_cos=0.1)
    student, layer_map = make_student(dc, teacher, ["negative", "positive"])
    assert student.config.num_hidden_layers == 3 and len(layer_map) == 3
    with pytest.raises(ConfigError, match="student_layers=2"):
        make_student(dc.model_copy(update={"student_layers": 2}), teacher, ["negative", "positive"])


def test_unlabeled_texts_exclude_the_labelled_splits(tmp_path):
    src = tmp_path / "u.csv"
    pd.DataFrame({"body": ["seen in test", "new text", "new text", " ", "another"]}).to_csv(src, index=False)
    dc = DistillConfig(unlabeled={"source": "file", "path": str(src), "text_column": "body"})
    assert sorted(load_unlabeled(dc, {"seen in test"}, seed=0)) == ["another", "new text"]
    capped = dc.model_copy(update={"unlabeled_max_rows": 1})
    assert len(load_unlabeled(capped, set(), seed=0)) == 1


def test_embedded_unlabeled_sources_are_read():
    dc = DistillConfig(unlabeled={"source": "embedded", "path": "tweets,nyt", "text_column": "text"})
    texts = load_unlabeled(dc, set(), seed=0)
    assert 8000 < len(texts) <= 4200 + 5190
