"""The distillation loss: soft-target KL at a temperature, hard-label CE, hidden-state cosine.

    loss = alpha_kd · KL(softmax(t/T) ‖ softmax(s/T)) · T²
         + alpha_ce · CE(s, labels)
         + alpha_cos · (1 − cos(h_s, h_t))

The T² factor keeps the soft-target gradients at the same scale as the hard-label ones when T
changes (Hinton et al., 2015): the gradient of the softened KL shrinks as 1/T².
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tasks.core.data import IGNORE_LABEL


@dataclass(frozen=True)
class LossWeights:
    """The weights and temperature of the distillation loss."""

    temperature: float = 2.0
    alpha_kd: float = 0.5
    alpha_ce: float = 0.5
    alpha_cos: float = 0.0


def soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) · T², averaged over the batch.

    Args:
        student_logits: [B, C].
        teacher_logits: [B, C]; treated as constants (no gradient flows into them).
        temperature: T > 0.

    Returns:
        A scalar tensor.
    """
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def hard_label_ce(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the labelled rows only (labels == IGNORE_LABEL are skipped).

    Args:
        student_logits: [B, C].
        labels: [B] int64.

    Returns:
        A scalar tensor; zero (with a gradient path) when no row of the batch has a label.
    """
    if not (labels != IGNORE_LABEL).any():
        return student_logits.sum() * 0.0
    return F.cross_entropy(student_logits.float(), labels, ignore_index=IGNORE_LABEL)


def hidden_cosine(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of 1 − cos(h_s, h_t) over mapped layers (and tokens, when given per token).

    Args:
        student_hidden: [B, K, H] pooled, or [B, K, L, H] per token.
        teacher_hidden: same shape; treated as constants.
        mask: [B, L] attention mask, for per-token states only.

    Returns:
        A scalar tensor.
    """
    cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.detach().float(), dim=-1)
    if mask is None:
        return (1 - cos).mean()
    weights = mask[:, None, :].to(cos.dtype).expand_as(cos)  # [B, K, L]
    return ((1 - cos) * weights).sum() / weights.sum().clamp(min=1)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, labels: torch.Tensor,
                      weights: LossWeights, student_hidden: torch.Tensor | None = None,
                      teacher_hidden: torch.Tensor | None = None,
                      mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted sum of the three terms; terms whose weight is 0 are not computed.

    Args:
        student_logits: [B, C].
        teacher_logits: [B, C], or None when alpha_kd is 0.
        labels: [B], IGNORE_LABEL for unlabelled rows.
        weights: the alphas and the temperature.
        student_hidden, teacher_hidden: see `hidden_cosine`; needed when alpha_cos > 0.
        mask: see `hidden_cosine`.

    Returns:
        (loss, parts): the scalar loss, and each term's detached value (kept as tensors so a GPU
        step does not wait on a host sync; the loop reads them when it logs).
    """
    total = student_logits.new_zeros((), dtype=torch.float32)
    parts: dict[str, torch.Tensor] = {}
    if weights.alpha_kd > 0:
        kd = soft_target_kl(student_logits, teacher_logits, weights.temperature)
        total = total + weights.alpha_kd * kd
        parts["kd"] = kd.detach()
    if weights.alpha_ce > 0:
        ce = hard_label_ce(student_logits, labels)
        total = total + weights.alpha_ce * ce
        parts["ce"] = ce.detach()
    if weights.alpha_cos > 0:
        cos = hidden_cosine(student_hidden, teacher_hidden, mask)
        total = total + weights.alpha_cos * cos
        parts["cos"] = cos.detach()
    return total, parts


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: [B, L, H] with mask [B, L] → [B, H]."""
    m = mask[..., None].to(hidden.dtype)
    return (hidden * m).sum(-2) / m.sum(-2).clamp(min=1)
