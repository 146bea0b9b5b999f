"""The training pipeline's Prefect parameters: typed overrides of params.yaml sections, derived
from the schema (tasks/infra/config.py).

`FORM` picks the keys a person is likely to turn (a Custom run form of every params.yaml key
would be unreadable); each field's type, bounds, allowed values and description come from the
schema, so the form and the CLI cannot disagree. Every field is optional and empty (None) keeps
params.yaml's value, so a run with no parameters is exactly `dvc repro`. The values a run sets are
written into params.yaml and checked there by the schema, cross-field rules included
(tasks/infra/params_file.py `apply_overrides`).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from tasks.infra.config import SECTIONS, load_config
from tasks.infra.errors import ConfigError

_KEEP = "empty: keep params.yaml's value"

# The Custom run form: params section -> the keys it shows, in this order.
FORM: dict[str, tuple[str, ...]] = {
    "base": ("seed", "max_length"),
    "ingest": ("source", "embedded", "hf_name", "max_rows"),
    "teacher": ("model", "epochs", "lr", "min_accuracy", "zero_shot"),
    "distill": ("temperature", "alpha_kd", "alpha_ce", "alpha_cos", "student_layers", "epochs", "lr", "student",
                "static_dims", "prune_vocab"),
    "finetune": ("method", "epochs"),
    "evaluate": ("min_retention", "metric", "latency_runs"),
    "promote": ("tolerance",),
}


class Section(BaseModel):
    """A params.yaml section's overrides; unknown fields are rejected like unknown params keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def overrides(self) -> dict:
        """The fields that were set, as a params.yaml fragment."""
        return self.model_dump(exclude_none=True)


def _not_none(annotation: Any) -> Any:
    """`int | None` -> `int`: in the form, None is the "keep params.yaml" of every field."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]
    return annotation


def form_section(section: str, keys: Iterable[str]) -> type[Section]:
    """The form model of some keys of one params section: the schema's fields, each optional.

    Args:
        section: a params.yaml section, e.g. "distill".
        keys: the keys of that section the form shows.

    Returns:
        A `Section` model named after the section (`DistillParams`), every field None by default.
    """
    schema = SECTIONS[section]
    fields = {}
    for key in keys:
        info = schema.model_fields[key]
        annotation = _not_none(info.annotation)
        if info.metadata:  # bounds, and the schema's readings of YAML values
            annotation = Annotated[(annotation, *info.metadata)]
        fields[key] = (annotation | None, Field(None, description=f"{info.description} ({_KEEP})"))
    return create_model(f"{section.title()}Params", __base__=Section, __module__=__name__,
                        __doc__=schema.__doc__, **fields)


BaseParams = form_section("base", FORM["base"])
IngestParams = form_section("ingest", FORM["ingest"])
TeacherParams = form_section("teacher", FORM["teacher"])
DistillParams = form_section("distill", FORM["distill"])
FinetuneParams = form_section("finetune", FORM["finetune"])
EvaluateParams = form_section("evaluate", FORM["evaluate"])
PromoteParams = form_section("promote", FORM["promote"])


def check_overrides(overrides: dict, params_file: Path) -> None:
    """Nested overrides for a training-pipeline run, checked as the run will take them, before it starts.

    Args:
        overrides: e.g. {"distill": {"temperature": 4}} (tasks.infra.config.parse_overrides of `-S` items).
        params_file: the workspace's params.yaml, which the run's values are written into.

    Raises:
        ConfigError: one line naming the key: unknown, mistyped, out of range or against a rule across
            keys (the schema's checks), or a params key the form does not show.
    """
    load_config(params_file, overrides)
    for section, values in overrides.items():
        for key in values:
            if key not in FORM.get(section, ()):
                shown = ", ".join(FORM[section]) if section in FORM else f"sections {', '.join(FORM)}"
                raise ConfigError(f"{section}.{key}: not a training-pipeline parameter ({shown}); "
                                  "set it in params.yaml")


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
