"""Idempotency-Key on every POST: the same key and body replay the first answer (one job, one
dataset, one enqueue); the same key with another body is a 409; a key still in use is a 409 with
Retry-After; 5xx answers are not remembered; a malformed key is a 422."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.db import session_factory
from app.main import create_app
from app.models import IdempotencyKey, utcnow
from tests.service.conftest import table_counts
from tests.service.helpers import to_bytes, toy_frame, upload_frame


@pytest.fixture
def dataset(client):
    return upload_frame(client, toy_frame(30))


def _post_job(client, dataset_id, key, **extra):
    return client.post("/v1/jobs", json={"dataset_id": dataset_id, "base_model": "tiny-bert", **extra},
                       headers={"Idempotency-Key": key})


def test_the_same_key_and_body_replay_the_first_job(client, settings, dataset, enqueued):
    first = _post_job(client, dataset["id"], "job-1")
    second = _post_job(client, dataset["id"], "job-1")
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json() and second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert enqueued == [first.json()["id"]] and table_counts(settings.database_url)["jobs"] == 1


def test_the_same_key_with_another_body_is_409(client, dataset):
    assert _post_job(client, dataset["id"], "job-2").status_code == 201
    reused = _post_job(client, dataset["id"], "job-2", training={"epochs": 9})
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "idempotency_key_reused"
    elsewhere = client.post("/v1/jobs/job_nope/cancel", headers={"Idempotency-Key": "job-2"})
    assert elsewhere.status_code == 409  # a key names one request, whatever the route


def test_an_upload_is_replayed_though_the_multipart_boundary_changes(client, settings):
    content = to_bytes(toy_frame(30), "csv")
    answers = [client.post("/v1/datasets", files={"file": ("train.csv", content)}, data={"name": "toy"},
                           headers={"Idempotency-Key": "upload-1"}) for _ in range(2)]
    assert [a.status_code for a in answers] == [201, 201] and answers[0].json() == answers[1].json()
    assert answers[1].headers["Idempotent-Replayed"] == "true"
    assert table_counts(settings.database_url)["datasets"] == 1
    other = client.post("/v1/datasets", files={"file": ("train.csv", content + b"x y,1\n")},
                        headers={"Idempotency-Key": "upload-1"})
    assert other.status_code == 409


def test_a_4xx_is_replayed_and_a_5xx_is_not_remembered(settings, dataset, auth):
    calls = []

    def flaky_enqueue(job_id):
        calls.append(job_id)
        if len(calls) == 1:
            raise ConnectionError("broker down")

    with TestClient(create_app(settings, enqueue=flaky_enqueue), headers=auth) as client:
        bad = [_post_job(client, "ds_nope", "bad-1") for _ in range(2)]
        assert [b.status_code for b in bad] == [404, 404] and bad[1].headers["Idempotent-Replayed"] == "true"
        assert _post_job(client, dataset["id"], "flaky").status_code == 503
        retried = _post_job(client, dataset["id"], "flaky")
        assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers


def test_a_key_still_in_use_is_409_with_retry_after(client, settings, dataset):
    first = client.post(f"/v1/jobs/{_post_job(client, dataset['id'], 'j').json()['id']}/cancel",
                        headers={"Idempotency-Key": "cancel-1"})
    assert first.status_code == 200
    with session_factory(settings.database_url)() as session:  # as if the first request were still running
        session.execute(update(IdempotencyKey).where(IdempotencyKey.key == "cancel-1")
                        .values(state="in_progress", locked_until=utcnow() + timedelta(minutes=5)))
        session.commit()
    busy = client.post(first.request.url.path, headers={"Idempotency-Key": "cancel-1"})
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "idempotency_key_in_use"
    assert int(busy.headers["Retry-After"]) > 0


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "caf\u00e9"])
def test_a_malformed_key_is_422(client, dataset, key):
    response = client.post("/v1/jobs", json={"dataset_id": dataset["id"]},
                           headers={"Idempotency-Key": key.encode("utf-8")})
    assert response.status_code == 422 and response.json()["error"]["param"] == "Idempotency-Key"
