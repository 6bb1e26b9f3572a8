"""Property-based fuzzing of every operation in the OpenAPI schema with schemathesis (positive and
negative data): whatever it sends, bounded in examples and time, the service answers without a 5xx."""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis.errors import Unsatisfiable
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode

from app.main import create_app
from tests.service.fake_results import make_finished_job

MAX_EXAMPLES = 10
SKIP = {"GET /v1/jobs/{job_id}/events/stream"}  # a long-lived SSE stream; its id parsing is the events route's


@pytest.fixture
def api_schema(settings, auth):
    """The service's own OpenAPI schema served by an app on the test database, the ids of a ready
    dataset and a finished job in it (so generated requests also get past the 404s), and the key's header
    (so they also get past the 401s)."""
    from fastapi.testclient import TestClient

    app = create_app(settings, enqueue=lambda _id: None)
    with TestClient(app, headers=auth) as client:
        job_id, _ = make_finished_job(client, settings)
        dataset_id = client.get(f"/v1/jobs/{job_id}").json()["dataset_id"]
    return (schemathesis.openapi.from_asgi("/openapi.json", app), {"job_id": job_id, "dataset_id": dataset_id},
            auth)


def _strategies(operation, ids: dict[str, str]):
    yield operation.as_strategy(GenerationMode.POSITIVE)
    yield operation.as_strategy(GenerationMode.NEGATIVE)
    known = {p.name: ids[p.name] for p in operation.iter_parameters() if p.location == "path" and p.name in ids}
    if known:
        yield operation.as_strategy(GenerationMode.POSITIVE, path_parameters=known)


def _fuzz(operation, strategy, server_errors: list[str], auth: dict[str, str]) -> None:
    @given(case=strategy)
    @hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                         phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        response = case.call(headers=auth)
        if response.status_code >= 500:
            server_errors.append(f"{operation.label}: {response.status_code} {response.text[:200]} for {case!r}")

    try:
        run()
    except Unsatisfiable:  # e.g. no negative data exists for an operation without parameters
        pass


@pytest.mark.timeout(300)
def test_no_operation_answers_5xx(api_schema):
    schema, ids, auth = api_schema
    server_errors: list[str] = []
    fuzzed, started = [], time.monotonic()
    # the DELETE routes last: they may delete the known dataset and job the other operations are fuzzed on
    operations = sorted((r.ok() for r in schema.get_all_operations()), key=lambda o: o.label.startswith("DELETE "))
    for operation in operations:
        if operation.label in SKIP:
            continue
        for strategy in _strategies(operation, ids):
            _fuzz(operation, strategy, server_errors, auth)
        fuzzed.append(operation.label)
    assert not server_errors, "\n".join(server_errors[:20])
    assert "POST /v1/datasets" in fuzzed and "POST /v1/jobs" in fuzzed and len(fuzzed) >= 10, fuzzed
    assert time.monotonic() - started < 240
