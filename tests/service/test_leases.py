"""Leases and the reaper against Postgres, in process: stale jobs requeued with the next attempt up to the
limit, then failed; hard and soft time limits; a requeued attempt resumes from the stored checkpoint
and ends with the same report as an uninterrupted run; the old attempt writes nothing more; cancel
stops within one step; results are upserted; transient faults requeue, bad input and OOM do not."""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

import worker.pipeline as pipeline
from app.db import session_factory
from app.faults import TransientJobError
from app.models import Job, NoiseRow, utcnow
from app.services.leases import reap
from tests.service.helpers import StepGate, create_job, report_arrays, toy_frame, upload_frame
from worker.pipeline import execute_job
from worker.results import write_noise_rows

FAST = {"epochs": 3, "batch_size": 16, "max_length": 16, "checkpoint_every_steps": 4, "seed": 3}


def _job(client, dataset_id, **body):
    return create_job(client, dataset_id, body.pop("training", FAST), **body)


def _set(settings, job_id, **values):
    with session_factory(settings.database_url)() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))
        session.commit()


def _get(settings, job_id) -> Job:
    with session_factory(settings.database_url)() as session:
        return session.get(Job, job_id)


def _reap(settings, enqueued=None):
    with session_factory(settings.database_url)() as session:
        return reap(session, settings, (enqueued if enqueued is not None else []).append)


def _states(client, job_id):
    return [e["data"]["status"] for e in client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]
            if e["type"] == "state"]


@pytest.fixture
def dataset(client):
    return upload_frame(client, toy_frame(96, noise=0.2))


def test_stale_jobs_are_requeued_until_the_attempt_limit_then_failed(client, settings, dataset):
    old = utcnow() - timedelta(seconds=settings.lease_timeout_s + 5)
    job_id, fresh, cancelling = (_job(client, dataset["id"]) for _ in range(3))
    _set(settings, job_id, status="running", attempt=1, started_at=old, heartbeat_at=old)
    _set(settings, fresh, status="running", attempt=1, started_at=old, heartbeat_at=utcnow())
    _set(settings, cancelling, status="cancelling", attempt=1, started_at=old, heartbeat_at=old)
    enqueued = []
    result = _reap(settings, enqueued)
    assert result.requeued == [job_id] and enqueued == [job_id] and result.cancelled == [cancelling]
    job = _get(settings, job_id)
    assert (job.status, job.attempt, job.lease_owner) == ("queued", 1, None) and job.enqueued_at is not None
    assert _get(settings, fresh).status == "running" and _get(settings, cancelling).status == "cancelled"
    _set(settings, job_id, status="running", attempt=settings.max_attempts, heartbeat_at=old)
    assert _reap(settings).failed == [job_id]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["error"]["code"] == "worker_lost"
    assert f"gave up after {settings.max_attempts} attempt(s)" in job["error"]["message"]
    assert _states(client, job_id) == ["queued", "queued", "failed"]  # created, requeued, failed


def test_the_reaper_fails_jobs_past_their_hard_limit_and_resends_lost_messages(client, settings, dataset, caplog):
    late = _job(client, dataset["id"], time_limit_s=60)
    _set(settings, late, status="running", attempt=1, started_at=utcnow() - timedelta(seconds=61),
         heartbeat_at=utcnow())
    lost_message = _job(client, dataset["id"])
    _set(settings, lost_message, enqueued_at=utcnow() - timedelta(seconds=settings.redispatch_after_s + 1))
    enqueued = []
    result = _reap(settings, enqueued)
    assert result.failed == [late] and result.redispatched == [lost_message] == enqueued
    assert client.get(f"/v1/jobs/{late}").json()["error"]["code"] == "time_limit"
    assert any(f"redispatched job {lost_message}" in r.getMessage() for r in caplog.records)  # logged, each


@pytest.fixture
def gate(monkeypatch):
    """Adds a ``StepGate`` to the callbacks of the next ``train`` the pipeline calls."""
    holder = {}

    def use(at: int) -> StepGate:
        holder["gate"] = StepGate(at)
        real = pipeline.train
        monkeypatch.setattr(pipeline, "train", lambda *a, callbacks, **k: real(
            *a, callbacks=[*callbacks, holder["gate"]], **k))
        return holder["gate"]
    return use


def _run_in_thread(job_id, settings):
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(execute_job(job_id, settings=settings)))
    thread.start()
    return thread, outcome


def test_a_requeued_attempt_resumes_from_its_checkpoint_with_the_same_report(client, settings, dataset, gate,
                                                                               monkeypatch):
    reference = _job(client, dataset["id"], validation_fraction=0.2)
    assert execute_job(reference, settings=settings) == "succeeded"
    job_id = _job(client, dataset["id"], validation_fraction=0.2)
    held = gate(at=9)  # 5 steps per epoch: step 9 is inside epoch 2, after the step-8 checkpoint
    thread, outcome = _run_in_thread(job_id, settings.model_copy(update={"heartbeat_interval_s": 600}))
    assert held.reached.wait(120)
    _set(settings, job_id, heartbeat_at=utcnow() - timedelta(seconds=settings.lease_timeout_s + 1))
    assert _reap(settings).requeued == [job_id]  # as if the worker had died
    held.release.set()
    thread.join(60)
    job = _get(settings, job_id)
    assert outcome == ["lost"] and job.status == "queued" and job.checkpoint_step == 8
    monkeypatch.undo()
    assert execute_job(job_id, settings=settings) == "succeeded"
    got, want = client.get(f"/v1/jobs/{job_id}").json(), client.get(f"/v1/jobs/{reference}").json()
    assert got["attempt"] == 2 and got["global_step"] == want["global_step"]
    events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
    messages = [e["message"] for e in events]
    assert "attempt 2 resumes from the checkpoint at step 8" in messages
    starts = [e for e in events if e["type"] == "state" and e["data"]["status"] == "running"]
    assert len(starts) == 2 and all(e["message"].startswith("a worker took the job (") for e in starts)
    assert all(e["message"] for e in events if e["type"] == "state")  # no state change without words
    a, b = report_arrays(settings, job_id), report_arrays(settings, reference)
    np.testing.assert_allclose(a.pop("label_quality"), b.pop("label_quality"), atol=1e-5)
    np.testing.assert_allclose(a.pop("p_clean"), b.pop("p_clean"), atol=1e-5, equal_nan=True)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    for key, value in want["metrics"].items():
        if isinstance(value, float) and key != "wall_time_s":
            assert got["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert not (settings.data_dir / "artifacts" / "jobs" / job_id / "checkpoints").exists() or not any(
        (settings.data_dir / "artifacts" / "jobs" / job_id / "checkpoints").iterdir())


def test_cancel_stops_within_one_step_and_keeps_the_events(client, settings, dataset, gate):
    job_id = _job(client, dataset["id"], training={**FAST, "epochs": 200})
    held = gate(at=3)
    thread, outcome = _run_in_thread(job_id, settings)
    assert held.reached.wait(120)
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelling"
    held.release.set()
    thread.join(60)
    events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
    assert outcome == ["cancelled"] and _states(client, job_id) == ["queued", "running", "cancelling", "cancelled"]
    assert events[-1]["data"] == {"status": "cancelled", "global_step": 4}  # the step running when asked
    assert any((e["message"] or "").startswith("training started") for e in events)


def test_past_the_soft_time_limit_the_job_fails_with_time_limit(client, settings, dataset):
    job_id = _job(client, dataset["id"], training={**FAST, "epochs": 1000}, soft_time_limit_s=1, time_limit_s=600)
    assert execute_job(job_id, settings=settings) == "failed"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["error"]["code"] == "time_limit" and job["progress"] < 1


def test_time_limits_are_checked_against_the_server_maximum(client, dataset):
    too_long = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "time_limit_s": 10 ** 9})
    assert too_long.status_code == 422 and too_long.json()["error"]["param"] == "time_limit_s"
    soft_over_hard = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "time_limit_s": 10,
                                                   "soft_time_limit_s": 20})
    assert soft_over_hard.json()["error"]["param"] == "soft_time_limit_s"


def test_noise_rows_are_upserted_on_job_and_row_index(client, settings, dataset):
    job_id = _job(client, dataset["id"])
    record = {"row_index": 0, "id": "r0", "given_label": "0", "predicted_label": "1", "suggested_label": "1",
              "suggested_confidence": 0.9, "p_clean": 0.1, "p_clean_history": [0.1], "label_quality": 0.1,
              "flagged": True, "flag_threshold": 0.5, "rank": 1}
    with session_factory(settings.database_url)() as session:
        write_noise_rows(session, job_id, [record], [5])
        write_noise_rows(session, job_id, [dict(record, label_quality=0.2)], [5])
        session.commit()
        rows = session.scalars(select(NoiseRow).where(NoiseRow.job_id == job_id)).all()
    assert [(r.row_index, r.label_quality) for r in rows] == [(5, 0.2)]


def test_a_transient_fault_requeues_the_job_and_the_retry_resumes(client, settings, dataset, monkeypatch):
    job_id = _job(client, dataset["id"], training={**FAST, "epochs": 1}, clear={"warmup_epochs": 0})
    real = pipeline.load_inputs

    def database_gone(*_args, **_kwargs):
        raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(pipeline, "load_inputs", database_gone)
    with pytest.raises(TransientJobError):
        execute_job(job_id, settings=settings)
    assert _get(settings, job_id).status == "queued"
    monkeypatch.setattr(pipeline, "load_inputs", real)
    assert execute_job(job_id, settings=settings) == "succeeded"
    assert _get(settings, job_id).attempt == 2


@pytest.mark.parametrize("error, code", [
    (ValueError("label 'x' is not a class"), "invalid_input"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "out_of_memory")])
def test_bad_input_and_out_of_memory_fail_at_once(client, settings, dataset, monkeypatch, error, code):
    job_id = _job(client, dataset["id"])

    def fails(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(pipeline, "train", fails)
    assert execute_job(job_id, settings=settings) == "failed"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["error"]["code"] == code and job["attempt"] == 1


def test_the_broker_waits_longer_than_the_longest_job(settings):
    from worker.celery_app import celery_config

    config = celery_config(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1
    visibility = config["broker_transport_options"]["visibility_timeout"]
    assert settings.max_job_seconds < config["task_time_limit"] < visibility


def test_a_checkpoint_this_worker_cannot_resume_is_redone_not_failed(client, settings, dataset, tiny_model_dir,
                                                                      tmp_path):
    from clear_core import ClearConfig, TextClassificationData, TrainingConfig, train
    from clear_core.checkpoint import STATE_FILE, latest_checkpoint

    from app.storage import ArtifactStore

    train(TextClassificationData(["market bank", "team goal"] * 2, ["x", "y"] * 2), clear=ClearConfig(),
          training=TrainingConfig(epochs=1, batch_size=2, max_length=8), model_path=tiny_model_dir,
          checkpoint_dir=tmp_path / "other")  # another run's checkpoint
    job_id = _job(client, dataset["id"], training={**FAST, "epochs": 1}, clear={"warmup_epochs": 0})
    key = ArtifactStore(settings.artifact_url).put_file(str(latest_checkpoint(tmp_path / "other") / STATE_FILE),
                                                       f"jobs/{job_id}/checkpoints/step-2.pt")
    _set(settings, job_id, checkpoint_uri=key, checkpoint_step=2)
    assert execute_job(job_id, settings=settings) == "succeeded"
    messages = [e["message"] or "" for e in client.get(f"/v1/jobs/{job_id}/events").json()["data"]]
    assert any("cannot be resumed here" in m and "starts over" in m for m in messages)
