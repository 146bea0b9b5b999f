"""Code tests of params.yaml loading: typed sections, and one clear line that names the key or
the file for each kind of mistake, on the command line too."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.cli import main
from tasks.infra.config import Config, DistillConfig, load_config, to_dict
from tasks.infra.errors import ConfigError

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def write_params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def with_section(section: str, **values) -> str:
    """The repo's params.yaml with keys of one section replaced or added."""
    data = yaml.safe_load(REPO_PARAMS.read_text())
    data[section].update(values)
    return yaml.safe_dump(data)


def test_repo_params_load():
    cfg = load_config(REPO_PARAMS)
    assert isinstance(cfg, Config) and isinstance(cfg.distill, DistillConfig)
    data = yaml.safe_load(REPO_PARAMS.read_text())
    # Every value in the file arrives, with its type: the file is read, not the defaults.
    loaded = to_dict(cfg)
    for section, values in data.items():
        for key, value in (values or {}).items():
            assert loaded[section][key] == value, f"{section}.{key}"
    assert isinstance(cfg.distill.temperature, float) and isinstance(cfg.teacher.epochs, int)


def test_empty_file_gives_the_defaults(tmp_path):
    assert load_config(write_params(tmp_path, "")) == Config()


@pytest.mark.parametrize("text, names", [
    (with_section("distill", temprature=4), "distill.temprature"),
    ("disitll:\n  temperature: 3\n", "disitll"),
])
def test_unknown_key_is_named(tmp_path, text, names):
    path = write_params(tmp_path, text)
    with pytest.raises(ConfigError, match=f"unknown key '{names}'") as err:
        load_config(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("section, key, value", [
    ("teacher", "epochs", "three"),
    ("teacher", "epochs", 2.5),
    ("teacher", "epochs", True),
    ("distill", "temperature", "hot"),
    ("distill", "layer_map", "0,2,4"),
    ("distill", "cache", "yes"),
    ("ingest", "max_rows", "all"),
])
def test_wrong_type_names_the_key(tmp_path, section, key, value):
    with pytest.raises(ConfigError) as err:
        load_config(write_params(tmp_path, with_section(section, **{key: value})))
    assert f"{section}.{key}" in str(err.value) and repr(value) in str(err.value)


def test_wrong_item_type_in_a_list_names_the_item(tmp_path):
    with pytest.raises(ConfigError, match=r"distill\.layer_map\[1\]"):
        load_config(write_params(tmp_path, with_section("distill", layer_map=[0, "two"])))


@pytest.mark.parametrize("section, key, value", [
    ("finetune", "method", "qlora"),
    ("base", "device", "tpu"),
    ("distill", "hidden_loss", "attention"),
])
def test_invalid_choice_names_the_key(tmp_path, section, key, value):
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: expected one of .*{value}"):
        load_config(write_params(tmp_path, with_section(section, **{key: value})))


def test_lossless_conversions_are_accepted(tmp_path):
    cfg = load_config(write_params(tmp_path, with_section("distill", temperature=3, layer_map=[0, 2])))
    assert cfg.distill.temperature == 3.0 and isinstance(cfg.distill.temperature, float)
    assert cfg.distill.layer_map == [0, 2]
    # YAML reads `finetune: true` as a bool; the field is a string choice.
    assert load_config(write_params(tmp_path, with_section("teacher", finetune=True))).teacher.finetune == "true"


def test_yaml_1_1_readings_are_taken_as_written(tmp_path):
    path = write_params(tmp_path, "teacher:\n  lr: 5e-4\n  finetune: true\nbase:\n")
    data = yaml.safe_load(path.read_text())
    assert data["teacher"] == {"lr": "5e-4", "finetune": True} and data["base"] is None  # what YAML hands over
    cfg = load_config(path)
    assert cfg.teacher.lr == 5e-4 and cfg.teacher.finetune == "true" and cfg.base == Config().base


@pytest.mark.parametrize("values, line", [
    ({"ingest": {"val_size": 0.5, "test_size": 0.6}},
     "ingest.test_size: expected val_size + test_size < 1, got 0.5 + 0.6"),
    ({"retrain": {"new_val_size": 0.8}}, "retrain.new_test_size: expected new_val_size + new_test_size < 1"),
    ({"distill": {"alpha_kd": 0, "alpha_ce": 0.0, "alpha_cos": 0}},
     "distill.alpha_kd: alpha_kd, alpha_ce and alpha_cos are all 0"),
    ({"ingest": {"source": "hf"}}, "ingest.hf_name: required when ingest.source is 'hf'"),
    ({"ingest": {"source": "files"}}, "ingest.files.train: required when ingest.source is 'files'"),
    ({"distill": {"unlabeled": {"source": "web"}}},
     "distill.unlabeled.source: expected embedded, file or null, got 'web'"),
    ({"schedule": {"retrain": "0 4 *"}}, "schedule.retrain: expected a 5-field cron string such as '0 3 * * 0'"),
    ({"drift": {"strong": ["text", "vibes"]}}, "drift.strong[1]: expected one of ['confidence', 'descriptors', "),
    ({"base": "cpu"}, "base: expected a mapping, got 'cpu'"),
])
def test_rules_across_keys_name_the_key_in_one_line(values, line):
    with pytest.raises(ConfigError) as err:
        load_config(REPO_PARAMS, values)
    assert str(err.value).startswith(f"{REPO_PARAMS}: {line}") and "\n" not in str(err.value), str(err.value)


def test_missing_params_file_is_named(tmp_path):
    missing = tmp_path / "nope" / "params.yaml"
    with pytest.raises(ConfigError, match="params file not found") as err:
        load_config(missing)
    assert str(missing) in str(err.value)


def test_overrides_parse_yaml_values():
    cfg = load_config(REPO_PARAMS, ["distill.temperature=4", "distill.layer_map=[0, 3]", "teacher.finetune=false",
                                    "ingest.max_rows=null", "base.device=cpu"])
    assert cfg.distill.temperature == 4.0 and isinstance(cfg.distill.temperature, float)
    assert cfg.distill.layer_map == [0, 3]
    assert cfg.teacher.finetune == "false" and cfg.ingest.max_rows is None and cfg.base.device == "cpu"
    # Untouched keys keep the file's values.
    assert cfg.distill.alpha_kd == load_config(REPO_PARAMS).distill.alpha_kd


@pytest.mark.parametrize("override, names", [
    ("distill.temprature=4", "distill.temprature"),
    ("distill.temperature=hot", "distill.temperature"),
    ("distill.temperature", "distill.temperature"),  # no '='
    ("finetune.method=qlora", "finetune.method"),
])
def test_bad_overrides_are_named(override, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load_config(REPO_PARAMS, [override])


@pytest.mark.parametrize("override", ["distill.layer_map=[0, 2", "distill.temperature={"])
def test_malformed_override_value_is_a_config_error(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        load_config(REPO_PARAMS, [override])


@pytest.mark.parametrize("text, names", [
    ("distill:\n  temperature: 2.0\n  alpha_kd: [0.5\nteacher:\n  epochs: 3\n", "line 4"),
    ("base:\n  seed: 1\n\tmax_length: 64\n", "line 3"),
])
def test_bad_yaml_names_the_line(tmp_path, text, names):
    path = write_params(tmp_path, text)
    with pytest.raises(ConfigError, match=names) as err:
        load_config(path)
    assert str(path) in str(err.value) and "not valid YAML" in str(err.value)


@pytest.mark.parametrize("text", ["just a string\n", "- base\n- distill\n", "42\n"])
def test_top_level_that_is_not_a_mapping_is_a_config_error(tmp_path, text):
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write_params(tmp_path, text))


@pytest.mark.parametrize("section, key, value", [
    ("distill", "temperature", 0),
    ("distill", "alpha_ce", -0.5),
    ("ingest", "val_size", 1.5),
])
def test_out_of_range_values_are_named(tmp_path, section, key, value):
    with pytest.raises(ConfigError, match=rf"{section}\.{key}"):
        load_config(write_params(tmp_path, with_section(section, **{key: value})))


@pytest.mark.parametrize("section, key, value", [
    ("teacher", "batch_size", 0),
    ("finetune", "lr", 0.0),
    ("distill", "epochs", -1),
])
def test_out_of_range_training_values_are_named(tmp_path, section, key, value):
    with pytest.raises(ConfigError, match=rf"{section}\.{key}"):
        load_config(write_params(tmp_path, with_section(section, **{key: value})))


@pytest.mark.parametrize("text", [
    with_section("distill", temprature=4),
    with_section("teacher", epochs="three"),
    with_section("finetune", method="qlora"),
    "distill:\n  temperature: [2.0\n",
])
def test_cli_reports_a_bad_params_file_in_one_line(tmp_path, capsys, text):
    bad = write_params(tmp_path, text)
    assert main(["--params", str(bad), "--root", str(tmp_path), "ingest"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error:") and str(bad) in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "data").exists()  # the stage never ran


def test_cli_reports_a_missing_params_file(tmp_path, capsys):
    assert main(["--params", str(tmp_path / "missing.yaml"), "ingest"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "missing.yaml" in err[0]


def test_cli_reports_a_params_file_that_is_not_utf8(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_bytes(REPO_PARAMS.read_bytes().replace(b"# One section", "# Une s\u00e9ction".encode("latin-1"), 1))
    assert main(["--params", str(bad), "--root", str(tmp_path), "ingest"]) == 2
    captured = capsys.readouterr()
    expected = f"error: {bad}: byte 7 (0xe9) is not UTF-8; expected a UTF-8 text file (save it as UTF-8)"
    assert captured.err.splitlines() == [expected], captured.err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("override, command, names", [
    ("api.port=99999", "api", "api.port"),
    ("api.port=0", "api", "api.port"),
    ("api.batch_wait_ms=-5", "api", "api.batch_wait_ms"),
    ("base.max_length=0", "validate", "base.max_length"),
    ("distill.student_layers=-1", "validate", "distill.student_layers"),
    ("distill.layer_map=[-1, 2]", "validate", "distill.layer_map"),
    ("ingest.val_size=0.95", "validate", "ingest.test_size"),
    ("evaluate.latency_runs=0", "evaluate", "evaluate.latency_runs"),
])
def test_cli_checks_values_before_any_work(tmp_path, capsys, monkeypatch, override, command, names):
    import uvicorn

    def serve(*args, **kwargs):
        raise AssertionError("the API started serving with a bad parameter")
    monkeypatch.setattr(uvicorn, "run", serve)
    assert main(["--params", str(REPO_PARAMS), "--root", str(tmp_path), "-S", override, command]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], captured.err
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()


@pytest.mark.parametrize("override, names", [
    ("distill.student_layers=4", "distill.student_layers=4: the teacher"),  # the tiny teacher has 4 layers
    ("distill.layer_map=[0, 2, 9]", "distill.layer_map: layer map [0, 2, 9]: indices must be in 0..3"),
    ("base.max_length=1000", "base.max_length=1000: above the position limit of teacher.model="),
])
def test_cli_checks_params_against_the_teacher_before_any_work(tmp_path, capsys, tiny_teacher_dir, override, names):
    code = main(["--params", str(REPO_PARAMS), "--root", str(tmp_path), "-S", f"teacher.model={tiny_teacher_dir}",
                 "-S", override, "validate"])
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {names}"), captured.err
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()
