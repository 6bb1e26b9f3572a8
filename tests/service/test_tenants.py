"""Tenant isolation, route by route: tenant B's key on each of tenant A's objects answers 404 exactly as
an unknown id does, and changes nothing. The routes come from the app's OpenAPI schema, so a new route
is covered (or makes this test fail until it is) without anyone adding it here."""

from __future__ import annotations

import io
import re
import tarfile

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text, update

from app.db import get_engine, session_factory
from app.main import create_app
from app.models import Job
from app.storage import ArtifactStore, adapter_key
from tests.service.conftest import AUTH_TABLES, TABLES, create_key
from tests.service.fake_results import make_finished_job
from tests.service.helpers import toy_frame, upload_frame

UNKNOWN = {"job_id": "job_000000000000000000000000", "dataset_id": "ds_000000000000000000000000",
           "prediction_id": "pred_000000000000000000000000"}
STREAM = "/v1/jobs/{job_id}/events/stream"
# Routes without an id in the path, and how each is checked for leaks instead of a 404.
UNSCOPED = {("GET", "/v1/datasets"), ("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("POST", "/v1/datasets"),
            ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/v1/models")}


def snapshot(url: str, store_root) -> dict:
    """Every row of every service table, and the artifact files: what 'nothing changed' compares."""
    with get_engine(url).connect() as conn:
        rows = {t: sorted(map(repr, conn.execute(text(f"SELECT * FROM {t}")).all())) for t in TABLES + AUTH_TABLES}
    rows["artifacts"] = sorted(str(p) for p in store_root.rglob("*")) if store_root.exists() else []
    return rows


@pytest.fixture
def tenant_a_objects(client, settings, tmp_path):
    """Tenant A's dataset, a finished job (report, events, adapter archive), a queued job and a queued prediction
    run of the finished job."""
    finished, _ = make_finished_job(client, settings)
    archive = tmp_path / "adapter.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("clear_config.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    key = ArtifactStore(settings.artifact_url).put_file(str(archive), adapter_key("tenant-a", finished))
    with session_factory(settings.database_url)() as session:
        session.execute(update(Job).where(Job.id == finished).values(adapter_uri=key))
        session.commit()
    dataset = upload_frame(client, toy_frame(30))
    queued = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert"}).json()["id"]
    assert client.get(f"/v1/jobs/{finished}/adapter").status_code == 200  # A itself can read all of it
    run = client.post(f"/v1/jobs/{finished}/predictions", json={"dataset_id": dataset["id"]})
    assert run.status_code == 201, run.text
    return {"job_id": [finished, queued], "dataset_id": [dataset["id"]], "prediction_id": [run.json()["id"]]}


@pytest.fixture
def tenant_b(settings, enqueued):
    """A client of tenant B whose key has every scope."""
    key = create_key(settings.database_url, "tenant-b")
    with TestClient(create_app(settings, enqueue=enqueued.append),
                    headers={"Authorization": f"Bearer {key}"}) as client:
        yield client


def _operations(app):
    for path, item in app.openapi()["paths"].items():
        for method in item:
            yield method.upper(), path


# Routes that need a valid body to get past validation (a 422) to the tenant's 404.
BODIES = {("POST", "/v1/jobs/{job_id}/noise-report/decisions"): {"decisions": [{"row_index": 0, "action": "keep"}]},
          ("POST", "/v1/datasets/{dataset_id}/versions"): {"from_job": UNKNOWN["job_id"]},
          ("POST", "/v1/jobs/{job_id}/predictions"): {"dataset_id": UNKNOWN["dataset_id"]}}


def _call(client, method: str, path: str, ids: dict[str, str]):
    url = path.format(**ids)
    body = BODIES.get((method, path))
    return client.request(method, url, json=body) if body is not None else client.request(method, url)


def _as_unknown(body: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        body = body.replace(value, f"<{name}>")
    return body


def test_tenant_b_gets_404_on_every_route_for_tenant_a_objects_and_changes_nothing(
        client, tenant_b, tenant_a_objects, settings):
    store_root = settings.data_dir / "artifacts"
    checked = []
    for method, path in _operations(tenant_b.app):
        params = re.findall(r"{(\w+)}", path)
        if not params:
            assert (method, path) in UNSCOPED, f"{method} {path} is new: say here how tenant isolation is checked"
            continue
        unknown_ids = {p: UNKNOWN[p] for p in params}
        assert set(params) <= set(tenant_a_objects), f"{method} {path}: no tenant-A object for {params}"
        expected = _call(tenant_b, method, path, unknown_ids)
        assert expected.status_code == 404, (method, path, expected.text)
        for value in tenant_a_objects[params[0]]:
            if path == STREAM and value != tenant_a_objects["job_id"][0]:
                continue  # a leaking stream on a queued job would never end; the finished job shows it
            ids = {params[0]: value}
            before = snapshot(settings.database_url, store_root)
            response = _call(tenant_b, method, path, ids)
            assert response.status_code == 404, (method, path, response.status_code, response.text[:300])
            assert _as_unknown(response.text, ids) == _as_unknown(expected.text, unknown_ids), (method, path)
            assert response.headers.get("content-type") == expected.headers.get("content-type")
            assert snapshot(settings.database_url, store_root) == before, f"{method} {path} changed something"
            checked.append(f"{method} {path}")
    for route in ("POST /v1/jobs/{job_id}/cancel", "GET /v1/jobs/{job_id}/adapter", "GET /v1/jobs/{job_id}/events",
                  "GET /v1/jobs/{job_id}/noise-report.csv", "GET /v1/jobs/{job_id}/noise-report.jsonl",
                  "GET /v1/jobs/{job_id}/noise-report", "GET /v1/jobs/{job_id}/noise-report/stats", f"GET {STREAM}",
                  "GET /v1/jobs/{job_id}", "GET /v1/datasets/{dataset_id}"):
        assert route in checked, route
    # A's objects are untouched and still A's
    assert client.get(f"/v1/jobs/{tenant_a_objects['job_id'][1]}").json()["status"] == "queued"


def test_lists_and_references_never_reach_another_tenant(client, tenant_b, tenant_a_objects, settings):
    a_jobs, (a_dataset,) = tenant_a_objects["job_id"], tenant_a_objects["dataset_id"]
    assert tenant_b.get("/v1/jobs").json() == {"data": [], "count": 0, "next_cursor": None}
    assert tenant_b.get("/v1/datasets").json()["count"] == 0
    assert tenant_b.get("/v1/models").json() == client.get("/v1/models").json()  # server-wide, no tenant's data
    assert all(tenant_b.get("/v1/jobs", params={"status": s}).json()["count"] == 0 for s in ("queued", "succeeded"))
    unknown = tenant_b.post("/v1/jobs", json={"dataset_id": UNKNOWN["dataset_id"], "base_model": "tiny-bert"})
    foreign = tenant_b.post("/v1/jobs", json={"dataset_id": a_dataset, "base_model": "tiny-bert"})
    assert foreign.status_code == unknown.status_code == 404
    assert _as_unknown(foreign.text, {"d": a_dataset}) == _as_unknown(unknown.text, {"d": UNKNOWN["dataset_id"]})
    own = upload_frame(tenant_b, toy_frame(30))
    before = snapshot(settings.database_url, settings.data_dir / "artifacts")
    held_out = tenant_b.post("/v1/jobs", json={"dataset_id": own["id"], "validation_dataset_id": a_dataset,
                                               "base_model": "tiny-bert"})
    assert held_out.status_code == 404 and held_out.json()["error"]["param"] == "validation_dataset_id"
    assert snapshot(settings.database_url, settings.data_dir / "artifacts") == before
    assert a_dataset in {d["id"] for d in client.get("/v1/datasets").json()["data"]}
    assert own["id"] not in {d["id"] for d in client.get("/v1/datasets").json()["data"]}
    assert {j["id"] for j in client.get("/v1/jobs").json()["data"]} == set(a_jobs)


def test_idempotency_keys_are_per_tenant(client, tenant_b, tenant_a_objects):
    (a_dataset,) = tenant_a_objects["dataset_id"]
    b_dataset = upload_frame(tenant_b, toy_frame(30))["id"]
    key = {"Idempotency-Key": "same-key"}
    first = client.post("/v1/jobs", json={"dataset_id": a_dataset, "base_model": "tiny-bert"}, headers=key)
    assert first.status_code == 201
    # the same key and body from B: not A's answer replayed, but B's own request (A's dataset is unknown to B)
    replay = tenant_b.post("/v1/jobs", json={"dataset_id": a_dataset, "base_model": "tiny-bert"}, headers=key)
    assert replay.status_code == 404 and "Idempotent-Replayed" not in replay.headers
    other = tenant_b.post("/v1/jobs", json={"dataset_id": b_dataset, "base_model": "tiny-bert"},
                          headers={"Idempotency-Key": "b-key"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    # A's key is still A's: a replay for A, untouched by B's use of it
    again = client.post("/v1/jobs", json={"dataset_id": a_dataset, "base_model": "tiny-bert"}, headers=key)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json()["id"] == first.json()["id"]


def test_the_dashboard_shows_only_the_tenants_own_jobs(client, tenant_b, tenant_a_objects):
    finished = tenant_a_objects["job_id"][0]
    assert finished in client.get("/ui").text
    assert finished not in tenant_b.get("/ui").text
    page, unknown = tenant_b.get(f"/ui/jobs/{finished}"), tenant_b.get(f"/ui/jobs/{UNKNOWN['job_id']}")
    assert page.status_code == unknown.status_code == 404
    assert _as_unknown(page.text, {"j": finished}) == _as_unknown(unknown.text, {"j": UNKNOWN["job_id"]})
