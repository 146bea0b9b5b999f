"""Code tests of the parameter schema (tasks/infra/config.py) as the one home of every key: params.yaml
carries exactly its keys, its defaults obey its own bounds, and every key's type and bounds reject
a bad value in one line that names the key."""

from __future__ import annotations

import typing
from pathlib import Path

import annotated_types
import pytest
import yaml

from tasks.infra.config import CHOICES, SECTIONS, Config, bounds, choices, load_config, schema_field
from tasks.infra.errors import ConfigError

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
KEYS = [f"{section}.{name}" for section, model in SECTIONS.items() for name in model.model_fields]


def test_params_yaml_has_exactly_the_schemas_keys():
    data = yaml.safe_load(REPO_PARAMS.read_text())
    assert set(data) == set(SECTIONS), "params.yaml's sections differ from the schema's"
    for section, model in SECTIONS.items():
        missing = set(model.model_fields) - set(data[section])
        extra = set(data[section]) - set(model.model_fields)
        assert not missing and not extra, f"{section}: missing from params.yaml {missing}, not in the schema {extra}"
    load_config(REPO_PARAMS)  # and its values pass the schema


def test_the_schemas_defaults_are_params_yamls_values():
    """The schema's default of every key is what params.yaml says (issue 26: seven disagreed, e.g. distill.lr
    5e-5 in the schema and 1e-4 in the file), so a key a params file leaves out means what params.yaml means."""
    defaults, params = Config().model_dump(), load_config(REPO_PARAMS).model_dump()  # values as validated
    differ = [f"{section}.{name}: schema {defaults[section][name]!r}, params.yaml {params[section][name]!r}"
              for section, model in SECTIONS.items() for name in model.model_fields
              if defaults[section][name] != params[section][name]]
    assert differ == []


def test_every_key_is_described():
    for key in KEYS:
        assert (schema_field(key).description or "").strip(), f"{key}: no description in the schema"


def test_the_defaults_obey_their_own_bounds():
    # Pydantic does not check defaults; validating them as data does.
    assert Config.model_validate(Config().model_dump()) == Config()


def test_choices_are_read_from_the_schema():
    assert CHOICES["inference.variant"] == {"auto", "torch-fp32", "torch-int8", "torch-bf16", "onnx-fp32", "onnx-int8"}
    assert CHOICES["drift.strong"] == set(choices(schema_field("drift.strong")))
    assert "distill.temperature" not in CHOICES and choices(schema_field("distill.temperature")) is None
    assert bounds(schema_field("api.port")) == "a value in [1, 65535]"
    assert bounds(schema_field("distill.temperature")) == "> 0" and bounds(schema_field("distill.cache")) is None


def outside(key: str) -> list:
    """Values just outside each of a key's bounds."""
    field, out = schema_field(key), []
    step = 1 if int in (field.annotation, *typing.get_args(field.annotation)) else 0.5
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge):
            out.append(rule.ge - step)
        elif isinstance(rule, annotated_types.Gt):
            out.append(rule.gt)
        elif isinstance(rule, annotated_types.Le):
            out.append(rule.le + step)
        elif isinstance(rule, annotated_types.Lt):
            out.append(rule.lt)
    return out


BOUNDED = [(key, value) for key in KEYS for value in outside(key)]


def test_most_keys_are_bounded():
    assert len({key for key, _ in BOUNDED}) > 60, "the bounds moved out of the schema?"


def assert_one_line_naming(err: pytest.ExceptionInfo, key: str) -> None:
    message = str(err.value)
    assert "\n" not in message and "validation error" not in message and "pydantic" not in message, message
    assert message.startswith(f"{REPO_PARAMS}: {key}"), message


@pytest.mark.parametrize("key, value", BOUNDED, ids=[f"{k}={v}" for k, v in BOUNDED])
def test_every_bound_rejects_in_one_line_naming_the_key(key, value):
    with pytest.raises(ConfigError) as err:
        load_config(REPO_PARAMS, {key.split(".")[0]: {key.split(".")[1]: value}})
    assert_one_line_naming(err, key)
    assert f"got {value!r}" in str(err.value)


@pytest.mark.parametrize("key", KEYS)
def test_every_key_rejects_a_wrong_type_in_one_line_naming_it(key):
    section, name = key.split(".")
    with pytest.raises(ConfigError) as err:
        load_config(REPO_PARAMS, {section: {name: [[[1]]]}})  # a list of lists of lists fits no key (sweep.layer_maps takes [[1]])
    assert_one_line_naming(err, key)
