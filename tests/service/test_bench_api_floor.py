"""``bench/api_floor.py``'s bare app answers every route with the seeded job (Postgres and Redis, no wrk)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from bench.api_floor import DSN_ENV, REDIS_ENV, ROUTES, build_app
from bench.postgres import drop_database
from bench.service_api import create_database, seed


def test_each_lean_job_read_returns_the_job_and_an_unknown_key_finds_nothing(monkeypatch):
    name, url = create_database()
    try:
        seeded = seed(url, jobs=5, events=0)
        parsed = make_url(url)
        monkeypatch.setenv(DSN_ENV, f"host={parsed.host} port={parsed.port or 5432} user={parsed.username} "
                                    f"dbname={parsed.database}")
        monkeypatch.setenv(REDIS_ENV, "redis://127.0.0.1:6379/0")
        with TestClient(build_app()) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            for route in ROUTES[1:]:
                path = route.format(job=seeded["job_id"])
                answer = client.get(path, headers={"Authorization": f"Bearer {seeded['key']}"})
                assert answer.status_code == 200 and answer.json()["id"] == seeded["job_id"], (route, answer.text)
                stranger = client.get(path, headers={"Authorization": "Bearer clr_not_a_key"})
                assert stranger.status_code == 404, route
    finally:
        drop_database(name, url)
