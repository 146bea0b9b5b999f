"""The API's contract, fuzzed by Schemathesis from its own OpenAPI schema: whatever a client sends, no 5xx,
and every error is one JSON line ({"error": "..."})."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

from tasks.infra.config import load_config
from tasks.infra.storage import Paths
from tests.code.test_api import BASE, REPO, install

pytestmark = pytest.mark.usefixtures("one_torch_thread")
EXAMPLES = 100  # per operation and mode: about 10 s of calls on 2 busy cores


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, tiny_teacher_dir):
    from tasks.production.api import create_app

    root = tmp_path_factory.mktemp("contract")
    install(root, tiny_teacher_dir, 1)
    cfg = load_config(REPO / "params.yaml", [*BASE, "api.batch_wait_ms=0"])
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(cfg, Paths(root)))


def check(case, seen: list[int]) -> None:
    response = case.call()
    seen.append(response.status_code)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        content_type = response.headers.get("content-type") or [""]
        assert content_type[0].startswith("application/json"), response.text
        error = response.json().get("error")
        assert isinstance(error, str) and error and "\n" not in error, response.text


# Not `schemathesis.pytest.from_fixture` + `@schema.parametrize()`: under pytest 9 it fails on a renamed
# internal (`request.node._nodeid`); the operations' Hypothesis strategies are the same engine.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_any_request_gets_no_5xx_and_errors_are_one_json_line(api_schema, mode):
    seen: list[int] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /predict", "GET /health", "GET /model"}
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
            continue  # no parameters: nothing can be invalid (positive mode calls them)
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(operation.as_strategy(generation_mode=mode))
        def fuzz(case) -> None:
            check(case, seen)
        fuzz()
    # Really sent: valid bodies answered, and (negative mode) invalid ones refused with a 4xx.
    expected = 200 if mode is GenerationMode.POSITIVE else 422
    assert len(seen) >= EXAMPLES and expected in seen, seen
