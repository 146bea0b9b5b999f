"""The training pipeline's Prefect parameters: typed overrides of params.yaml sections.

Each model mirrors a part of one params.yaml section (same names, same meaning; see
tasks/config.py). Every field is optional and None means "keep params.yaml's value", so a run
with no parameters is exactly `dvc repro`, and the Prefect UI's Custom run form shows only the
knobs a person is likely to turn, with their descriptions and allowed values.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.embedded import TASKS as EMBEDDED_TASKS

_KEEP = "empty: keep params.yaml's value"


class Section(BaseModel):
    """A params.yaml section's overrides; unknown fields are rejected like unknown params keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def overrides(self) -> dict:
        """The fields that were set, as a params.yaml fragment."""
        return self.model_dump(exclude_none=True)


class BaseParams(Section):
    """base: shared by every stage that touches a model."""

    seed: int | None = Field(None, description=f"random seed of splits, heads and batches ({_KEEP})")
    max_length: int | None = Field(None, ge=8, le=512, description=f"tokens per text ({_KEEP})")


class IngestParams(Section):
    """ingest: which labelled data."""

    source: Literal["embedded", "hf", "files"] | None = Field(None, description=f"data source ({_KEEP})")
    embedded: Literal[tuple(EMBEDDED_TASKS)] | None = Field(  # type: ignore[valid-type]
        None, description=f"which embedded dataset, with source=embedded ({_KEEP})")
    hf_name: str | None = Field(None, description=f"Hugging Face dataset, with source=hf ({_KEEP})")
    max_rows: int | None = Field(None, ge=0, description=f"stratified subsample of the rows; 0: all ({_KEEP})")


class TeacherParams(Section):
    """teacher: the model to distil from and its gate."""

    model: str | None = Field(None, description=f"embedded package, local folder or HF model id ({_KEEP})")
    epochs: int | None = Field(None, ge=0, description=f"fine-tuning epochs ({_KEEP})")
    lr: float | None = Field(None, gt=0, description=f"learning rate ({_KEEP})")
    min_accuracy: float | None = Field(None, ge=0, le=1, description=f"gate: test accuracy at least ({_KEEP})")


class DistillParams(Section):
    """distill: the student and the distillation loss."""

    temperature: float | None = Field(None, gt=0, description=f"softmax temperature of the KD loss ({_KEEP})")
    alpha_kd: float | None = Field(None, ge=0, description=f"weight of the soft-target loss ({_KEEP})")
    alpha_ce: float | None = Field(None, ge=0, description=f"weight of the hard-label loss ({_KEEP})")
    alpha_cos: float | None = Field(None, ge=0, description=f"weight of the hidden-state cosine loss ({_KEEP})")
    student_layers: int | None = Field(None, ge=0, description=f"student depth; 0: half the teacher's ({_KEEP})")
    epochs: int | None = Field(None, ge=0, description=f"distillation epochs ({_KEEP})")
    lr: float | None = Field(None, gt=0, description=f"learning rate ({_KEEP})")


class FinetuneParams(Section):
    """finetune: optional supervised fine-tuning of the distilled student."""

    method: Literal["full", "lora", "none"] | None = Field(None, description=f"fine-tuning method ({_KEEP})")
    epochs: int | None = Field(None, ge=0, description=f"fine-tuning epochs ({_KEEP})")


class EvaluateParams(Section):
    """evaluate: the retention gate and the speed measurement."""

    min_retention: float | None = Field(None, ge=0, description=f"gate: student/teacher metric at least ({_KEEP})")
    metric: Literal["accuracy", "f1_macro"] | None = Field(
        None, description=f"the figure gates and model choice use; f1_macro for imbalanced tasks ({_KEEP})")
    latency_runs: int | None = Field(None, ge=1, description=f"timed single-example runs ({_KEEP})")


class PromoteParams(Section):
    """promote: when the student replaces the production model."""

    tolerance: float | None = Field(None, ge=-1, le=1, description=(
        f"accuracy the student may lose against production; negative: a required gain ({_KEEP})"))


def to_overrides(sections: dict[str, Section | dict | None]) -> dict:
    """The nested params.yaml overrides of a run's parameters, empty sections left out.

    Args:
        sections: params section name -> its parameter model (or a plain dict, or None).

    Returns:
        e.g. {"distill": {"temperature": 4.0}}.
    """
    out = {}
    for name, section in sections.items():
        values = section.overrides() if isinstance(section, Section) else {
            k: v for k, v in (section or {}).items() if v is not None}
        if values:
            out[name] = values
    return out
