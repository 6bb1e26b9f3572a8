"""Operations: Prometheus metrics (jobs by state, queue depth, job durations, API latency), readiness
of the database and the broker, and JSON log lines that carry the job id."""

from __future__ import annotations

import io
import json
import logging

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.ops.logs import JsonFormatter, job_context
from tests.service.fake_results import make_finished_job
from tests.service.helpers import toy_frame, upload_frame


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a Prometheus exposition as {(name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_report_jobs_queue_durations_and_latency(client, settings):
    job_id, _ = make_finished_job(client, settings)
    dataset = upload_frame(client, toy_frame(30))
    client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert"})
    client.get(f"/v1/jobs/{job_id}")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    assert got[("clear_jobs", (("status", "queued"),))] == 1
    assert got[("clear_jobs", (("status", "succeeded"),))] == 1
    assert got[("clear_jobs", (("status", "failed"),))] == 0
    assert got[("clear_queue_depth", ())] == 1
    assert got[("clear_job_duration_seconds_count", (("status", "succeeded"),))] == 1
    assert got[("clear_job_duration_seconds_sum", (("status", "succeeded"),))] == 42
    assert got[("clear_job_duration_seconds_bucket", (("le", "30.0"), ("status", "succeeded")))] == 0
    assert got[("clear_job_duration_seconds_bucket", (("le", "60.0"), ("status", "succeeded")))] == 1
    latency = (("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "200"))
    assert got[("clear_http_request_duration_seconds_count", latency)] == 1


def test_readyz_checks_the_database_and_the_broker(client, settings, auth):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    down = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down, enqueue=lambda _: None), headers=auth) as other:
        response = other.get("/readyz")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready" and "broker" in error["message"]
    assert [d["check"] for d in error["details"]] == ["broker"]


def test_log_lines_are_json_with_the_job_id(client, settings):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("clear.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        job_id, _ = make_finished_job(client, settings)
        client.get(f"/v1/jobs/{job_id}")
    finally:
        access.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [line for line in lines if line["path"] == f"/v1/jobs/{job_id}"]
    assert mine and mine[-1]["job_id"] == job_id and mine[-1]["status"] == 200
    assert mine[-1]["route"] == "/v1/jobs/{job_id}" and mine[-1]["level"] == "INFO"
    assert next(line for line in lines if line["path"] == "/v1/datasets")["job_id"] is None


def test_the_json_formatter_takes_the_job_from_the_context():
    record = logging.LogRecord("worker", logging.ERROR, __file__, 1, "job %s failed", ("x",), None)
    with job_context("job_abc"):
        line = json.loads(JsonFormatter().format(record))
    assert line["job_id"] == "job_abc" and line["message"] == "job x failed" and line["level"] == "ERROR"


def test_a_request_cancelled_before_it_answers_is_logged_as_499_not_500(caplog):
    """uvicorn cancels the requests still open past --timeout-graceful-shutdown: such a request answered nothing,
    and counting it as a 500 would page someone for a clean stop."""
    import asyncio

    from app.ops.metrics import CANCELLED_STATUS, RequestMetrics, make_registry

    _, latency = make_registry(lambda: None)
    started = asyncio.Event()

    async def stalled(scope, receive, send):
        started.set()
        await asyncio.sleep(3600)

    async def run():
        middleware = RequestMetrics(stalled, latency)
        scope = {"type": "http", "method": "POST", "path": "/v1/datasets", "root_path": ""}
        task = asyncio.create_task(middleware(scope, None, None))
        await started.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    with caplog.at_level("INFO", logger="clear.access"):
        assert asyncio.run(run())
    statuses = [r.status for r in caplog.records if r.name == "clear.access"]
    assert statuses == [CANCELLED_STATUS] == [499], statuses
