"""The flow's plumbing without a Prefect API: parameters, params.yaml edits, DVC output, reports."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from flows import parameters as fp
from flows import workspace as ws
from flows.reports import failure_markdown, metrics_table, promotion_markdown
from tasks.infra import config as tc
from tasks.infra.errors import ConfigError
from tasks.infra.params_file import apply_overrides

REPO = Path(__file__).resolve().parents[2]
SECTIONS = {"base": fp.BaseParams, "ingest": fp.IngestParams, "teacher": fp.TeacherParams,
            "distill": fp.DistillParams, "finetune": fp.FinetuneParams, "evaluate": fp.EvaluateParams,
            "promote": fp.PromoteParams}


def value_schema(prop: dict) -> dict:
    """A JSON-schema property's type, bounds and choices: no title, description or default, and
    without the null that means "empty" in the form (or "unset" in the schema)."""
    prop = {k: v for k, v in prop.items() if k not in ("title", "description", "default")}
    if "anyOf" in prop:
        rest = [branch for branch in prop.pop("anyOf") if branch != {"type": "null"}]
        prop.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
    return prop


def test_the_form_shows_the_flows_sections():
    assert list(fp.FORM) == list(SECTIONS) and all(fp.FORM[name] for name in SECTIONS)
    assert [name for name, model in SECTIONS.items() if tuple(model.model_fields) != fp.FORM[name]] == []


@pytest.mark.parametrize("section, model", SECTIONS.items())
def test_every_form_field_is_a_params_key_with_the_schemas_type_bounds_and_choices(section, model):
    params = yaml.safe_load((REPO / "params.yaml").read_text())[section]
    schema = tc.SECTIONS[section].model_json_schema()["properties"]
    form = model.model_json_schema()["properties"]
    for name, info in model.model_fields.items():
        assert name in params and name in schema, f"{section}.{name} is not a key of params.yaml and the schema"
        assert info.default is None, f"{section}.{name}: an empty field must mean 'keep params.yaml'"
        assert value_schema(form[name]) == value_schema(schema[name]), f"{section}.{name}"
        keep = "(empty: keep params.yaml's value)"
        assert info.description == f"{tc.schema_field(f'{section}.{name}').description} {keep}"


def test_the_ui_form_has_the_clis_bounds():
    from prefect.utilities.callables import parameter_schema

    from flows.training import training_pipeline

    ui = parameter_schema(training_pipeline.fn).model_dump()
    assert set(ui["properties"]) == set(fp.FORM)
    max_length = ui["definitions"]["BaseParams"]["properties"]["max_length"]["anyOf"][0]
    assert max_length == {"type": "integer", "minimum": 1}  # the CLI's bound; no 8..512 of the UI's own
    for name, model in SECTIONS.items():
        assert ui["definitions"][model.__name__]["properties"] == model.model_json_schema()["properties"]


@pytest.mark.parametrize("override, names", [
    ("distill.temperature=0", "distill.temperature: expected > 0, got 0"),
    ("base.max_length=2.5", "base.max_length: expected an integer, got 2.5"),
    ("distill.temprature=4", "unknown key 'distill.temprature' (known: "),
    ("distill.hidden_loss=tokens", "distill.hidden_loss: not a training-pipeline parameter (temperature, "),
    ("drift.window_rows=5", "drift.window_rows: not a training-pipeline parameter (sections base, ingest, "),
    ("distill.temperature", "override 'distill.temperature': expected key=value"),
])
def test_the_flows_command_line_refuses_a_bad_parameter_in_one_line_before_a_run(tmp_path, monkeypatch, capsys,
                                                                                 override, names):
    import flows.training as ft

    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    monkeypatch.setenv(ws.ROOT_ENV, str(tmp_path))
    monkeypatch.setattr(ft, "training_pipeline", lambda **kwargs: pytest.fail("the run started"))
    assert ft.main(["-S", override]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], lines


def test_only_set_fields_become_overrides():
    out = fp.to_overrides({"distill": fp.DistillParams(temperature=4), "teacher": fp.TeacherParams(),
                           "evaluate": {"min_retention": 0.5, "latency_runs": None}, "promote": None})
    assert out == {"distill": {"temperature": 4.0}, "evaluate": {"min_retention": 0.5}}
    with pytest.raises(ValueError):
        fp.DistillParams(temprature=4)


@pytest.fixture
def params(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    return path


def test_overrides_are_written_in_place_keeping_comments(params):
    before = params.read_text()
    changes = apply_overrides(params, {"distill": {"temperature": 4.0}, "ingest": {"max_rows": 300}})
    assert changes == [("distill.temperature", 2.0, 4.0), ("ingest.max_rows", None, 300)]
    after = params.read_text()
    diff = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(diff) == 2 and len(before.splitlines()) == len(after.splitlines())
    assert "# stratified subsample" in after and "max_rows: 300" in after
    assert tc.load_config(params).distill.temperature == 4.0


def test_unchanged_values_do_not_touch_the_file(params):
    mtime = params.stat().st_mtime_ns
    assert apply_overrides(params, {"distill": {"temperature": 2}}) == []  # 2 == 2.0
    assert params.stat().st_mtime_ns == mtime


def test_bad_overrides_fail_before_the_file_changes(params):
    before = params.read_text()
    with pytest.raises(ConfigError, match="distill.temprature"):
        apply_overrides(params, {"distill": {"temprature": 4.0}})
    with pytest.raises(ConfigError, match="distill.temperature"):
        apply_overrides(params, {"distill": {"temperature": -1.0}})
    assert params.read_text() == before


def fake_dvc(monkeypatch, script: str) -> None:
    """Make `run_dvc_stage` run a Python script that prints what DVC would."""
    monkeypatch.setattr(ws, "dvc_command", lambda: [sys.executable, "-c", script])


def run(tmp_path, monkeypatch, script: str, stage: str = "evaluate") -> tuple[ws.StageRun, list]:
    fake_dvc(monkeypatch, script)
    lines = []
    return ws.run_dvc_stage(tmp_path, stage, lambda level, text: lines.append((level, text))), lines


GATE = r"""
import sys
print("Running stage 'evaluate':\n> python -m tasks.cli evaluate", flush=True)
sys.stderr.write("12:00:01 INFO [evaluate] start\n12:00:02 WARNING slow\n")
sys.stderr.write("bar 10%\rbar 50%\rbar 100%\n")
sys.stderr.write("error: evaluate gate: retention 0.8 < evaluate.min_retention 0.95\n")
print("ERROR: failed to reproduce 'evaluate': failed to run: python -m tasks.cli evaluate, exited with 3")
sys.exit(1)
"""


def test_a_gate_failure_becomes_gate_failed_with_the_stage_message(tmp_path, monkeypatch):
    result, lines = run(tmp_path, monkeypatch, GATE)
    assert result.status == "failed" and result.stage_exit == 3
    error = result.failure()
    assert isinstance(error, ws.GateFailed) and not error.transient
    assert str(error) == "evaluate gate: retention 0.8 < evaluate.min_retention 0.95"
    assert (20, "[evaluate] start") in lines and (30, "slow") in lines  # the CLI's timestamp is dropped
    assert (20, "bar 100%") in lines and (20, "bar 50%") not in lines  # progress bars are throttled
    assert any(level == 40 and text.startswith("error: evaluate gate") for level, text in lines)


@pytest.mark.parametrize("script, status", [
    ("print(\"Stage 'evaluate' didn't change, skipping\")", "skipped"),
    ("print(\"Stage 'evaluate' is cached - skipping run, checking out outputs\")", "restored"),
    ("print(\"Running stage 'evaluate':\")", "ran"),
])
def test_stage_outcomes_are_read_from_dvc(tmp_path, monkeypatch, script, status):
    result, _ = run(tmp_path, monkeypatch, script)
    assert result.status == status and result.returncode == 0
    assert ws.describe(result).startswith(f"[evaluate] {'ran' if status == 'ran' else 'skipped'}")


def test_only_io_failures_are_transient(tmp_path, monkeypatch):
    locked = "import sys; print('ERROR: Unable to acquire lock. Most likely another DVC process'); sys.exit(1)"
    assert run(tmp_path, monkeypatch, locked, "teacher")[0].failure().transient
    user = "import sys; print('error: teacher.model: no such folder'); print('ERROR: ... exited with 2'); sys.exit(1)"
    error = run(tmp_path, monkeypatch, user, "teacher")[0].failure()
    assert not error.transient and str(error) == "teacher.model: no such folder"
    offline = "import sys; print('Traceback (most recent call last):'); print('requests.exceptions.ConnectionError: x')"
    result, lines = run(tmp_path, monkeypatch, offline + "; sys.exit(1)", "ingest")
    assert result.failure().transient and lines[-1] == (40, "requests.exceptions.ConnectionError: x")
    bug = "import sys; print('Traceback (most recent call last):'); print('TypeError: x'); sys.exit(1)"
    assert not run(tmp_path, monkeypatch, bug, "ingest")[0].failure().transient


def test_the_workspace_is_the_folder_with_dvc_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv(ws.ROOT_ENV, str(REPO))
    here = ws.Workspace.current()
    assert here.root == REPO and here.slot_name.startswith("kdistill-workspace-")
    monkeypatch.setenv(ws.ROOT_ENV, str(tmp_path))
    with pytest.raises(Exception, match="not a kdistill workspace"):
        ws.Workspace.current()


def test_reports_read_like_the_ui_should_show_them():
    side = {"accuracy": 0.9, "f1_macro": 0.89, "params": 1000, "size_mb": 4.0, "latency_ms_b1": 2.0,
            "throughput_b32": 100.0}
    table = metrics_table({"teacher": side, "student": {**side, "accuracy": 0.88, "params": 500},
                           "retention": 0.9778, "agreement": 0.95, "speedup_b1": 1.9, "threads": 1, "test_rows": 100})
    assert "| accuracy | 0.9000 | 0.8800 | 0.978 |" in table and "| parameters | 1,000 | 500 | 0.500 |" in table
    stopped = failure_markdown("evaluate", "evaluate gate: x", gate=True)
    assert "Stopped by the evaluate gate" in stopped and "> evaluate gate: x" in stopped
    assert "not promoted" in promotion_markdown({"promoted": False, "version": 2, "production_version": 1,
                                                 "reason": "worse"}, None)
    from tasks.infra.stats import paired_comparison

    labels = [0] * 125
    noisy = paired_comparison(labels, [0] * 80 + [1] * 45, [0] * 85 + [1] * 40).to_dict()
    shown = promotion_markdown({"promoted": False, "version": 2, "production_version": 1, "reason": "x",
                                "comparison": noisy}, None)
    assert "Candidate - production (accuracy, 125 test rows): **+0.0400**, 95% interval" in shown
    assert "inside the noise" in shown


def test_output_is_split_into_lines_and_progress_updates():
    class Chunks:
        def __init__(self, *chunks: bytes):
            self.chunks = list(chunks)

        def read1(self, _: int) -> bytes:
            return self.chunks.pop(0) if self.chunks else b""

    stream = Chunks(b"a 1%\rb 50%\r", b"\nc\r\nd\n", b"e 10%\rf")  # \r\n split across two reads
    assert list(ws._lines(stream)) == [("a 1%", True), ("b 50%", False), ("c", False), ("d", False),
                                       ("e 10%", True), ("f", False)]
