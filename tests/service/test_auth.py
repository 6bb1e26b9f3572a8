"""API keys: made by the admin command and stored as sha256 hashes only; 401 without a valid key, 403
without the scope the method needs; revocation; the open routes; the dashboard's login cookie."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.db import get_engine
from app.main import create_app
from tests.service.conftest import create_key
from tests.service.workers import ROOT

KEY = re.compile(r"^(clr_[0-9a-f]{8})_[A-Za-z0-9_-]{43}$", re.M)


def admin(settings, *args: str) -> subprocess.CompletedProcess:
    """``python -m app.cli ARGS`` on the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEAR_")}
    env.update(CLEAR_DATABASE_URL=settings.database_url, CLEAR_DATA_DIR=str(settings.data_dir))
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def app_client(settings):
    """A client with no key of its own."""
    with TestClient(create_app(settings, enqueue=lambda _id: None)) as client:
        yield client


def test_keys_are_stored_as_hashes_only_and_revocable(settings, app_client):
    made = admin(settings, "create-key", "--tenant", "acme", "--scopes", "read,write", "--name", "ci")
    assert made.returncode == 0, made.stderr
    key = KEY.search(made.stdout).group(0)
    prefix, secret = KEY.search(made.stdout).group(1), key.split("_", 2)[2]
    with get_engine(settings.database_url).connect() as conn:
        rows = conn.execute(text("SELECT * FROM api_keys")).mappings().all()
    assert len(rows) == 1
    cells = [str(v) for v in rows[0].values()]
    assert not any(key in c or secret in c for c in cells)  # neither the key nor its secret part, in any column
    assert rows[0]["key_hash"] == hashlib.sha256(key.encode()).hexdigest() and rows[0]["prefix"] == prefix
    assert rows[0]["tenant_id"] == "acme" and rows[0]["revoked_at"] is None

    bearer = {"Authorization": f"Bearer {key}"}
    assert app_client.get("/v1/jobs", headers=bearer).status_code == 200
    listed = admin(settings, "list-keys")
    assert prefix in listed.stdout and "acme" in listed.stdout and secret not in listed.stdout
    assert admin(settings, "revoke-key", prefix).returncode == 0
    refused = app_client.get("/v1/jobs", headers=bearer)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert "revoked" in admin(settings, "list-keys").stdout
    bad = admin(settings, "create-key", "--tenant", "acme", "--scopes", "read,root")
    assert bad.returncode == 2 and "read, write, admin" in bad.stderr


def test_no_key_or_a_bad_key_is_401_with_www_authenticate(app_client, api_key):
    for headers in ({}, {"Authorization": "Bearer clr_00000000_" + "x" * 43}, {"Authorization": "Basic abc"},
                    {"Authorization": f"Bearer {api_key}x"}, {"Authorization": api_key}):
        for method, path in (("GET", "/v1/jobs"), ("GET", "/v1/datasets/ds_1"), ("POST", "/v1/jobs"),
                             ("POST", "/v1/jobs/job_1/cancel"), ("GET", "/v1/jobs/job_1/noise-report.csv")):
            response = app_client.request(method, path, headers=headers)
            assert response.status_code == 401, (headers, method, path, response.text)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "Authorization: Bearer" in response.json()["error"]["message"] or \
                "unknown or revoked" in response.json()["error"]["message"]


def test_a_key_needs_the_scope_of_the_method(settings, app_client):
    reader = {"Authorization": f"Bearer {create_key(settings.database_url, 'acme', 'read')}"}
    writer = {"Authorization": f"Bearer {create_key(settings.database_url, 'acme', 'write')}"}
    assert app_client.get("/v1/jobs", headers=reader).status_code == 200
    refused = app_client.post("/v1/jobs", json={"dataset_id": "ds_1"}, headers=reader)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope" and refused.json()["error"]["scope"] == "write"
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    assert app_client.post("/v1/jobs/job_1/cancel", headers=reader).status_code == 403
    assert app_client.get("/v1/jobs", headers=writer).status_code == 403
    assert app_client.post("/v1/jobs", json={"dataset_id": "ds_1"}, headers=writer).status_code == 404
    assert app_client.get("/metrics", headers=reader).status_code == 403  # cross-tenant numbers: admin only


BAD_PAGES = ["/v1/jobs?limit=abc", "/v1/jobs?limit=0", "/v1/jobs/job_1/events?limit=abc",
             "/v1/datasets?limit=0"]


def test_the_key_is_checked_before_the_parameters_on_every_route(settings, app_client, api_key):
    """The job reads authenticate inside their one call, after FastAPI validated their parameters: a malformed
    parameter must still not answer 422 to a caller without a good key (401/403, as on the other routes)."""
    writer = {"Authorization": f"Bearer {create_key(settings.database_url, 'acme', 'write')}"}
    for path in BAD_PAGES:
        for headers, status in (({}, 401), ({"Authorization": "Bearer clr_00000000_" + "x" * 43}, 401),
                                (writer, 403), ({"Authorization": f"Bearer {api_key}"}, 422)):
            response = app_client.get(path, headers=headers)
            assert response.status_code == status, (path, headers, response.text)
        assert response.json()["error"]["param"] == "limit"


def test_refused_parameters_count_against_the_rate_limit(settings):
    limited = settings.model_copy(update={"rate_limit": "3/minute", "rate_limit_storage_url": "memory://"})
    key = {"Authorization": f"Bearer {create_key(settings.database_url, 'acme', 'read')}"}
    with TestClient(create_app(limited)) as client:
        statuses = [client.get(path, headers=key).status_code for path in BAD_PAGES[:3]]
        statuses.append(client.get("/v1/jobs?limit=1", headers=key).status_code)
    assert statuses == [422, 422, 422, 429]


def test_a_read_run_again_after_a_dropped_connection_counts_once_against_the_rate_limit(settings, monkeypatch):
    from sqlalchemy.exc import DBAPIError

    from app.api.routes import jobs as job_routes

    limited = settings.model_copy(update={"rate_limit": "2/minute", "rate_limit_storage_url": "memory://"})
    key = {"Authorization": f"Bearer {create_key(settings.database_url, 'acme', 'read')}"}
    real, calls = job_routes._jobs_page, []

    def dropped_once(session, principal, *args):  # the connection drops after the key was checked
        calls.append(principal.tenant_id)
        if len(calls) % 2:
            raise DBAPIError("SELECT", {}, Exception("server closed the connection"), connection_invalidated=True)
        return real(session, principal, *args)

    monkeypatch.setattr(job_routes, "_jobs_page", dropped_once)
    with TestClient(create_app(limited)) as client:
        statuses = [client.get("/v1/jobs", headers=key).status_code for _ in range(3)]
    assert statuses == [200, 200, 429] and calls == ["acme"] * 4


def test_head_answers_as_get_without_a_body(settings, app_client, api_key):
    key = {"Authorization": f"Bearer {api_key}"}
    for path in ("/healthz", "/v1/jobs", "/v1/datasets", "/v1/jobs?limit=0"):
        got, head = app_client.get(path, headers=key), app_client.head(path, headers=key)
        assert head.status_code == got.status_code and head.content == b"", path
        assert head.headers.get("content-type") == got.headers.get("content-type"), path
    assert app_client.head("/v1/jobs").status_code == 401  # the same key check as GET
    writer = {"Authorization": f"Bearer {create_key(settings.database_url, 'acme', 'write')}"}
    assert app_client.head("/v1/jobs", headers=writer).status_code == 403  # and the same scope: read


def test_a_method_the_path_does_not_answer_gets_405_naming_every_method_it_does(app_client, api_key):
    key = {"Authorization": f"Bearer {api_key}"}
    for path, allowed in (("/v1/jobs", "GET, HEAD, POST"), ("/v1/jobs/job_x/cancel", "POST"),
                          ("/healthz", "GET, HEAD"), ("/ui/static/dashboard.css", "GET, HEAD")):
        response = app_client.put(path, headers=key)
        assert response.status_code == 405, (path, response.text)
        assert response.headers["allow"] == allowed, path
        assert response.json()["error"]["code"] == "method_not_allowed"


def test_health_docs_and_static_files_need_no_key(app_client, auth):
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json", "/ui/static/dashboard.css", "/ui/login"):
        assert app_client.get(path).status_code == 200, path
    assert app_client.get("/metrics").status_code == 401
    assert app_client.get("/metrics", headers=auth).status_code == 200
    schemes = app_client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "http", "scheme": "bearer", "description": schemes["ApiKey"]["description"]}


def test_the_dashboard_signs_in_with_a_key_and_keeps_it_in_an_httponly_cookie(app_client, api_key, settings):
    page = app_client.get("/ui/jobs/job_1?x=1", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/ui/login?next=/ui/jobs/job_1%3Fx%3D1"
    wrong = app_client.post("/ui/login", data={"key": "nope", "next": "/ui"}, follow_redirects=False)
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text and "set-cookie" not in wrong.headers
    offsite = app_client.post("/ui/login", data={"key": api_key, "next": "https://evil.example/"},
                              follow_redirects=False)
    assert offsite.status_code == 303 and offsite.headers["location"] == "/ui"
    cookie = offsite.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and api_key.lower() in cookie
    assert app_client.get("/ui").status_code == 200  # the cookie now rides along
    assert app_client.get("/v1/jobs").status_code == 200  # so do the dashboard's GETs (event stream, downloads)
    assert app_client.post("/v1/jobs", json={}).status_code == 401  # but a cookie never authorises a write
    app_client.get("/ui/logout")
    assert app_client.get("/v1/jobs").status_code == 401
    reader = create_key(settings.database_url, "acme", "write")
    assert app_client.post("/ui/login", data={"key": reader}, follow_redirects=False).status_code == 403


def test_a_login_form_posted_from_another_site_is_refused(app_client, api_key):
    """Login CSRF: a page elsewhere must not sign a visitor's browser in with the attacker's key."""
    host = app_client.base_url.netloc.decode() if isinstance(app_client.base_url.netloc, bytes) \
        else app_client.base_url.netloc
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        refused = app_client.post("/ui/login", data={"key": api_key}, headers=headers, follow_redirects=False)
        assert refused.status_code == 403 and "another site" in refused.text, headers
        assert "set-cookie" not in refused.headers
    for headers in ({"Origin": f"http://{host}"}, {"Sec-Fetch-Site": "same-origin"}, {}):
        signed_in = app_client.post("/ui/login", data={"key": api_key}, headers=headers, follow_redirects=False)
        assert signed_in.status_code == 303 and "set-cookie" in signed_in.headers, headers


def test_create_key_refuses_a_name_longer_than_its_column(settings):
    """A --name over 200 characters was a Postgres StringDataRightTruncation traceback from create-key;
    now it is a one-line refusal (exit 2) and no tenant or key is made."""
    made = admin(settings, "create-key", "--tenant", "acme", "--name", "n" * 201)
    assert made.returncode == 2 and "at most 200" in made.stderr and "Traceback" not in made.stderr, made.stderr
    with get_engine(settings.database_url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM api_keys")).scalar_one() == 0
    assert admin(settings, "create-key", "--tenant", "acme", "--name", "n" * 200).returncode == 0


def test_the_embedded_key_file_is_private_even_when_it_existed(settings):
    """ensure_local_key replaced a stale key file (a revoked key, another database's) in place, keeping its
    old mode: a world-readable file then held the new admin key."""
    import stat

    from app.cli import ensure_local_key

    path = settings.data_dir / "api-key"
    path.write_text("clr_00000000_stale\n")
    path.chmod(0o644)
    key, written = ensure_local_key(settings.model_copy(update={"api_key_file": path}))
    assert key and written == path and path.read_text().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_database_nobody_migrated_is_not_ready_and_the_cli_says_what_to_run(settings, auth):
    """A fresh Postgres database without `migrate`: /readyz said ready while every route was a 500, and create-key
    printed an UndefinedTable traceback."""
    from tests.service.conftest import create_pg_database, drop_pg_database, run_alembic

    name, url = create_pg_database()
    try:
        bare = settings.model_copy(update={"database_url": url})
        with TestClient(create_app(bare, enqueue=lambda _id: None)) as client:
            response = client.get("/readyz")
            error = response.json()["error"]
            assert response.status_code == 503 and error["details"][0]["check"] == "database", response.text
            assert "no schema" in error["message"] and "app.cli migrate" in error["message"]
            # a well-formed key: its lookup meets the missing table (a 500 "internal_error" before)
            jobs = client.get("/v1/jobs", headers={"Authorization": "Bearer clr_00000000_" + "x" * 43})
            assert jobs.status_code == 503 and jobs.json()["error"]["code"] == "database_not_migrated", jobs.text
        made = admin(bare, "create-key", "--tenant", "acme")
        assert made.returncode == 2 and "app.cli migrate" in made.stderr and "Traceback" not in made.stderr, made
        run_alembic(url, "upgrade", "head")
        with TestClient(create_app(bare, enqueue=lambda _id: None)) as client:
            assert client.get("/readyz").status_code == 200
        quotas = admin(bare, "set-quotas", "--tenant", "acme-typo", "--upload-bytes", "5")
        assert quotas.returncode == 0 and "did not exist and was made" in quotas.stderr, quotas
    finally:
        drop_pg_database(name, url)
