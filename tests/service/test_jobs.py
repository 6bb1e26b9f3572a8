"""Jobs API: resolved defaults echoed, bad settings as 422 with param, 404/409, pagination,
status filter, cancel, the append-only event log, and enqueue only after commit."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.db import get_engine, session_factory
from app.main import create_app
from app.models import Job
from clear_core.config import ClearConfig, TrainingConfig, resolve_configs
from app.services.transitions import transition
from tests.service.conftest import table_counts
from tests.service.helpers import create_job
from tests.service.helpers import toy_frame, upload_frame


@pytest.fixture
def dataset(client):
    """A ready toy dataset."""
    return upload_frame(client, toy_frame(30))


def _create(client, dataset_id, **body):
    return client.post("/v1/jobs", json={"dataset_id": dataset_id, "base_model": "tiny-bert", **body})


def test_create_echoes_every_resolved_default(client, dataset, enqueued):
    response = _create(client, dataset["id"], clear={"routing_cap": 0.7}, training={"epochs": 2})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued" and job["attempt"] == 0 and job["progress"] == 0.0
    clear = ClearConfig(method="lora", routed=True, routing_cap=0.7)
    # the service checkpoints mid-epoch by default (CLEAR_CHECKPOINT_EVERY_STEPS) so a crash loses little
    clear, training = resolve_configs(clear, TrainingConfig(epochs=2, checkpoint_every_steps=200))
    assert job["clear"] == clear.to_dict() and job["training"] == training.to_dict()
    assert job["time_limit_s"] == 24 * 3600 and job["soft_time_limit_s"] == int(24 * 3600 * 0.95)
    assert job["training"]["learning_rate"] is not None  # every default resolved, none left open
    assert job["clear"]["warmup_epochs"] == 1  # min(3, epochs - 1): a routed job always routes
    assert job["base_model"] == "tiny-bert" and enqueued == [job["id"]]
    assert client.get(f"/v1/jobs/{job['id']}").json() == job


def test_enqueue_happens_after_the_commit(settings, dataset, auth):
    seen = []

    def enqueue(job_id):  # a worker in another process must already find the row
        with session_factory(settings.database_url)() as other:
            seen.append(other.get(Job, job_id).status)

    with TestClient(create_app(settings, enqueue=enqueue), headers=auth) as client:
        assert _create(client, dataset["id"]).status_code == 201
    assert seen == ["queued"]


BAD_JOBS = [
    ({"clear": {"routing_cap": 2}}, "clear.routing_cap"),
    ({"clear": {"warmup_epochs": -1}}, "clear.warmup_epochs"),
    ({"clear": {"no_such_field": 1}}, "clear.no_such_field"),
    ({"clear": {"method": "adapter"}}, "clear.method"),  # differs from the job's method (lora): equal is taken
    ({"training": {"epochs": 0}}, "training.epochs"),
    ({"training": {"keep": "sometimes"}}, "training.keep"),
    ({"method": "dropout"}, "method"),
    ({"base_model": "../etc"}, "base_model"),
    ({"validation_fraction": 0.9}, "validation_fraction"),
    ({"validation_fraction": 0.1, "training": {"validation_fraction": 0.2}}, "validation_fraction"),
    ({"surprise": True}, "surprise"),
    # found by a fresh-user break test: a 500, or accepted and failing (or silently changed) on the worker
    ({"training": {"learning_rate": 10**400}}, "training.learning_rate"),
    ({"clear": {"routing_cap": 10**400}}, "clear.routing_cap"),
    ({"training": {"seed": -1}}, "training.seed"),
    ({"clear": {"lora_target_modules": []}}, "clear.lora_target_modules"),
    ({"clear": {"lora_target_modules": ["query", "nonexistent"]}}, "clear.lora_target_modules"),
    ({"clear": {"lora_target_modules": ["classifier"]}}, "clear.lora_target_modules"),  # outside the blocks
    ({"clear": {"lora_alpha": 0}}, "clear.lora_alpha"),
    ({"clear": {"lora_alpha": 1e-300}}, "clear.lora_alpha"),
    ({"clear": {"temperature": 1e-300}}, "clear.temperature"),
    ({"time_limit_s": 1e20}, "time_limit_s"),  # pydantic's "exceeded maximum size": now says give a smaller number
    ({"routed": "yes"}, "routed"),
    ({"routed": 1}, "routed"),
    ({"base_model": ""}, "base_model"),
    ({"training": {"keep": "best"}, "validation_fraction": 0}, "training.keep"),
    # a second break test: a 500, settings that failed on the worker, and one silently changed
    ({"validation_dataset_id": ""}, "validation_dataset_id"),
    ({"clear": {"lora_target_modules": ["nonexistent.attention.self.query"]}}, "clear.lora_target_modules"),
    ({"clear": {"lora_target_modules": ["bert.encoder.layer.99.attention.self.query"]}}, "clear.lora_target_modules"),
    ({"clear": {"lora_target_modules": ["x.output.dense"]}}, "clear.lora_target_modules"),
    ({"clear": {"lora_target_modules": ["a" * 100_000]}}, "clear.lora_target_modules"),
    ({"training": {"keep": "best"}, "validation_fraction": 0.001}, "training.keep"),  # rounds to no row
    ({"training": {"seed": -10**400}}, "training.seed"),
    ({"time_limit_s": 10**400}, "time_limit_s"),
]


@pytest.mark.parametrize("body,param", BAD_JOBS, ids=[p for _, p in BAD_JOBS])
def test_bad_settings_are_422_naming_the_field_and_store_nothing(client, settings, dataset, enqueued, body, param):
    response = _create(client, dataset["id"], **body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and "maximum size" not in error["message"]
    assert len(response.content) < 5000  # a huge value is not echoed whole
    assert table_counts(settings.database_url)["jobs"] == 0 and enqueued == []


def test_a_nan_validation_fraction_is_said_to_be_not_finite(client, settings, dataset, enqueued):
    body = '{"dataset_id": "%s", "base_model": "tiny-bert", "validation_fraction": NaN}' % dataset["id"]
    answer = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422 and answer.json()["error"]["param"] == "validation_fraction", answer.text
    assert "finite" in answer.json()["error"]["message"]  # was "should be less than or equal to 0.5"
    assert table_counts(settings.database_url)["jobs"] == 0


def test_the_settings_next_to_the_refused_ones_are_accepted(client, dataset, enqueued):
    """The boundaries of the checks above: what a user may still give."""
    for body in ({"clear": {"lora_target_modules": ["attention.self.query", "value",
                                                    "bert.encoder.layer.1.output.dense", "dense"]}},
                 {"clear": {"temperature": 0.01, "lora_alpha": 0.5}},
                 {"training": {"seed": 0, "learning_rate": 10}},
                 {"training": {"keep": "best"}},  # the default validation_fraction holds rows out
                 {"routed": False}):
        answer = _create(client, dataset["id"], **body)
        assert answer.status_code == 201, (body, answer.text)
    message = _create(client, dataset["id"], clear={"lora_target_modules": ["nonexistent"]}).json()["error"]["message"]
    assert "'nonexistent'" in message and "attention.self.query" in message  # names what the model has


def test_the_training_dataset_is_refused_as_its_own_validation_dataset(client, settings, dataset, enqueued):
    answer = _create(client, dataset["id"], validation_dataset_id=dataset["id"])
    assert answer.status_code == 422 and answer.json()["error"]["param"] == "validation_dataset_id", answer.text
    assert table_counts(settings.database_url)["jobs"] == 0 and enqueued == []
    other = upload_frame(client, toy_frame(20))
    assert _create(client, dataset["id"], validation_dataset_id=other["id"],
                   training={"keep": "best"}, validation_fraction=0).status_code == 201


def test_unknown_dataset_is_404_and_unready_dataset_is_409(client, settings, dataset):
    error = _create(client, "ds_missing").json()["error"]
    assert (error["code"], error["param"]) == ("not_found", "dataset_id")
    with get_engine(settings.database_url).begin() as conn:
        conn.execute(text("UPDATE datasets SET status = 'processing'"))
    response = _create(client, dataset["id"])
    assert response.status_code == 409 and response.json()["error"]["code"] == "dataset_not_ready"
    assert table_counts(settings.database_url)["jobs"] == 0


def test_unknown_job_is_404_on_every_route(client):
    for method, path in [("get", ""), ("post", "/cancel"), ("get", "/events"), ("get", "/noise-report"),
                         ("get", "/noise-report.csv"), ("get", "/noise-report.jsonl"), ("get", "/adapter")]:
        response = getattr(client, method)(f"/v1/jobs/job_missing{path}")
        assert response.status_code == 404, path
        assert response.json()["error"] == {"code": "not_found", "message": "no job with id 'job_missing'",
                                            "param": "job_id"}
    huge = client.post("/v1/jobs", json={"dataset_id": "d" * 300_000})  # an id is not echoed whole
    assert huge.status_code == 404 and len(huge.content) < 1000 and "300002 characters" in huge.text


def test_list_pages_and_filters_by_status(client, dataset):
    ids = [_create(client, dataset["id"]).json()["id"] for _ in range(5)]
    client.post(f"/v1/jobs/{ids[1]}/cancel")
    seen, cursor = [], None
    while True:
        page = client.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [j["id"] for j in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()
    assert cancelled["count"] == 1 and [j["id"] for j in cancelled["data"]] == [ids[1]]
    assert client.get("/v1/jobs", params={"status": "queued"}).json()["count"] == 4
    assert client.get("/v1/jobs", params={"status": "done"}).json()["error"]["param"] == "status"


def test_cancel_queued_running_and_finished(client, settings, dataset):
    queued = _create(client, dataset["id"]).json()["id"]
    assert client.post(f"/v1/jobs/{queued}/cancel").json()["status"] == "cancelled"
    assert client.post(f"/v1/jobs/{queued}/cancel").status_code == 200  # idempotent
    running = _create(client, dataset["id"]).json()["id"]
    factory = session_factory(settings.database_url)
    with factory() as session:
        assert transition(session, running, ("queued",), "running")
    assert client.post(f"/v1/jobs/{running}/cancel").json()["status"] == "cancelling"
    with factory() as session:
        assert transition(session, running, ("cancelling",), "failed")
    response = client.post(f"/v1/jobs/{running}/cancel")
    assert response.status_code == 409 and response.json()["error"]["code"] == "job_finished"
    states = [e["data"]["status"] for e in client.get(f"/v1/jobs/{running}/events").json()["data"]]
    assert states == ["queued", "running", "cancelling", "failed"]


def test_each_job_numbers_its_events_without_gaps_while_jobs_interleave(client, dataset, settings):
    import threading

    from app.db import session_factory
    from app.services.transitions import add_event

    first, second = (_create(client, dataset["id"]).json()["id"] for _ in range(2))
    factory = session_factory(settings.database_url)

    def write(job_id: str) -> None:  # two writers per job at once: the row lock must keep the numbers apart
        for i in range(10):
            with factory() as session:
                add_event(session, job_id, "message", message=f"m{i}")
                session.commit()

    threads = [threading.Thread(target=write, args=(j,)) for j in (first, second, first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for job_id in (first, second):
        events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
        assert [e["seq"] for e in events] == list(range(1, 22))  # the queued state event, then 20 messages
    ids = [e["id"] for e in client.get(f"/v1/jobs/{first}/events", params={"limit": 100}).json()["data"]]
    assert ids != list(range(ids[0], ids[0] + len(ids)))  # the global ids do have gaps: the other job's


def test_events_page_with_a_resumable_cursor(client, dataset):
    job_id = _create(client, dataset["id"]).json()["id"]
    client.post(f"/v1/jobs/{job_id}/cancel")
    first = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1}).json()
    assert first["count"] == 2 and first["has_more"] and first["data"][0]["data"] == {"status": "queued"}
    second = client.get(f"/v1/jobs/{job_id}/events", params={"cursor": first["next_cursor"]}).json()
    assert [e["data"]["status"] for e in second["data"]] == ["cancelled"] and not second["has_more"]
    empty = client.get(f"/v1/jobs/{job_id}/events", params={"cursor": second["next_cursor"]}).json()
    assert empty["data"] == [] and empty["next_cursor"] == second["next_cursor"]


def test_broker_down_gives_503_and_leaves_no_job_behind(settings, dataset, auth):
    def enqueue(_job_id):
        raise ConnectionError("broker unreachable")

    with TestClient(create_app(settings, enqueue=enqueue), headers=auth) as client:
        for _ in range(2):
            response = _create(client, dataset["id"])
            assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
        assert client.get("/v1/jobs").json()["count"] == 0  # no failed job per refused request
    counts = table_counts(settings.database_url)
    assert counts["jobs"] == 0 and counts["job_events"] == 0


def test_results_of_an_unfinished_job_are_409(client, dataset):
    job_id = _create(client, dataset["id"]).json()["id"]
    for path in ("noise-report", "noise-report.csv", "adapter"):
        response = client.get(f"/v1/jobs/{job_id}/{path}")
        assert response.status_code == 409, path
        assert response.json()["error"]["code"] in ("report_not_ready", "adapter_not_ready")


def test_a_nul_character_anywhere_in_a_request_is_a_4xx_naming_where(client, settings, dataset):
    """Postgres text cannot hold NUL: a %00 in a path id, a query filter or a JSON id was a 500 (a DataError)."""
    job_id = create_job(client, dataset["id"], {"epochs": 2})
    for path in ("/v1/jobs/job_%00", f"/v1/jobs/{job_id}%00/events", "/v1/datasets/ds_%00", "/v1/predictions/p%00",
                 "/ui/jobs/job_%00"):
        response = client.get(path)
        assert response.status_code == 400 and response.json()["error"]["param"] == "path", (path, response.text)
    for query, name in (("given_label=%00", "given_label"), ("suggested_label=a%00b", "suggested_label")):
        response = client.get(f"/v1/jobs/{job_id}/noise-report?{query}")
        error = response.json()["error"]
        assert response.status_code == 422 and error["param"] == name and "NUL" in error["message"], response.text
    for body, param in (({"dataset_id": "ds_\x00"}, "dataset_id"),
                        ({"dataset_id": dataset["id"], "validation_dataset_id": "ds_\x00"}, "validation_dataset_id")):
        response = client.post("/v1/jobs", json=body)
        error = response.json()["error"]
        assert response.status_code == 422 and error["param"] == param and "NUL" in error["message"], response.text
    response = client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": "ds_\x00"})
    assert response.status_code == 422 and response.json()["error"]["param"] == "dataset_id", response.text
    assert table_counts(settings.database_url)["jobs"] == 1


def test_a_jobs_echoed_settings_can_be_sent_back(client, settings, dataset):
    """The job's answer repeats method and routed inside clear; a resubmission of its own settings was a 422."""
    first = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert",
                                          "training": {"epochs": 2}}).json()
    again = client.post("/v1/jobs", json={k: first[k] for k in ("dataset_id", "base_model", "method", "routed", "clear",
                                                                 "training")})
    assert again.status_code == 201, again.text
    assert again.json()["clear"] == first["clear"]
