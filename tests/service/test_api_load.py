"""The API under concurrent load (issue 13): 64 clients at once on a real server get no 5xx; a request that finds
every database session (or every pooled connection) busy for the pool timeout is a 503 ``overloaded`` with
``Retry-After``, not "database unavailable"; ``/healthz`` answers while the database and the broker are gone; an
idempotent replay counts against the key's rate limit like any request."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from app.main import create_app
from tests.service.conftest import TENANT_A, create_key
from tests.service.helpers import ServerThread, toy_frame, upload_frame

CLIENTS = 64


def _pg_dsn(url: str) -> str:
    """A libpq connection string for the SQLAlchemy URL ``url``."""
    parsed = make_url(url)
    return f"host={parsed.host} port={parsed.port or 5432} user={parsed.username} dbname={parsed.database}"


@pytest.fixture
def jobs(client) -> list[str]:
    """Three queued jobs of tenant ``tenant-a`` (made through the API; the queue only records them)."""
    dataset = upload_frame(client, toy_frame(30))["id"]
    ids = []
    for _ in range(3):
        response = client.post("/v1/jobs", json={"dataset_id": dataset, "base_model": "tiny-bert"})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def test_64_concurrent_clients_get_no_5xx(settings, auth, jobs):
    # a small pool makes the 64 clients queue for the 4 sessions: they must wait, not fail or deadlock
    busy = settings.model_copy(update={"db_pool_size": 4, "db_max_overflow": 2, "rate_limit": "100000/minute"})
    paths = [f"/v1/jobs/{jobs[0]}", "/v1/jobs?limit=20", f"/v1/jobs/{jobs[1]}/events?limit=50", "/healthz"]
    start = threading.Barrier(CLIENTS)

    def one_client(i: int) -> list[int]:
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as http:
            start.wait()  # every client fires at once
            return [http.get(paths[(i + n) % len(paths)]).status_code for n in range(4)]

    with ServerThread(create_app(busy, enqueue=lambda _id: None)) as server:
        with ThreadPoolExecutor(CLIENTS) as pool:
            statuses = Counter(s for got in pool.map(one_client, range(CLIENTS)) for s in got)
    assert statuses == {200: CLIENTS * 4}, statuses


def test_a_request_that_waits_past_the_pool_timeout_is_503_overloaded(settings, auth, jobs):
    """One session, 0.5 s to get it: while a request holds it (blocked in the database behind a table lock), the
    next one waits 0.5 s and is answered 503 overloaded with Retry-After; the first then completes."""
    tiny = settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout_s": 0.5})
    with ServerThread(create_app(tiny, enqueue=lambda _id: None)) as server, \
            httpx.Client(base_url=server.url, headers=auth, timeout=30) as http, \
            psycopg.connect(_pg_dsn(settings.database_url)) as blocker:
        blocker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")  # every key lookup now waits for us
        with ThreadPoolExecutor(1) as pool:
            holder = pool.submit(http.get, f"/v1/jobs/{jobs[0]}")
            time.sleep(0.3)  # the holder has the one session and waits in the database
            started = time.monotonic()
            refused = http.get("/v1/jobs")
            waited = time.monotonic() - started
            blocker.rollback()  # lift the lock: the holder goes on
            held = holder.result(timeout=30)
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "overloaded" and "database sessions" in error["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert 0.4 <= waited < 5
    assert held.status_code == 200 and held.json()["id"] == jobs[0]


def test_a_pool_checkout_timeout_is_503_overloaded_not_database_unavailable(settings, auth, jobs):
    """Every pooled connection held elsewhere (here by the test itself): a route's checkout times out after
    db_pool_timeout_s and the answer is 503 overloaded, as is an Idempotency-Key POST's bookkeeping."""
    tiny = settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout_s": 0.3})
    app = create_app(tiny, enqueue=lambda _id: None)
    engine = app.state.session_factory.kw["bind"]
    with TestClient(app, headers=auth) as client:
        assert client.get(f"/v1/jobs/{jobs[0]}").status_code == 200
        with engine.connect():  # the pool's only connection
            busy = client.get(f"/v1/jobs/{jobs[0]}")
            replay = client.post("/v1/jobs", json={"dataset_id": "ds_x"}, headers={"Idempotency-Key": "k-1"})
        assert client.get(f"/v1/jobs/{jobs[0]}").status_code == 200  # the connection is back: all is well
    for response in (busy, replay):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "overloaded"
        assert int(response.headers["Retry-After"]) >= 1


def test_healthz_answers_while_the_database_and_the_broker_are_unreachable(settings, auth):
    gone = settings.model_copy(update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/nothing",
                                       "broker_url": "redis://127.0.0.1:1/0",
                                       "rate_limit_storage_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(gone, enqueue=lambda _id: None), headers=auth) as client:
        started = time.monotonic()
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert time.monotonic() - started < 1.0  # no connection attempt behind it
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert {d["check"] for d in ready.json()["error"]["details"]} == {"database", "broker"}
        outage = client.get("/v1/jobs")  # a route that needs the database: the outage's 503, not overloaded
        assert outage.status_code == 503 and outage.json()["error"]["code"] == "database_unavailable"


def test_an_idempotent_replay_counts_against_the_rate_limit(client, settings):
    dataset = upload_frame(client, toy_frame(30))["id"]
    key = create_key(settings.database_url, TENANT_A)  # a fresh key: nothing counted against it yet
    limited = settings.model_copy(update={"rate_limit": "3/minute", "rate_limit_storage_url": "memory://"})
    body = {"dataset_id": dataset, "base_model": "tiny-bert"}
    with TestClient(create_app(limited, enqueue=lambda _id: None), headers={"Authorization": f"Bearer {key}"}) as c:
        first = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "replayed"})
        replays = [c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "replayed"}) for _ in range(3)]
        after = c.get("/v1/jobs")
    assert first.status_code == 201, first.text
    assert [r.status_code for r in replays[:2]] == [201, 201]
    assert all(r.headers["Idempotent-Replayed"] == "true" and r.json() == first.json() for r in replays[:2])
    over = replays[2]  # the fourth request of the key in the minute, a replay
    assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limited", over.text
    assert int(over.headers["Retry-After"]) >= 1 and "Idempotent-Replayed" not in over.headers
    assert after.status_code == 429  # and the replays used the key's budget for every other request too
