"""Fixtures of the Prefect flow tests: a temporary Prefect API, and a trained throw-away workspace.

Prefect's settings are read when prefect is first imported, so they are set here, before any
test module imports it: a private PREFECT_HOME, analytics off, a patient temporary-API start on a
loaded 2-core machine, and no PREFECT_API_URL leaking in from the developer's shell.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="kdistill-prefect-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = _HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "90"
os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="session")
def prefect_api():
    """A temporary Prefect API and database for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@dataclass
class Trained:
    """A throw-away workspace the training pipeline has run in once, from scratch."""

    root: Path
    first: dict  # the first run's result

    def run(self, **params):
        """Run training-pipeline in this workspace; returns the final state."""
        from flows.training import training_pipeline

        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KDISTILL_ROOT", str(self.root))
            return training_pipeline(**params, return_state=True)


@pytest.fixture(scope="session")
def trained(prefect_api, make_repo_copy, tmp_path_factory) -> Trained:
    """The repo copied with tiny params, and training-pipeline run in it end to end (~1 minute)."""
    root = make_repo_copy(tmp_path_factory.mktemp("flows") / "repo")
    workspace = Trained(root, {})
    state = workspace.run()
    assert state.is_completed(), state.message
    workspace.first = state.result()
    return workspace
