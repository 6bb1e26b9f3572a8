"""Chaos, with real worker processes on Postgres and a private Redis: a worker SIGKILLed mid-epoch is
replaced and the job ends ``succeeded`` on attempt 2 with the report of an uninterrupted run; a
Redis restart mid-job does not hurt the job; a task delivered twice trains once; the embedded
service's own reaper requeues a job whose worker died."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import redis
import torch
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.db import session_factory
from app.main import create_app
from app.models import Job, NoiseRow, utcnow
from app.queue import CeleryEnqueuer
from tests.service.conftest import TENANT_A, create_key
from tests.service.helpers import report_arrays, toy_frame, upload_frame
from tests.service.outages import free_port
from tests.service.workers import ROOT, kill_worker, start_worker, stop_worker, wait_for, worker_env
from worker.pipeline import execute_job

pytestmark = pytest.mark.chaos
STEPS_PER_EPOCH = 10  # 160 rows, batch 16
JOB = {"base_model": "tiny-bert", "clear": {"warmup_epochs": 1},
       "training": {"epochs": 8, "batch_size": 16, "max_length": 32, "checkpoint_every_steps": 3, "seed": 5}}


def _submit(api, dataset_id: str) -> str:
    response = api.post("/v1/jobs", json={"dataset_id": dataset_id, **JOB})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _job(settings, job_id) -> Job:
    with session_factory(settings.database_url)() as session:
        return session.get(Job, job_id, populate_existing=True)


def _finished(settings, job_id, timeout=300) -> Job:
    return wait_for(lambda: (j := _job(settings, job_id)).status in ("succeeded", "failed", "cancelled") and j,
                    timeout, f"job {job_id} to finish", interval=0.3)


def _uninterrupted(api, settings, dataset_id) -> str:
    """The same job run start to end in this process, on one thread as the workers are."""
    job_id = api.post("/v1/jobs", json={"dataset_id": dataset_id, **JOB}).json()["id"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert execute_job(job_id, settings=settings) == "succeeded"
    finally:
        torch.set_num_threads(threads)
    return job_id


def _messages(api, job_id):
    return [e["message"] or "" for e in api.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]]


def test_a_worker_killed_mid_epoch_is_replaced_and_the_job_ends_as_if_uninterrupted(api, settings, redis_server,
                                                                                    tmp_path):
    dataset = upload_frame(api, toy_frame(160, noise=0.2))
    env = worker_env(settings, redis_server.url)
    first = start_worker(env, tmp_path / "worker1.log")
    job_id = _submit(api, dataset["id"])
    try:
        # a checkpoint inside an epoch after warm-up is stored: kill the whole worker right there
        mid = wait_for(lambda: (s := _job(settings, job_id).checkpoint_step) and s > STEPS_PER_EPOCH
                       and s % STEPS_PER_EPOCH in (1, 2, 4, 5) and s, 180, "a mid-epoch checkpoint")
        kill_worker(first)
        killed_at = _job(settings, job_id)
        assert killed_at.status == "running" and killed_at.attempt == 1
        assert killed_at.global_step // STEPS_PER_EPOCH == mid // STEPS_PER_EPOCH  # killed inside that epoch
        second = start_worker(env, tmp_path / "worker2.log")
        try:
            job = _finished(settings, job_id)
        finally:
            stop_worker(second)
    finally:
        stop_worker(first)
    assert (job.status, job.attempt) == ("succeeded", 2), (job.status, job.error_message)
    resumed = [m for m in _messages(api, job_id) if m.startswith("attempt 2 resumes")]
    assert len(resumed) == 1 and int(resumed[0].rsplit(" ", 1)[1]) >= mid
    reference = _uninterrupted(api, settings, dataset["id"])
    a, b = report_arrays(settings, job_id), report_arrays(settings, reference)
    assert len(a["rank"]) == 160
    for key in ("label_quality", "p_clean"):  # tolerance: 1e-5 absolute
        np.testing.assert_allclose(a.pop(key), b.pop(key), atol=1e-5, equal_nan=True)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    want = _job(settings, reference).metrics
    for key, value in want.items():
        if isinstance(value, float) and key != "wall_time_s":
            assert job.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_a_redis_restart_mid_job_does_not_hurt_it(api, settings, redis_server, tmp_path):
    dataset = upload_frame(api, toy_frame(160, noise=0.2))
    worker = start_worker(worker_env(settings, redis_server.url), tmp_path / "worker.log")
    try:
        job_id = _submit(api, dataset["id"])
        wait_for(lambda: _job(settings, job_id).global_step >= 5, 180, "training to start")
        redis_server.stop()
        redis_server.start()
        assert _job(settings, job_id).status == "running"
        job = _finished(settings, job_id)
        assert (job.status, job.attempt) == ("succeeded", 1), job.error_message
        after = _submit(api, dataset["id"])  # the worker reconnected and takes new jobs
        assert _finished(settings, after).status == "succeeded"
    finally:
        stop_worker(worker)


def test_a_job_delivered_twice_trains_once(api, settings, redis_server, tmp_path):
    dataset = upload_frame(api, toy_frame(48))
    job_id = api.post("/v1/jobs", json={"dataset_id": dataset["id"], **JOB, "training": {
        **JOB["training"], "epochs": 2}}).json()["id"]
    CeleryEnqueuer(settings.model_copy(update={"broker_url": redis_server.url}))(job_id)  # the duplicate
    broker = redis.Redis.from_url(redis_server.url)
    assert broker.llen("jobs") == 2
    worker = start_worker(worker_env(settings, redis_server.url), tmp_path / "worker.log", concurrency=2)
    try:
        job = _finished(settings, job_id)
        # both deliveries taken and acknowledged: none waits in the queue or unacknowledged
        wait_for(lambda: broker.llen("jobs") == 0 and broker.hlen("unacked") == 0, 60, "both deliveries acked")
    finally:
        stop_worker(worker)
    assert (job.status, job.attempt) == ("succeeded", 1)
    assert sum(m.startswith("training started") for m in _messages(api, job_id)) == 1
    states = [e["data"]["status"] for e in api.get(f"/v1/jobs/{job_id}/events").json()["data"] if e["type"] == "state"]
    assert states == ["queued", "running", "succeeded"]
    with session_factory(settings.database_url)() as session:
        assert session.scalar(select(func.count()).select_from(NoiseRow).where(NoiseRow.job_id == job_id)) == 48


def test_the_embedded_service_reaps_a_job_whose_worker_died(model_dir, tmp_path):
    from app.cli import migrate
    from app.services.jobs import create_job
    from app.settings import Settings

    data = tmp_path / "var"
    settings = Settings(data_dir=data, model_dir=model_dir)
    migrate(settings)
    key = create_key(settings.database_url, TENANT_A)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings, enqueue=lambda _id: None), headers=auth) as client:
        dataset = upload_frame(client, toy_frame(36))
    factory = session_factory(settings.database_url)
    with factory() as session:  # a job a dead worker had claimed: running, stale, no message anywhere
        job = create_job(session, {"dataset_id": dataset["id"], "method": "lora", "routed": True, **JOB,
                                   "training": {**JOB["training"], "epochs": 1}, "clear": {"warmup_epochs": 0}}, tenant_id=TENANT_A, settings=settings,
                         enqueue=lambda _id: None)
        session.execute(update(Job).where(Job.id == job.id).values(status="running", attempt=1, started_at=utcnow(),
                                                                   heartbeat_at=utcnow()))
        session.commit()
    env = worker_env(settings, settings.broker_url)
    for key in ("CLEAR_DATABASE_URL", "CLEAR_BROKER_URL", "CLEAR_ARTIFACT_URL"):
        env.pop(key)  # the embedded defaults under CLEAR_DATA_DIR
    service = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())], cwd=ROOT,
                               env=env, start_new_session=True)
    try:
        finished = _finished(settings, job.id, timeout=240)
    finally:
        stop_worker(service)
    assert (finished.status, finished.attempt) == ("succeeded", 2), finished.error_message
