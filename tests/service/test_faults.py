"""Transient faults: with Postgres or Redis gone the API answers 503 with Retry-After and recovers by
itself when they return; the worker task retries transient errors with backoff and nothing else."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

import worker.pipeline as pipeline
import worker.tasks as tasks
from app.faults import TransientJobError, is_transient
from app.main import create_app
from app.settings import get_settings
from tests.service.helpers import toy_frame, upload_frame
from tests.service.outages import RedisServer, TcpProxy


def _unavailable(response, code: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0 and response.json()["error"]["code"] == code


def _via_proxy(settings):
    """A started ``TcpProxy`` to the test database and ``settings`` pointed at it."""
    url = make_url(settings.database_url)
    proxy = TcpProxy((url.host, url.port or 5432)).start()
    return proxy, settings.model_copy(update={"database_url": url.set(port=proxy.port).render_as_string(False)})


def test_postgres_down_is_503_with_retry_after_and_recovers(settings, auth):
    proxy, via_proxy = _via_proxy(settings)
    try:
        with TestClient(create_app(via_proxy, enqueue=lambda _id: None), headers=auth) as client:
            dataset = upload_frame(client, toy_frame(30))
            assert client.get("/v1/jobs").status_code == 200
            proxy.stop()
            _unavailable(client.get("/v1/jobs"), "database_unavailable")
            _unavailable(client.get(f"/v1/datasets/{dataset['id']}"), "database_unavailable")
            _unavailable(client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert"},
                                     headers={"Idempotency-Key": "while-down"}), "database_unavailable")
            proxy.start()
            assert client.get(f"/v1/datasets/{dataset['id']}").status_code == 200  # the pool reconnects by itself
            again = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert"},
                                headers={"Idempotency-Key": "while-down"})
            assert again.status_code == 201, again.text
    finally:
        proxy.stop()


def test_after_the_database_drops_every_connection_reads_answer_at_once(settings, auth):
    """The API's pool does not ping each checkout: when the database drops its connections (a restart, cut here by
    the proxy), the next job read fails on its dead connection, is run again on a new one and answers 200; the
    failure makes the pool replace every older connection, so the other routes answer 200 as well."""
    proxy, via_proxy = _via_proxy(settings)
    try:
        with TestClient(create_app(via_proxy, enqueue=lambda _id: None), headers=auth) as client:
            dataset = upload_frame(client, toy_frame(30))
            job = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert"}).json()
            assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
            proxy.stop()
            proxy.start()  # every pooled connection is dead; the database takes new ones
            for path in (f"/v1/jobs/{job['id']}", "/v1/jobs", f"/v1/jobs/{job['id']}/events",
                         f"/v1/datasets/{dataset['id']}"):
                response = client.get(path)
                assert response.status_code == 200, (path, response.text)
            assert client.get(f"/v1/jobs/{job['id']}").json()["id"] == job["id"]
    finally:
        proxy.stop()


def test_redis_down_is_503_on_submit_and_recovers(settings, tmp_path, auth):
    redis = RedisServer(tmp_path / "redis").start()
    try:
        with TestClient(create_app(settings.model_copy(update={"broker_url": redis.url})), headers=auth) as client:
            dataset = upload_frame(client, toy_frame(30))
            body = {"dataset_id": dataset["id"], "base_model": "tiny-bert"}
            assert client.post("/v1/jobs", json=body).status_code == 201
            redis.stop()
            refused = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
            _unavailable(refused, "unavailable")
            assert client.get("/v1/jobs", params={"status": "queued"}).json()["count"] == 1  # not left queued
            redis.start()
            accepted = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
            assert accepted.status_code == 201, accepted.text
            assert "Idempotent-Replayed" not in accepted.headers  # the 503 was not remembered
    finally:
        redis.stop()


def test_only_transient_errors_count_as_transient():
    from sqlalchemy.exc import IntegrityError, OperationalError

    assert is_transient(OperationalError("x", {}, Exception("connection refused")))
    assert is_transient(ConnectionResetError())
    assert not is_transient(IntegrityError("x", {}, Exception("duplicate key")))
    assert not is_transient(ValueError("bad label"))
    assert not is_transient(RuntimeError("CUDA out of memory"))


@pytest.fixture
def eager_task(monkeypatch):
    """The Celery task run in process, its retries immediate and capped at 2."""
    from worker.celery_app import make_celery

    monkeypatch.setenv("CLEAR_MAX_TRANSIENT_RETRIES", "2")
    get_settings.cache_clear()
    make_celery(get_settings())
    monkeypatch.setattr(tasks, "backoff_s", lambda _retries: 0)
    yield tasks.run_job
    get_settings.cache_clear()


@pytest.mark.parametrize("error, calls", [(TransientJobError("database gone"), 3), (ValueError("bad input"), 1),
                                          (RuntimeError("CUDA out of memory"), 1)])
def test_the_worker_retries_transient_errors_only(eager_task, monkeypatch, error, calls):
    seen = []

    def execute(job_id, settings):
        seen.append(job_id)
        raise error

    monkeypatch.setattr(pipeline, "execute_job", execute)
    result = eager_task.apply(args=["job_x"])
    assert result.state == "FAILURE" and isinstance(result.result, type(error)) and len(seen) == calls


def test_backoff_grows_and_is_capped():
    assert [tasks.backoff_s(r) <= 2 * 2 ** r for r in range(4)] == [True] * 4
    assert tasks.backoff_s(30) <= tasks.BACKOFF_MAX_S and tasks.backoff_s(3) >= 0.5 * 16
