"""Two params mistakes that were silent or misnamed: a key written twice in params.yaml (the last one
won), and an override with an empty key (`-S =3` said "unknown key 'params'")."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.cli import main
from tasks.infra.config import load_config
from tasks.infra.errors import ConfigError

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.mark.parametrize(("text", "key", "lines"), [
    ("distill:\n  epochs: 1\nbase:\n  seed: 1\ndistill:\n  epochs: 2\n", "distill", "lines 1 and 5"),
    ("distill:\n  epochs: 1\n  lr: 0.001\n  epochs: 2\n", "distill.epochs", "lines 2 and 4"),
    ("distill: {epochs: 1, epochs: 2}\n", "distill.epochs", "line 1"),
    ("ingest:\n  files:\n    train: a.csv\n    train: b.csv\n", "ingest.files.train", "lines 3 and 4"),
])
def test_a_key_written_twice_is_named_with_its_lines(tmp_path, text, key, lines):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}: key '{key}' is written twice ({lines}); expected each key once "
                              "(the second would silently replace the first)")


def test_the_repo_params_have_no_key_twice():
    load_config(REPO_PARAMS)


def test_a_duplicate_in_params_yaml_is_one_line_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text(REPO_PARAMS.read_text(encoding="utf-8") + "\nbase:\n  seed: 7\n")
    assert main(["--params", str(path), "--root", str(tmp_path), "ingest"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: key 'base' is written twice (lines ")


@pytest.mark.parametrize(("override", "message"), [
    ("=3", "override '=3': the key is empty; expected key=value, e.g. distill.temperature=4"),
    (" =3", "override ' =3': the key is empty; expected key=value, e.g. distill.temperature=4"),
    (".epochs=3", "override '.epochs=3': the key '.epochs' has an empty part; expected section.key=value, "
                  "e.g. distill.temperature=4"),
    ("distill..epochs=3", "override 'distill..epochs=3': the key 'distill..epochs' has an empty part; expected "
                          "section.key=value, e.g. distill.temperature=4"),
    ("distill.=3", "override 'distill.=3': the key 'distill.' has an empty part; expected section.key=value, "
                   "e.g. distill.temperature=4"),
])
def test_an_override_with_an_empty_key_says_so(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(REPO_PARAMS, [override])
    assert str(err.value) == message


def test_cli_empty_override_key_is_one_line(tmp_path, capsys):
    assert main(["--params", str(REPO_PARAMS), "--root", str(tmp_path), "-S", "=3", "ingest"]) == 2
    assert capsys.readouterr().err.strip() == ("error: override '=3': the key is empty; expected key=value, "
                                               "e.g. distill.temperature=4")


# issue 25 item 7: no upper bound let a typo hang the machine (inference.threads=100000 started every thread
# and grew memory ~57 MB/s); item 11: `finetune: null` silently meant every default.
@pytest.mark.parametrize(("override", "key"), [
    ("inference.threads=100000", "inference.threads"), ("base.threads=1e6", "base.threads"),
    ("base.threads=1000000", "base.threads"), ("evaluate.threads=5000", "evaluate.threads"),
    ("distill.batch_size=1000000000", "distill.batch_size"), ("score.batch_size=100000000", "score.batch_size"),
    ("api.max_batch=1000000", "api.max_batch"), ("retrain.batch_size=1000000", "retrain.batch_size"),
])
def test_a_thread_count_or_batch_beyond_any_machine_is_refused_in_one_line(tmp_path, capsys, override, key):
    code = main(["--params", str(REPO_PARAMS), "--root", str(tmp_path), "-S", override, "predict", "--model",
                 str(tmp_path), "x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{key}: expected" in err[0], err


@pytest.mark.parametrize("written", ["null", "~", "Null"])
def test_a_section_written_null_is_refused_not_read_as_the_defaults(tmp_path, capsys, written):
    path = tmp_path / "params.yaml"
    path.write_text(REPO_PARAMS.read_text(encoding="utf-8").replace("\nfinetune:", "\nunused_finetune:", 1)
                    + f"\nfinetune: {written}\n")
    text = path.read_text()
    path.write_text(text[:text.index("\nunused_finetune:")] + text[text.index("\nevaluate:"):])
    assert main(["--params", str(path), "--root", str(tmp_path), "finetune"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"finetune: {written}: a section cannot be null" in err[0], err
    assert "finetune.method: none" in err[0]


def test_a_section_overridden_to_null_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="override 'finetune=null': a section cannot be null"):
        load_config(REPO_PARAMS, ["finetune=null"])


def test_an_empty_section_still_takes_the_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("finetune:\n")
    assert load_config(path).finetune.method == "none"
