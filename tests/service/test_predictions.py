"""Prediction runs against Postgres with the worker's plain pipeline (tiny BERT): a labelled dataset gets
probabilities and the label check (flipped labels flagged); an uploaded unlabelled file gets predictions
only; unfinished jobs, other tenants, bad files, quotas, Idempotency-Key and a broker outage; a lost
attempt writes nothing and the next one replaces a half-written set; deletion of a job's runs; and a real
Celery worker killed mid-run whose run a second worker finishes."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
from datetime import timedelta

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

import worker.predict as predict_module
from app.db import session_factory
from app.main import create_app
from app.models import Job, PredictionRow, Tenant, utcnow
from app.services.leases import reap
from app.services.predictions import delete_prediction_runs, input_key
from app.storage import ArtifactStore
from tests.service.conftest import REDIS_URL, create_key
from tests.service.helpers import create_job, to_bytes, toy_frame, upload_frame
from tests.service.workers import ROOT, kill_worker, start_worker, stop_worker, wait_for, worker_env
from worker.pipeline import execute_job
from worker.predict import PredictionColumns, write_rows

# plain LoRA that learns the toy task on the tiny BERT (accuracy 1.0 on three seeds), so the label check can work
TRAINING = {"epochs": 8, "batch_size": 8, "max_length": 16, "learning_rate": 3e-2}


def _factory(settings):
    return session_factory(settings.database_url)


def _trained_job(client, settings) -> str:
    dataset = upload_frame(client, toy_frame(120, noise=0.0))
    job_id = create_job(client, dataset["id"], TRAINING, routed=False)
    assert execute_job(job_id, settings=settings) == "succeeded"
    return job_id


def _fake_succeeded_job(client, settings) -> str:
    """A job marked succeeded without training (for requests refused before any worker runs)."""
    dataset = upload_frame(client, toy_frame(30))
    job_id = create_job(client, dataset["id"], TRAINING)
    with _factory(settings)() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="succeeded", adapter_uri="x"))
        session.commit()
    return job_id


def _upload(client, job_id, frame, fmt="csv", **form):
    return client.post(f"/v1/jobs/{job_id}/predictions", files={"file": (f"input.{fmt}", to_bytes(frame, fmt))},
                       data={k: v for k, v in form.items() if v is not None})


def _runs(settings) -> int:
    with _factory(settings)() as session:
        return session.scalar(select(func.count()).select_from(Job).where(Job.kind == "predict"))


def _rows(settings, run_id) -> list[PredictionRow]:
    with _factory(settings)() as session:
        return list(session.scalars(select(PredictionRow).where(PredictionRow.run_id == run_id)
                                    .order_by(PredictionRow.row_index)))


def _files(settings) -> list[str]:
    root = settings.data_dir / "artifacts" / "tenants"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "predictions" in p.parts) \
        if root.exists() else []


def test_a_run_on_a_labelled_dataset_predicts_every_row_and_flags_flipped_labels(client, settings, enqueued):
    job_id = _trained_job(client, settings)
    frame = toy_frame(60, noise=0.1, seed=5)
    dataset = upload_frame(client, frame)
    response = client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": dataset["id"]})
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["id"].startswith("pred_") and run["status"] == "queued" and run["progress"] == 0
    assert (run["job_id"], run["dataset_id"], run["row_count"], run["labelled"]) == (job_id, dataset["id"], 60, True)
    assert enqueued[-1] == run["id"]
    assert execute_job(run["id"], settings=settings) == "succeeded"
    got = client.get(f"/v1/predictions/{run['id']}").json()
    assert (got["status"], got["progress"], got["attempt"], got["error"]) == ("succeeded", 1.0, 1, None)
    summary = got["summary"]
    assert summary["rows"] == 60 and summary["labels"] == ["0", "1", "2"] and summary["labelled"]
    assert abs(sum(map(sum, summary["noise_matrix"]["joint"])) - 1) < 1e-6 and summary["estimated_noise_rate"] > 0
    rows = client.get(f"/v1/predictions/{run['id']}/rows", params={"limit": 1000}).json()
    assert rows["count"] == 60 and [r["row_index"] for r in rows["data"]] == list(range(60))
    for row in rows["data"]:
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-5 and row["flag_reason"]
        assert "passes" not in row["flag_reason"]  # a prediction run has none: its reasons name the model's
        assert row["predicted_label"] == max(row["probabilities"], key=row["probabilities"].get)
        assert 0 <= row["label_quality"] <= 1 and row["given_label"] in ("0", "1", "2")
    flipped = {i for i in range(60) if frame["label"][i] != frame["gold"][i]}
    flagged = {r["row_index"] for r in rows["data"] if r["flagged"]}
    assert summary["flagged"] == len(flagged) and len(flagged & flipped) >= len(flipped) // 2
    assert len(flagged & flipped) >= 0.6 * len(flagged)  # what it flags is mostly really wrong
    only = client.get(f"/v1/predictions/{run['id']}/rows", params={"flagged": "true", "limit": 2}).json()
    assert only["count"] == len(flagged) and all(r["flagged"] for r in only["data"])
    if only["next_cursor"]:
        more = client.get(f"/v1/predictions/{run['id']}/rows",
                          params={"flagged": "true", "limit": 2, "cursor": only["next_cursor"]}).json()
        assert more["data"][0]["row_index"] > only["data"][-1]["row_index"]
    zeros = client.get(f"/v1/predictions/{run['id']}/rows", params={"predicted_label": "0", "limit": 1000}).json()
    assert zeros["count"] == summary["predicted_histogram"]["0"]
    table = list(csv.DictReader(io.StringIO(client.get(f"/v1/predictions/{run['id']}/rows.csv").text)))
    assert len(table) == 60 and {"p_0", "p_1", "p_2", "flagged", "suggested_label"} <= set(table[0])
    lines = client.get(f"/v1/predictions/{run['id']}/rows.jsonl").text.splitlines()
    assert json.loads(lines[0])["summary"] == summary and len(lines) == 61
    # a run is a job row of kind predict: not a training job of the job API
    assert run["id"] not in [j["id"] for j in client.get("/v1/jobs").json()["data"]]
    assert client.get(f"/v1/jobs/{run['id']}").status_code == 404
    assert [r["id"] for r in client.get(f"/v1/jobs/{job_id}/predictions").json()["data"]] == [run["id"]]


def test_an_uploaded_unlabelled_file_gets_predictions_without_a_label_check(client, settings):
    job_id = _trained_job(client, settings)
    frame = toy_frame(20, seed=9)[["id", "text"]]
    frame.loc[3, "text"] = "=HYPERLINK(\"x\") market stocks"
    response = _upload(client, job_id, frame, "jsonl", id_column="id")
    assert response.status_code == 201, response.text
    run = response.json()
    assert (run["dataset_id"], run["input_name"], run["row_count"], run["labelled"]) == (None, "input.jsonl", 20,
                                                                                       False)
    assert _files(settings) == [f"tenant-a/predictions/{run['id']}/input.parquet"]
    assert execute_job(run["id"], settings=settings) == "succeeded"
    assert _files(settings) == []  # the input goes once the run has ended
    summary = client.get(f"/v1/predictions/{run['id']}").json()["summary"]
    assert not summary["labelled"] and "flagged" not in summary and sum(summary["predicted_histogram"].values()) == 20
    rows = client.get(f"/v1/predictions/{run['id']}/rows", params={"limit": 100}).json()["data"]
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(20)]
    assert all(r[k] is None for r in rows for k in ("given_label", "flagged", "suggested_label", "label_quality"))
    table = list(csv.reader(io.StringIO(client.get(f"/v1/predictions/{run['id']}/rows.csv").text)))
    assert table[0] == ["row_index", "id", "text", "text_pair", "predicted_label", "confidence", "p_0", "p_1", "p_2"]
    assert table[4][2].startswith("'=HYPERLINK")  # neutralised for spreadsheets
    record = json.loads(client.get(f"/v1/predictions/{run['id']}/rows.jsonl").text.splitlines()[1])
    assert "flagged" not in record and set(record["probabilities"]) == {"0", "1", "2"}


def test_uploads_are_validated_like_datasets_and_a_rejected_one_stores_nothing(client, settings):
    job_id = _fake_succeeded_job(client, settings)
    unknown = toy_frame(12)
    unknown.loc[2, "label"] = 7
    response = _upload(client, job_id, unknown)
    assert response.status_code == 422 and response.json()["error"]["code"] == "unknown_label"
    assert "['7']" in response.json()["error"]["message"] and response.json()["error"]["details"][0]["row"] == 2
    missing = _upload(client, job_id, toy_frame(12).rename(columns={"text": "body"}))
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "missing_column"
    explicit = _upload(client, job_id, toy_frame(12)[["text"]], label_column="label")  # named, so required
    assert explicit.status_code == 422 and explicit.json()["error"]["param"] == "label_column"
    empty_text = toy_frame(12)
    empty_text.loc[5, "text"] = ""
    bad_rows = _upload(client, job_id, empty_text, "parquet")
    assert bad_rows.status_code == 422 and bad_rows.json()["error"]["details"][0]["code"] == "empty_text"
    for body in (b'{"dataset_id":', b'{"dataset_id": "x", "batch_size": ' + b"9" * 5000 + b"}"):  # as on /v1/jobs
        refused = client.post(f"/v1/jobs/{job_id}/predictions", content=body, headers={"Content-Type": "application/json"})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "body", refused.text
    for media in ("text/plain", "application/x-www-form-urlencoded"):  # 415, not a 422 (the status is the media type)
        refused = client.post(f"/v1/jobs/{job_id}/predictions", content=b"x=1", headers={"Content-Type": media})
        assert refused.status_code == 415 and refused.json()["error"]["code"] == "unsupported_media_type"
        assert refused.json()["error"]["param"] == "Content-Type" and media in refused.json()["error"]["message"]
    assert client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset": "x"}).status_code == 422
    assert _runs(settings) == 0 and _files(settings) == []
    labelled = _upload(client, job_id, toy_frame(12), "parquet", batch_size="8")  # the 'label' column is found
    assert labelled.status_code == 201 and labelled.json()["labelled"] and labelled.json()["batch_size"] == 8


def test_unfinished_jobs_and_other_tenants(client, settings, auth):
    dataset = upload_frame(client, toy_frame(30))
    queued = create_job(client, dataset["id"], TRAINING)
    response = client.post(f"/v1/jobs/{queued}/predictions", json={"dataset_id": dataset["id"]})
    assert response.status_code == 409 and response.json()["error"]["code"] == "model_not_ready"
    assert _upload(client, queued, toy_frame(12)).status_code == 409
    job_id = _fake_succeeded_job(client, settings)
    run = client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": dataset["id"]}).json()
    assert client.get(f"/v1/predictions/{run['id']}/rows").status_code == 409  # not run yet
    other = {"Authorization": f"Bearer {create_key(settings.database_url, 'tenant-b')}"}
    with TestClient(create_app(settings, enqueue=lambda _id: None), headers=other) as b:
        theirs = upload_frame(b, toy_frame(30))
        assert b.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": theirs["id"]}).status_code == 404
        assert client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": theirs["id"]}).status_code == 404
        for path in (f"/v1/predictions/{run['id']}", f"/v1/predictions/{run['id']}/rows",
                     f"/v1/predictions/{run['id']}/rows.csv", f"/v1/jobs/{job_id}/predictions"):
            assert b.get(path).status_code == 404, path
        assert b.post(f"/v1/predictions/{run['id']}/cancel").status_code == 404
    assert client.post(f"/v1/predictions/{run['id']}/cancel").json()["status"] == "cancelled"
    assert execute_job(run["id"], settings=settings) == "skipped"


def test_quota_idempotency_and_a_broker_outage(client, settings, enqueued):
    job_id = _fake_succeeded_job(client, settings)
    dataset = upload_frame(client, toy_frame(30))
    with _factory(settings)() as session:
        session.execute(update(Tenant).where(Tenant.id == "tenant-a").values(max_concurrent_jobs=1))
        session.commit()
    key = {"Idempotency-Key": "predict-1"}
    first = client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": dataset["id"]}, headers=key)
    again = client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": dataset["id"]}, headers=key)
    assert first.status_code == again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["id"] == again.json()["id"] and _runs(settings) == 1 and len(enqueued) == 2  # job + run
    over = client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": dataset["id"]})
    assert over.status_code == 429 and over.json()["error"]["quota"] == "concurrent_jobs"
    assert _upload(client, job_id, toy_frame(12)).status_code == 429 and _files(settings) == []
    client.post(f"/v1/predictions/{first.json()['id']}/cancel")

    def broker_down(_id):
        raise ConnectionError("redis is down")

    with TestClient(create_app(settings, enqueue=broker_down), headers=dict(client.headers)) as down:
        outage = _upload(down, job_id, toy_frame(12))
    assert outage.status_code == 503 and outage.json()["error"]["code"] == "unavailable"
    with _factory(settings)() as session:
        runs = session.scalars(select(Job).where(Job.kind == "predict")).all()
    assert [r.status for r in runs] == ["cancelled"] and _files(settings) == []  # taken back, no orphan input
    assert client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": dataset["id"]}).status_code == 201


def test_a_lost_attempt_writes_nothing_and_the_next_replaces_a_half_written_set(client, settings, monkeypatch):
    job_id = _trained_job(client, settings)
    dataset = upload_frame(client, toy_frame(40, seed=3))
    run_id = client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": dataset["id"]}).json()["id"]
    reached, release = threading.Event(), threading.Event()
    real = predict_module.predict_proba

    def held(*args, **kwargs):
        reached.set()
        assert release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_module, "predict_proba", held)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(
        execute_job(run_id, settings=settings.model_copy(update={"heartbeat_interval_s": 600}))))
    thread.start()
    assert reached.wait(60)
    with _factory(settings)() as session:
        session.execute(update(Job).where(Job.id == run_id).values(
            heartbeat_at=utcnow() - timedelta(seconds=settings.lease_timeout_s + 1)))
        session.commit()
        redispatched = []
        assert reap(session, settings, redispatched.append).requeued == [run_id] == redispatched  # the reaper
    release.set()
    thread.join(60)
    assert outcome == ["lost"] and _rows(settings, run_id) == []
    monkeypatch.undo()
    # a half-written set from some earlier attempt: the next attempt's rows replace it whole
    junk = {"run_id": run_id, "tenant_id": "tenant-a", "text": "junk", "predicted_label": "9", "probabilities": [1.0]}
    with _factory(settings)() as session:
        session.execute(PredictionRow.__table__.insert(), [dict(junk, row_index=i) for i in (0, 1, 99)])
        session.commit()
    assert execute_job(run_id, settings=settings) == "succeeded"
    rows = _rows(settings, run_id)
    assert [r.row_index for r in rows] == list(range(40)) and all(r.predicted_label in "012" for r in rows)
    assert client.get(f"/v1/predictions/{run_id}").json()["attempt"] == 2


def test_rows_are_written_all_or_nothing_and_only_by_the_holder(client, settings):
    job_id = _fake_succeeded_job(client, settings)
    dataset = upload_frame(client, toy_frame(30))
    run_id = client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": dataset["id"]}).json()["id"]
    with _factory(settings)() as session:
        session.execute(update(Job).where(Job.id == run_id).values(status="running", attempt=1))
        session.commit()
    def columns(n: int, texts: list) -> PredictionColumns:
        return PredictionColumns(np.arange(n), [f"id-{i}" for i in range(n)], texts, None, ["0", "1"],
                                 np.zeros(n, np.int64), np.tile([0.75, 0.25], (n, 1)))

    bad = columns(13, ["t"] * 12 + [None])  # the last row breaks NOT NULL, in the third chunk of 5
    saved = predict_module.INSERT_BATCH, predict_module.COPY_CHUNK_ROWS
    predict_module.INSERT_BATCH = predict_module.COPY_CHUNK_ROWS = 5
    try:
        with _factory(settings)() as session, pytest.raises(Exception):
            write_rows(session, run_id, 1, bad, {"rows": 13})
    finally:
        predict_module.INSERT_BATCH, predict_module.COPY_CHUNK_ROWS = saved
    assert _rows(settings, run_id) == [] and client.get(f"/v1/predictions/{run_id}").json()["status"] == "running"
    good = columns(3, ["t", "a, \"quoted\"\nline", ""])
    with _factory(settings)() as session:
        assert not write_rows(session, run_id, 2, good, {"rows": 3})  # not this attempt's run
        assert write_rows(session, run_id, 1, good, {"rows": 3})
    rows = _rows(settings, run_id)
    assert [(r.row_index, r.row_id, r.text, r.predicted_label, r.probabilities, r.flagged) for r in rows] == [
        (0, "id-0", "t", "0", [0.75, 0.25], None), (1, "id-1", "a, \"quoted\"\nline", "0", [0.75, 0.25], None),
        (2, "id-2", "", "0", [0.75, 0.25], None)]
    assert client.get(f"/v1/predictions/{run_id}").json()["status"] == "succeeded"


def test_deleting_a_jobs_runs_refuses_while_one_is_active(client, settings):
    from app.errors import Conflict

    job_id = _fake_succeeded_job(client, settings)
    run = _upload(client, job_id, toy_frame(12)).json()
    store = ArtifactStore(settings.artifact_url)
    assert store.exists(input_key("tenant-a", run["id"]))
    with _factory(settings)() as session, pytest.raises(Conflict):
        delete_prediction_runs(session, store, job_id=job_id)
    client.post(f"/v1/predictions/{run['id']}/cancel")
    with _factory(settings)() as session:
        assert delete_prediction_runs(session, store, job_id=job_id) == [run["id"]]
        session.commit()
    assert _runs(settings) == 0 and _files(settings) == []
    assert client.get(f"/v1/predictions/{run['id']}").status_code == 404


def test_deleting_a_job_or_a_dataset_deletes_their_runs_and_refuses_while_one_is_active(client, settings):
    job_id = _fake_succeeded_job(client, settings)
    on_upload = _upload(client, job_id, toy_frame(12)).json()
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 409  # its run is queued
    assert client.delete(f"/v1/predictions/{on_upload['id']}").status_code == 409
    client.post(f"/v1/predictions/{on_upload['id']}/cancel")
    assert client.delete(f"/v1/predictions/{on_upload['id']}").status_code == 204
    assert client.get(f"/v1/predictions/{on_upload['id']}").status_code == 404 and _files(settings) == []
    again = _upload(client, job_id, toy_frame(12)).json()
    client.post(f"/v1/predictions/{again['id']}/cancel")
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert client.get(f"/v1/predictions/{again['id']}").status_code == 404 and _runs(settings) == 0
    other = _fake_succeeded_job(client, settings)
    dataset = upload_frame(client, toy_frame(30, seed=2))
    run = client.post(f"/v1/jobs/{other}/predictions", json={"dataset_id": dataset["id"]}).json()
    refused = client.delete(f"/v1/datasets/{dataset['id']}", params={"cascade": "true"})
    assert refused.status_code == 409 and "POST /v1/predictions/{id}/cancel" in refused.json()["error"]["message"]
    assert refused.json()["error"]["details"] == [{"prediction_id": run["id"], "status": "queued"}]
    client.post(f"/v1/predictions/{run['id']}/cancel")
    assert client.delete(f"/v1/datasets/{dataset['id']}", params={"cascade": "true"}).status_code == 204
    assert client.get(f"/v1/predictions/{run['id']}").status_code == 404
    assert client.get(f"/v1/jobs/{other}").status_code == 200  # the model stays


def test_the_api_side_of_predictions_imports_no_torch():
    script = ("import app.api.routes.predictions, app.services.predictions, app.schemas_predictions, sys\n"
              "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.split())
    assert not {m for m in loaded if m == "torch" or m.startswith(("torch.", "transformers", "peft"))}


@pytest.mark.timeout(600)
def test_a_real_worker_killed_mid_run_is_replaced_and_the_run_ends_whole(settings, auth, tmp_path):
    broker = REDIS_URL
    redis.Redis.from_url(broker).flushdb()
    env = worker_env(settings, broker)
    workers = [start_worker(env, tmp_path / "worker-1.log")]
    try:
        with TestClient(create_app(settings.model_copy(update={"broker_url": broker})), headers=auth) as api:
            train = upload_frame(api, toy_frame(120, noise=0.0))
            job_id = create_job(api, train["id"], TRAINING, routed=False)
            wait_for(lambda: api.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded", 300, "training")
            big = upload_frame(api, toy_frame(12000, noise=0.05, seed=4))
            run_id = api.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": big["id"]}).json()["id"]
            wait_for(lambda: 0 < api.get(f"/v1/predictions/{run_id}").json()["progress"] < 0.5, 300,
                     "the first batches", interval=0.05)
            kill_worker(workers[0])
            workers.append(start_worker(env, tmp_path / "worker-2.log"))
            run = wait_for(lambda: (r := api.get(f"/v1/predictions/{run_id}").json())["status"] in
                           ("succeeded", "failed") and r, 300, "the second attempt", interval=0.3)
            assert run["status"] == "succeeded" and run["attempt"] == 2, run
            rows = _rows(settings, run_id)
            assert len(rows) == 12000 == run["summary"]["rows"] and rows[-1].row_index == 11999
            assert run["summary"]["flagged"] > 0
    finally:
        for proc in workers:
            stop_worker(proc)


def test_label_check_false_predicts_rows_whose_labels_the_model_lacks(client, settings):
    job_id = _trained_job(client, settings)
    frame = toy_frame(20, seed=4)
    frame["label"] = frame["label"].astype(str).where(frame.index % 2 == 0, "unseen")
    assert _upload(client, job_id, frame).json()["error"]["code"] == "unknown_label"
    assert "label_check=false" in _upload(client, job_id, frame).json()["error"]["message"]
    run = _upload(client, job_id, frame, label_check="false")
    assert run.status_code == 201 and not run.json()["labelled"], run.text
    assert _upload(client, job_id, frame, label_check="maybe").status_code == 422
    dataset = upload_frame(client, frame)
    assert client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": dataset["id"]}).status_code == 422
    on_dataset = client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": dataset["id"], "label_check": False})
    assert on_dataset.status_code == 201 and not on_dataset.json()["labelled"], on_dataset.text
    assert execute_job(on_dataset.json()["id"], settings=settings) == "succeeded"
    rows = client.get(f"/v1/predictions/{on_dataset.json()['id']}/rows", params={"limit": 100}).json()["data"]
    assert len(rows) == 20 and all(r["given_label"] is None and r["flagged"] is None for r in rows)


def test_a_model_whose_report_was_not_reliable_withholds_its_label_check_flags(client, settings):
    job_id = _trained_job(client, settings)
    with _factory(settings)() as session:
        job = session.get(Job, job_id)
        summary = dict(job.report_summary)
        summary["reliability"] = {"reliable": False, "verdict": "not reliable", "reasons": ["it learned nothing"]}
        job.report_summary = summary
        session.commit()
    frame = toy_frame(30, noise=0.3, seed=4)
    run = _upload(client, job_id, frame[["id", "text", "label"]], id_column="id").json()
    assert execute_job(run["id"], settings=settings) == "succeeded"
    summary = client.get(f"/v1/predictions/{run['id']}").json()["summary"]
    assert summary["flags_withheld"] and summary["flagged"] == 0 and summary["candidates"] > 0
    assert summary["model_reliability"] == {"verdict": "not reliable", "reasons": ["it learned nothing"]}
    rows = client.get(f"/v1/predictions/{run['id']}/rows", params={"limit": 100}).json()["data"]
    assert not any(r["flagged"] for r in rows) and all("it learned nothing" in r["flag_reason"] for r in rows)
    assert all(r["suggested_label"] is not None for r in rows)  # the suggestions are still there to read


def test_two_file_parts_are_a_422_naming_them_and_nothing_is_queued(client, settings):
    job_id = _fake_succeeded_job(client, settings)
    content = to_bytes(toy_frame(12), "csv")
    response = client.post(f"/v1/jobs/{job_id}/predictions",
                           files=[("file", ("a.csv", content)), ("file", ("b.csv", content))])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "file" and "more than one part named 'file'" in error["message"]
    assert _runs(settings) == 0


def test_too_many_form_fields_are_a_422_naming_one_and_nothing_is_queued(client, settings):
    job_id = _fake_succeeded_job(client, settings)
    content = to_bytes(toy_frame(12), "csv")
    extra = {f"extra_{i}": "x" for i in range(12)}  # past the parser's field limit: was Starlette's bare 400
    response = client.post(f"/v1/jobs/{job_id}/predictions", files={"file": ("a.csv", content)}, data=extra)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "extra_0" and "unknown form field" in error["message"]  # the first, not the 9th
    known = {"text_column": "text", "label_column": "label", "format": "csv", "id_column": "id"}
    twice = {k: [v, v, v] for k, v in known.items()}  # known names past the limit: a repeat is named first
    response = client.post(f"/v1/jobs/{job_id}/predictions", files={"file": ("a.csv", content)}, data=twice)
    assert response.status_code == 422 and "more than once" in response.json()["error"]["message"], response.text
    long = client.post(f"/v1/jobs/{job_id}/predictions", files={"file": ("a.csv", content)},
                       data={"text_column": "x" * (2 * 1024 * 1024)})  # past the parser's part size
    assert long.status_code == 422 and long.json()["error"]["param"] == "text_column", long.text
    few = client.post(f"/v1/jobs/{job_id}/predictions", files={"file": ("a.csv", content)}, data={"extra_0": "x"})
    assert few.status_code == 422 and few.json()["error"]["param"] == "extra_0"  # an unknown field, named
    assert _runs(settings) == 0


def test_a_caller_that_leaves_mid_body_gets_a_400_not_a_500(client, settings, api_key, caplog):
    """The JSON branch reads the body itself: a disconnect there was an unhandled ``ClientDisconnect`` (a 500 and
    an ERROR traceback in the log)."""
    job_id = _fake_succeeded_job(client, settings)
    messages = iter([{"type": "http.request", "body": b'{"dataset_id":', "more_body": True},
                     {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(messages, {"type": "http.disconnect"})

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": f"/v1/jobs/{job_id}/predictions", "raw_path": f"/v1/jobs/{job_id}/predictions".encode(),
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                         (b"content-length", b"1000"), (b"authorization", f"Bearer {api_key}".encode())],
             "state": {}}
    with caplog.at_level("ERROR"):
        client.portal.call(client.app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400
    assert not [r for r in caplog.records if r.levelname == "ERROR"] and _runs(settings) == 0


def test_label_check_in_json_is_a_boolean_only(client, settings):
    job_id = _fake_succeeded_job(client, settings)
    for value in ("yes", 1, "true"):  # pydantic's lax mode took these; the form's parser refuses "maybe"
        answer = client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": "ds_x", "label_check": value})
        assert answer.status_code == 422 and "label_check" in (answer.json()["error"]["param"] or ""), answer.text
    assert _runs(settings) == 0
