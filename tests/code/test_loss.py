"""Code tests of the distillation loss: each term against a hand computation, and where the
gradients go."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tasks.core.data import IGNORE_LABEL
from tasks.core.loss import LossWeights, distillation_loss, hard_label_ce, hidden_cosine, mean_pool, soft_target_kl
from tests.conftest import make_tiny_bert

STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 0.5, 0.0], [1.0, 1.0, 1.5]]


def softmax(row: list[float], temperature: float) -> list[float]:
    exps = [math.exp(x / temperature) for x in row]
    return [e / sum(exps) for e in exps]


def hand_kl(student: list[list[float]], teacher: list[list[float]], temperature: float) -> float:
    """sum_c p_t log(p_t / p_s), averaged over rows, without the T² factor."""
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        p_s, p_t = softmax(s_row, temperature), softmax(t_row, temperature)
        total += sum(t * math.log(t / s) for s, t in zip(p_s, p_t))
    return total / len(student)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_soft_target_kl_matches_hand_computation(temperature):
    got = soft_target_kl(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature).item()
    assert got == pytest.approx(hand_kl(STUDENT, TEACHER, temperature) * temperature**2, rel=1e-5)


def test_soft_target_kl_scales_by_t_squared():
    s, t = torch.tensor(STUDENT), torch.tensor(TEACHER)
    at_1, at_4 = soft_target_kl(s, t, 1.0).item(), soft_target_kl(s, t, 4.0).item()
    # T=4 is T² × the KL of the T-softened distributions, not the KL itself...
    assert at_4 == pytest.approx(16.0 * hand_kl(STUDENT, TEACHER, 4.0), rel=1e-5)
    assert at_4 != pytest.approx(hand_kl(STUDENT, TEACHER, 4.0), rel=0.5)
    # ...and T=1 carries no factor at all; softening lowers the raw KL, so the two differ.
    assert at_1 == pytest.approx(hand_kl(STUDENT, TEACHER, 1.0), rel=1e-5)
    assert at_1 != pytest.approx(at_4, rel=0.05)


def test_soft_target_kl_is_zero_for_equal_logits_and_positive_otherwise():
    s = torch.tensor(STUDENT)
    assert soft_target_kl(s, s.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_target_kl(s, torch.tensor(TEACHER), 2.0).item() > 0.01


def test_hard_label_ce_ignores_unlabelled_rows():
    logits = torch.tensor(STUDENT + [[5.0, -5.0, 0.0]])
    labels = torch.tensor([2, IGNORE_LABEL, 1])
    rows = [(0, 2), (2, 1)]
    expected = np.mean([-math.log(softmax(logits[r].tolist(), 1.0)[c]) for r, c in rows])
    assert hard_label_ce(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    # The ignored row's logits do not matter.
    changed = logits.clone()
    changed[1] = torch.tensor([100.0, -100.0, 7.0])
    assert hard_label_ce(changed, labels).item() == pytest.approx(expected, rel=1e-5)


def test_hard_label_ce_all_ignored_is_zero_and_backpropagates():
    logits = torch.tensor(STUDENT, requires_grad=True)
    loss = hard_label_ce(logits, torch.full((2,), IGNORE_LABEL))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.count_nonzero(logits.grad) == 0


def test_hidden_cosine_identical_and_opposite():
    h = torch.randn(3, 2, 8, generator=torch.Generator().manual_seed(0))  # [B, K, H] pooled
    assert hidden_cosine(h, h.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert hidden_cosine(h, -h).item() == pytest.approx(2.0, abs=1e-6)
    # Scale does not matter to a cosine.
    assert hidden_cosine(h, 3.0 * h).item() == pytest.approx(0.0, abs=1e-6)


def test_hidden_cosine_token_mask_excludes_padding():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 2, 4, 8, generator=g), torch.randn(2, 2, 4, 8, generator=g)  # [B, K, L, H]
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    base = hidden_cosine(s, t, mask).item()
    for row, pos in [(0, 3), (1, 2), (1, 3)]:
        t2, s2 = t.clone(), s.clone()
        t2[row, :, pos] = torch.randn(2, 8, generator=g) * 10
        s2[row, :, pos] = -t2[row, :, pos]
        assert hidden_cosine(s2, t2, mask).item() == pytest.approx(base, abs=1e-6)
    # A real token does count.
    t2 = t.clone()
    t2[0, :, 0] = s[0, :, 0]
    assert hidden_cosine(s, t2, mask).item() < base - 1e-3
    # Hand value: mean of 1 - cos over the 5 real tokens of each of the 2 layers.
    cos = torch.nn.functional.cosine_similarity(s, t, dim=-1)  # [B, K, L]
    real = [(1 - cos[b, k, l]).item() for b in range(2) for k in range(2) for l in range(4) if mask[b, l]]
    assert len(real) == 10 and base == pytest.approx(np.mean(real), rel=1e-5)


def test_mean_pool_ignores_padding():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    expected = torch.tensor([[1.0, 2.0], [6.0, 7.0]])
    assert torch.equal(mean_pool(hidden, mask), expected)


def test_distillation_loss_is_the_weighted_sum_of_its_parts():
    g = torch.Generator().manual_seed(2)
    s, t = torch.tensor(STUDENT), torch.tensor(TEACHER)
    labels = torch.tensor([0, 2])
    sh, th = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    w = LossWeights(temperature=3.0, alpha_kd=0.7, alpha_ce=0.2, alpha_cos=0.4)
    total, parts = distillation_loss(s, t, labels, w, sh, th)
    assert set(parts) == {"kd", "ce", "cos"}
    assert parts["kd"].item() == pytest.approx(soft_target_kl(s, t, 3.0).item(), rel=1e-6)
    assert parts["ce"].item() == pytest.approx(hard_label_ce(s, labels).item(), rel=1e-6)
    assert parts["cos"].item() == pytest.approx(hidden_cosine(sh, th).item(), rel=1e-6)
    expected = 0.7 * parts["kd"] + 0.2 * parts["ce"] + 0.4 * parts["cos"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(not p.requires_grad for p in parts.values())


@pytest.mark.parametrize("alphas, present", [
    ((0.0, 1.0, 0.0), {"ce"}),
    ((1.0, 0.0, 0.0), {"kd"}),
    ((0.5, 0.0, 0.5), {"kd", "cos"}),
])
def test_distillation_loss_leaves_out_zero_weighted_terms(alphas, present):
    s, labels = torch.tensor(STUDENT), torch.tensor([0, 2])
    # With alpha 0 the inputs of a term may be absent altogether (no teacher, no hidden states).
    t = torch.tensor(TEACHER) if alphas[0] > 0 else None
    h = torch.ones(2, 1, 4) if alphas[2] > 0 else None
    total, parts = distillation_loss(s, t, labels, LossWeights(2.0, *alphas), h, -h if h is not None else None)
    assert set(parts) == present
    weights = dict(zip(("kd", "ce", "cos"), alphas))
    assert total.item() == pytest.approx(sum(weights[k] * v.item() for k, v in parts.items()), rel=1e-6)


def test_distillation_gradients_reach_only_the_student():
    teacher, student = make_tiny_bert(50, layers=2, seed=0), make_tiny_bert(50, layers=2, seed=1)
    assert all(p.requires_grad for p in teacher.parameters())
    ids = torch.randint(5, 50, (3, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    t_out = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    s_out = student(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert t_out.logits.requires_grad  # built with autograd on: only the loss can stop the flow
    t_hidden = torch.stack(t_out.hidden_states[1:], dim=1)  # [B, K, L, H]
    s_hidden = torch.stack(s_out.hidden_states[1:], dim=1)
    loss, _ = distillation_loss(s_out.logits, t_out.logits, torch.tensor([0, IGNORE_LABEL, 1]),
                                LossWeights(2.0, 0.5, 0.5, 0.5), s_hidden, t_hidden, mask)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    grads = [p.grad for p in student.parameters() if p.requires_grad]
    assert sum(g is not None and bool(torch.count_nonzero(g)) for g in grads) > 0.9 * len(grads)
    assert student.classifier.weight.grad.abs().sum() > 0
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
