"""Quotas per tenant (jobs at once, jobs per hour, stored rows, upload size) and rate limits per key:
429 with Retry-After and the quota's name, then recovery (a job ends, the hour passes, the window
moves on). Quotas are counted in Postgres; the rate limit in Redis (and in memory when embedded)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.db import session_factory
from app.main import create_app
from app.models import Job, utcnow
from app.services.api_keys import set_quotas
from tests.service.conftest import REDIS_URL, TENANT_A, create_key, table_counts
from tests.service.helpers import to_bytes, toy_frame, upload, upload_frame


def quotas(settings, tenant: str = TENANT_A, **limits: int) -> None:
    """Set the tenant's own quotas in the database."""
    with session_factory(settings.database_url)() as session:
        set_quotas(session, tenant, **limits)


def refused(response, quota: str) -> int:
    """Assert a 429 naming ``quota`` with a Retry-After; returns the seconds."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded" and error["quota"] == quota and error["limit"] >= 1
    assert f"quota of {error['limit']}" in error["message"]  # says what the limit is
    return int(response.headers["Retry-After"])


def _job(client, dataset_id):
    return client.post("/v1/jobs", json={"dataset_id": dataset_id, "base_model": "tiny-bert"})


def test_concurrent_jobs_quota_frees_when_a_job_ends(client, settings):
    dataset = upload_frame(client, toy_frame(30))["id"]
    quotas(settings, max_concurrent_jobs=2)
    first, second = _job(client, dataset).json()["id"], _job(client, dataset).json()["id"]
    assert refused(_job(client, dataset), "concurrent_jobs") == settings.quota_retry_after_s
    tenant_b = TestClient(client.app, headers={"Authorization": f"Bearer {create_key(settings.database_url, 'b')}"})
    assert _job(tenant_b, upload_frame(tenant_b, toy_frame(30))["id"]).status_code == 201  # B is not held back
    assert client.post(f"/v1/jobs/{first}/cancel").json()["status"] == "cancelled"  # one ends
    assert _job(client, dataset).status_code == 201
    assert refused(_job(client, dataset), "concurrent_jobs")
    assert client.get(f"/v1/jobs/{second}").json()["status"] == "queued"


def test_jobs_per_hour_quota_recovers_when_the_hour_has_passed(client, settings):
    dataset = upload_frame(client, toy_frame(30))["id"]
    quotas(settings, max_jobs_per_hour=2)
    ids = [_job(client, dataset).json()["id"] for _ in range(2)]
    wait = refused(_job(client, dataset), "jobs_per_hour")
    assert 3500 < wait <= 3600
    with session_factory(settings.database_url)() as session:  # the first job was made 61 minutes ago
        session.execute(update(Job).where(Job.id == ids[0]).values(created_at=utcnow() - timedelta(minutes=61)))
        session.commit()
    assert _job(client, dataset).status_code == 201
    refused(_job(client, dataset), "jobs_per_hour")


def test_stored_rows_quota_refuses_the_upload_and_stores_nothing(client, settings):
    quotas(settings, max_stored_rows=100)
    upload_frame(client, toy_frame(60))
    before = table_counts(settings.database_url)
    refused(upload(client, to_bytes(toy_frame(60), "csv"), gold_label_column="gold"), "stored_rows")
    assert table_counts(settings.database_url) == before
    assert upload(client, to_bytes(toy_frame(40), "csv")).status_code == 201  # what still fits is taken
    refused(upload(client, to_bytes(toy_frame(30), "csv")), "stored_rows")
    quotas(settings, max_stored_rows=1000)  # an administrator raises it
    assert upload(client, to_bytes(toy_frame(30), "csv")).status_code == 201


def test_upload_size_quota_is_a_429_naming_it(client, settings):
    small, big = to_bytes(toy_frame(12), "csv"), to_bytes(toy_frame(60), "csv")
    quotas(settings, max_upload_bytes=len(small) + 10)
    refused(upload(client, big), "upload_bytes")
    assert table_counts(settings.database_url)["datasets"] == 0
    assert upload(client, small).status_code == 201


@pytest.mark.parametrize("storage", ["redis", "memory"])
def test_rate_limit_per_key_is_429_then_recovers_after_the_window(settings, storage):
    broker = settings.broker_url if storage == "redis" else f"sqla+sqlite:///{settings.data_dir / 'broker.db'}"
    limited = settings.model_copy(update={"rate_limit": "3/2 second", "broker_url": broker,
                                          "rate_limit_storage_url": settings.broker_url if storage == "redis"
                                          else "memory://"})
    key, other = create_key(settings.database_url, TENANT_A), create_key(settings.database_url, TENANT_A)
    with TestClient(create_app(limited, enqueue=lambda _id: None), headers={"Authorization": f"Bearer {key}"}) as c:
        assert [c.get("/v1/jobs").status_code for _ in range(3)] == [200, 200, 200]
        over = c.get("/v1/jobs")
        assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limited"
        wait = int(over.headers["Retry-After"])
        assert 1 <= wait <= 2 and "3 per 2 second" in over.json()["error"]["message"]
        assert c.get("/v1/jobs", headers={"Authorization": f"Bearer {other}"}).status_code == 200  # per key
        assert c.get("/healthz").status_code == 200  # the open routes are not counted
        if storage == "redis":  # the counter lives in Redis, where every API process sees it
            assert any(key_id in k.decode() for k in redis.Redis.from_url(REDIS_URL).keys("LIMITS*")
                       for key_id in [_key_id(settings, key)])
        time.sleep(wait + 0.2)
        assert c.get("/v1/jobs").status_code == 200


def _key_id(settings, key: str) -> str:
    from app.services.api_keys import find_key

    with session_factory(settings.database_url)() as session:
        return find_key(session, key)[0].id


def test_set_quotas_refuses_negative_and_out_of_range_values(settings):
    """A negative quota used to be stored as it was and then refused every job ('quota of -5'); one past
    the INTEGER column crashed the admin command on Postgres. Both are refused and nothing changes."""
    from app.errors import InvalidInput
    from app.models import Tenant

    for column, value in (("max_concurrent_jobs", -5), ("max_jobs_per_hour", -1),
                          ("max_concurrent_jobs", 2**31), ("max_stored_rows", -1)):
        with pytest.raises(InvalidInput) as raised:
            quotas(settings, "acme", **{column: value})
        assert raised.value.param == column and "0 for the service default" in raised.value.message
    with session_factory(settings.database_url)() as session:
        tenant = session.get(Tenant, "acme")
        assert tenant is None or (tenant.max_concurrent_jobs, tenant.max_jobs_per_hour) == (None, None)
    quotas(settings, "acme", max_concurrent_jobs=4, max_jobs_per_hour=0)
    with session_factory(settings.database_url)() as session:
        assert session.get(Tenant, "acme").max_concurrent_jobs == 4
