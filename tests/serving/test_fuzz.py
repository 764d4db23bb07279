"""Property-based fuzzing of the OpenAPI document against the real app over HTTP: generated
valid and invalid requests never get a server error, and answers conform to the schema.

Driven through schemathesis' strategies rather than its pytest plugin (whose lazy fixture
schema does not work with this pytest), one operation × mode at a time.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.serving.conftest import API_KEY

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

EXAMPLES = {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 60}


@pytest.fixture(scope="module")
def operations(base_url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) == 7  # 4 under /v1, healthz, readyz, metrics
    return found


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda m: m.value)
def test_no_server_errors_and_answers_match_the_schema(operations, mode):
    calls: list[tuple[str, int]] = []
    for operation in operations:
        inputs = operation.body or operation.query or operation.path_parameters
        if mode is GenerationMode.NEGATIVE and not inputs:
            continue  # nothing to make invalid (healthz, readyz, metrics, GET /v1/models)
        fuzz(operation, mode, calls)
    assert not [c for c in calls if c[1] >= 500], calls
    expected = 200 if mode is GenerationMode.POSITIVE else 422
    assert ("POST /v1/scores", expected) in calls, sorted(set(calls))


def fuzz(operation: Any, mode: GenerationMode, calls: list[tuple[str, int]]) -> None:
    """Generate cases for one operation; positive ones must pass every schemathesis check
    (status codes, content types, response schemas), negative ones must not get a 5xx."""
    from schemathesis.checks import not_a_server_error

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        if mode is GenerationMode.POSITIVE:
            headers = {**(case.headers or {}), "X-API-Key": API_KEY}
            response = case.call_and_validate(headers=headers, timeout=30)
        else:  # negative cases may carry their own (bad) key: 401 is fine, 5xx is not
            headers = {"X-API-Key": API_KEY, **(case.headers or {})}
            response = case.call(headers=headers, timeout=30)
            case.validate_response(response, checks=[not_a_server_error])
        calls.append((operation.label, response.status_code))

    run()
