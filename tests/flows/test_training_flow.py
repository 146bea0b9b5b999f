"""training-pipeline under a temporary Prefect API, on tiny models in a throw-away repo copy:
end to end, agreement with `dvc repro` both ways, a failing gate, a refused promotion."""

from __future__ import annotations

import json

import pytest
import yaml

from flows.training import PIPELINE
from tasks.infra.params_file import apply_overrides
from tasks.infra.storage import hash_dir
from tests.flows._support import RELAXED, dvc, ran

pytestmark = pytest.mark.slow


def artifact(key: str) -> str:
    """The newest version of a keyed artifact, as the UI shows it."""
    from prefect.artifacts import Artifact

    found = Artifact.get(key)
    assert found is not None, f"no artifact {key!r}"
    return str(found.data)


def registry(root) -> dict:
    return json.loads((root / "models" / "registry.json").read_text())


def test_pipeline_runs_every_stage_and_promotes_the_first_student(trained):
    root, result = trained.root, trained.first
    assert list(result["stages"]) == list(PIPELINE)
    assert {s["status"] for s in result["stages"].values()} == {"ran"}
    assert (root / "models" / "production" / "model.safetensors").is_file()
    entry = registry(root)["versions"][0]
    assert entry["promoted"] and entry["version"] == registry(root)["production"] == 1
    assert entry["data_hash"] == json.loads((root / "data" / "processed" / "summary.json").read_text())["data_hash"]
    assert entry["source"].startswith("prefect flow run")
    assert {"time", "metrics", "reason", "model_hash"} <= set(entry)
    table = artifact("teacher-vs-student")
    assert "| accuracy |" in table and "teacher" in table and "student" in table
    assert "validation/index.html" in artifact("validation")
    assert "promoted to production" in artifact("promotion")


def test_dvc_repro_after_a_prefect_run_has_nothing_to_do(trained):
    state = trained.run(**RELAXED)
    assert state.is_completed(), state.message
    assert "up to date" in dvc(["status"], trained.root).lower()
    assert ran(dvc(["repro"], trained.root)) == set()


def test_a_prefect_run_after_dvc_repro_skips_every_stage(trained):
    # A promote-only parameter changed by hand, then `dvc repro`: only promote re-runs.
    apply_overrides(trained.root / "params.yaml", {**RELAXED, "promote": {"tolerance": 0.01}})
    assert ran(dvc(["repro"], trained.root)) == {"promote"}
    state = trained.run()
    assert state.is_completed(), state.message
    assert {s["status"] for s in state.result()["stages"].values()} == {"skipped"}
    assert state.result()["params_changed"] == []


def test_a_failing_gate_fails_the_run_with_its_message_and_keeps_production(trained):
    production = trained.root / "models" / "production"
    before = hash_dir(production)
    state = trained.run(evaluate={"min_retention": 2.0})
    assert state.is_failed()
    assert "evaluate gate: retention" in state.message and "evaluate.min_retention 2.0" in state.message
    assert "evaluate gate: retention" in artifact("gate-failure")
    assert hash_dir(production) == before
    # The run stopped at evaluate: DVC still sees evaluate (and promote) as stale, as `dvc repro` would.
    assert "evaluate" in dvc(["status"], trained.root)


def test_ui_parameters_rerun_what_follows_and_promote_refuses_a_worse_candidate(trained):
    production = trained.root / "models" / "production"
    before, versions = hash_dir(production), len(registry(trained.root)["versions"])
    # A new student (another temperature) that must beat production by a whole accuracy point of 1.0.
    state = trained.run(distill={"temperature": 1.5}, evaluate={"min_retention": 0.0}, promote={"tolerance": -1.0})
    assert state.is_completed(), state.message
    statuses = {name: s["status"] for name, s in state.result()["stages"].items()}
    assert statuses == {"ingest": "skipped", "validate": "skipped", "teacher": "skipped", "distill": "ran",
                        "finetune": "ran", "evaluate": "ran", "promote": "ran"}
    assert yaml.safe_load((trained.root / "params.yaml").read_text())["distill"]["temperature"] == 1.5
    assert "up to date" in dvc(["status"], trained.root).lower()

    assert "production unchanged" in state.message and "promote.tolerance -1.0" in state.message
    assert hash_dir(production) == before
    reg = registry(trained.root)
    assert len(reg["versions"]) == versions + 1
    last = reg["versions"][-1]
    assert not last["promoted"] and "below -promote.tolerance -1.0" in last["reason"]  # the paired comparison
    assert "not promoted" in artifact("promotion")
