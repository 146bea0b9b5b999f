"""Code tests of student construction: the default layer map and copying teacher layers."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_tiny_bert
from tasks.core.student import build_student, check_layer_map, default_layer_map, num_layers


@pytest.mark.parametrize("n_teacher, n_student, expected", [
    (12, 6, [0, 2, 4, 7, 9, 11]),  # DistilBERT's map: the top teacher layer is kept
    (6, 3, [0, 2, 4]),
    (4, 2, [0, 3]),
    (8, 4, [0, 2, 5, 7]),
    (6, 6, [0, 1, 2, 3, 4, 5]),
    (4, 4, [0, 1, 2, 3]),
    (5, 2, [0, 4]),  # not a divisor: first and last
    (7, 3, [0, 3, 6]),
])
def test_default_layer_map_known_values(n_teacher, n_student, expected):
    assert default_layer_map(n_teacher, n_student) == expected


@pytest.mark.parametrize("n_teacher", range(1, 25))
def test_default_layer_map_is_always_a_valid_map(n_teacher):
    for n_student in range(1, n_teacher + 1):
        layer_map = default_layer_map(n_teacher, n_student)
        assert len(layer_map) == n_student
        assert layer_map[0] == 0
        check_layer_map(layer_map, n_teacher)  # in range and strictly increasing, or it raises


@pytest.mark.parametrize("n_teacher, n_student", [(4, 0), (4, 5), (6, -1), (0, 0)])
def test_default_layer_map_rejects_impossible_sizes(n_teacher, n_student):
    with pytest.raises(ValueError):
        default_layer_map(n_teacher, n_student)


@pytest.mark.parametrize("layer_map", [[], [0, 4], [-1, 2], [2, 1], [1, 1]])
def test_build_student_rejects_bad_layer_maps(layer_map):
    with pytest.raises(ValueError):
        build_student(make_tiny_bert(40, layers=4), layer_map)


@pytest.fixture(scope="module")
def teacher_and_student():
    teacher = make_tiny_bert(60, layers=4, seed=3)
    return teacher, build_student(teacher, [0, 3])


def test_build_student_copies_mapped_layers(teacher_and_student):
    teacher, student = teacher_and_student
    assert num_layers(student) == 2 and student.config.num_hidden_layers == 2
    assert len(student.bert.encoder.layer) == 2
    assert num_layers(teacher) == 4  # the teacher's config is not changed
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for i, src in enumerate([0, 3]):
        prefix = f"bert.encoder.layer.{i}."
        keys = [k for k in s_state if k.startswith(prefix)]
        assert len(keys) >= 16  # attention q/k/v/out, LayerNorms, feed-forward: weights and biases
        for key in keys:
            t_key = key.replace(prefix, f"bert.encoder.layer.{src}.")
            assert torch.equal(s_state[key], t_state[t_key]), key
    # Layers are distinct in a random teacher, so copying the wrong one would show.
    assert not torch.equal(s_state["bert.encoder.layer.1.attention.self.query.weight"],
                           t_state["bert.encoder.layer.1.attention.self.query.weight"])


def test_build_student_copies_everything_else(teacher_and_student):
    teacher, student = teacher_and_student
    t_state, s_state = teacher.state_dict(), student.state_dict()
    others = [k for k in s_state if ".encoder.layer." not in k]
    assert any(k.startswith("bert.embeddings.") for k in others)
    assert {"classifier.weight", "classifier.bias"} <= set(others)
    for key in others:
        assert torch.equal(s_state[key], t_state[key]), key
    assert student.config.hidden_size == teacher.config.hidden_size
    assert student.config.id2label == teacher.config.id2label
    assert student.training


def test_build_student_outputs_match_a_teacher_truncated_the_same_way(teacher_and_student):
    teacher, student = teacher_and_student
    ids = torch.randint(5, 60, (2, 7), generator=torch.Generator().manual_seed(0))
    teacher.eval(), student.eval()
    with torch.no_grad():
        t_hidden = teacher(input_ids=ids, output_hidden_states=True).hidden_states
        s_hidden = student(input_ids=ids, output_hidden_states=True).hidden_states
    student.train()
    # Same embeddings and same first layer: the first two hidden states agree exactly.
    assert torch.allclose(s_hidden[0], t_hidden[0]) and torch.allclose(s_hidden[1], t_hidden[1], atol=1e-6)


def test_build_student_is_independent_of_the_teacher():
    teacher = make_tiny_bert(60, layers=4, seed=4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = build_student(teacher, [0, 3])
    assert student is not teacher
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(student.classifier.weight, teacher.classifier.weight)
