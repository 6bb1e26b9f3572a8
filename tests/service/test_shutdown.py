"""Stopping cleanly: a worker told to stop (SIGTERM, Ctrl-C) checkpoints its job at the next step, puts it back in
the queue at once (event "worker stopped") and the next attempt resumes from that checkpoint with the report of an
uninterrupted run; such an attempt does not count against ``max_attempts``; attempt folders live under
``Settings.scratch("attempts")``, are removed however an attempt ends, and a killed attempt's folder is removed
when a worker starts, never a live one's. In process on Postgres, then with real Celery workers on a private
Redis, then the embedded ``python -m app.cli serve`` on SQLite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

import worker.pipeline as pipeline
from app.db import session_factory
from app.main import create_app
from app.models import Job, JobEvent, utcnow
from app.services.leases import reap
from clear_core import TrainerCallback
from tests.service.conftest import TENANT_A, create_key
from tests.service.helpers import create_job, report_arrays, toy_frame, upload_frame
from tests.service.outages import free_port
from tests.service.workers import ROOT, stop_worker, wait_for, worker_env
from worker import shutdown
from worker.pipeline import execute_job
from worker.scratch import attempt_folder, sweep

FAST = {"epochs": 3, "batch_size": 16, "max_length": 16, "checkpoint_every_steps": 4, "seed": 3}  # 5 steps/epoch
WORKER_JOB = {"base_model": "tiny-bert", "clear": {"warmup_epochs": 1},
              "training": {"epochs": 3, "batch_size": 16, "max_length": 32, "checkpoint_every_steps": 0, "seed": 5}}
STEPS_PER_EPOCH = 10  # 160 rows (WORKER_JOB)
REQUEUE_BOUND_S = 10.0


def _job(settings, job_id) -> Job:
    with session_factory(settings.database_url)() as session:
        return session.get(Job, job_id, populate_existing=True)


def _events(client, job_id):
    return client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]


def _stopped_events(client, job_id):
    return [e for e in _events(client, job_id) if e["type"] == "state" and (e["message"] or "").startswith(
        "worker stopped")]


def _same_report(settings, job_id, reference, got_metrics, want_metrics):
    a, b = report_arrays(settings, job_id), report_arrays(settings, reference)
    for key in ("label_quality", "p_clean"):
        np.testing.assert_allclose(a.pop(key), b.pop(key), atol=1e-5, equal_nan=True)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    for key, value in want_metrics.items():
        if isinstance(value, float) and key != "wall_time_s":
            assert got_metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def _attempt_folders(settings, job_id):
    root = settings.scratch("attempts")
    return sorted(p.name for p in root.iterdir() if p.name.startswith(job_id)) if root.is_dir() else []


# ---- the attempt folders ------------------------------------------------------------------------------------


HOLDER = """
import sys
from pathlib import Path
from worker.scratch import attempt_folder
with attempt_folder(Path(sys.argv[1]), "job_held") as folder:
    print(folder, flush=True)
    sys.stdin.read()
"""


def _holder(root) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), text=True)


def _killed_holder(root) -> Path:
    """The folder of an attempt whose process was SIGKILLed (no exit path of its own ran)."""
    proc = _holder(root)
    folder = Path(proc.stdout.readline().strip())
    proc.kill()
    proc.communicate(timeout=10)
    assert folder.is_dir()
    return folder


def test_attempt_folders_are_removed_on_exit_and_swept_only_once_their_owner_is_gone(tmp_path):
    root = tmp_path / "attempts"
    with pytest.raises(RuntimeError), attempt_folder(root, "job_x") as folder:
        (folder / "checkpoint").write_bytes(b"x" * 1000)
        assert sweep(root) == [] and folder.exists()  # held by this very process: kept
        raise RuntimeError("the attempt failed")
    assert not folder.exists()
    live = _holder(root)
    try:
        live_folder = live.stdout.readline().strip()
        killed_folder = _killed_holder(root)
        (root / "job_old-unlocked").mkdir()  # a folder whose owner died before locking it
        os.utime(root / "job_old-unlocked", (time.time() - 3600,) * 2)
        (root / "job_new-unlocked").mkdir()  # ... or is about to lock it
        removed = sweep(root)
        assert sorted(p.name for p in removed) == sorted([killed_folder.name, "job_old-unlocked"])
        assert os.path.isdir(live_folder) and (root / "job_new-unlocked").is_dir()
    finally:
        live.communicate("", timeout=10)  # ends normally: removes its own folder
    assert not os.path.exists(live_folder)


# ---- in process, Postgres -----------------------------------------------------------------------------------


class _StopAt(TrainerCallback):
    """Stands for SIGTERM landing during step ``at``: asks the worker to stop (put first in the callbacks)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, state, control) -> None:
        """Request the stop once step ``at`` is done."""
        if state.global_step == self.at:
            shutdown.request_stop()


@pytest.fixture
def stop_at(monkeypatch):
    """Makes the next ``train`` the pipeline calls receive a stop request after step ``at``."""
    def use(at: int) -> None:
        real = pipeline.train
        monkeypatch.setattr(pipeline, "train", lambda *a, callbacks, **k: real(
            *a, callbacks=[_StopAt(at), *callbacks], **k))
    yield use
    shutdown.clear_stop()


def test_a_stopping_worker_checkpoints_requeues_and_the_next_attempt_resumes_with_the_same_report(
        client, settings, stop_at, monkeypatch):
    dataset = upload_frame(client, toy_frame(96, noise=0.2))
    reference = create_job(client, dataset["id"], FAST, validation_fraction=0.2)
    assert execute_job(reference, settings=settings) == "succeeded"
    job_id = create_job(client, dataset["id"], FAST, validation_fraction=0.2)
    stop_at(7)  # inside epoch 2, three steps after the step-4 checkpoint
    # progress throttled to once an hour: only the epoch marks and checkpoints write it
    assert execute_job(job_id, settings=settings, progress_interval_s=3600) == "stopped"
    job = _job(settings, job_id)
    assert (job.status, job.attempt, job.checkpoint_step, job.lease_owner) == ("queued", 1, 7, None)
    assert job.global_step == 7  # the row shows the step the next attempt resumes from
    [event] = _stopped_events(client, job_id)
    assert event["data"] == {"status": "queued", "reason": "worker_stopped", "attempt": 1, "global_step": 7,
                             "checkpoint_step": 7}
    assert _attempt_folders(settings, job_id) == []  # removed on this exit path too
    monkeypatch.undo()
    shutdown.clear_stop()
    assert execute_job(job_id, settings=settings) == "succeeded"
    got, want = client.get(f"/v1/jobs/{job_id}").json(), client.get(f"/v1/jobs/{reference}").json()
    assert got["attempt"] == 2
    messages = [e["message"] for e in _events(client, job_id)]
    assert "attempt 2 resumes from the checkpoint at step 7" in messages
    _same_report(settings, job_id, reference, got["metrics"], want["metrics"])
    assert _attempt_folders(settings, job_id) == []


def test_a_stop_at_an_epoch_end_or_before_training_loses_nothing(client, settings, stop_at):
    dataset = upload_frame(client, toy_frame(96, noise=0.2))
    job_id = create_job(client, dataset["id"], FAST, validation_fraction=0.2)
    stop_at(5)  # the last step of epoch 1: its epoch-end checkpoint is the one kept
    assert execute_job(job_id, settings=settings) == "stopped"
    assert _job(settings, job_id).checkpoint_step == 5
    shutdown.request_stop()  # the next attempt is taken while the worker stops: back at once, checkpoint kept
    assert execute_job(job_id, settings=settings) == "stopped"
    job = _job(settings, job_id)
    assert (job.status, job.attempt, job.checkpoint_step) == ("queued", 2, 5)
    stops = [(e["data"]["global_step"], e["data"]["checkpoint_step"]) for e in _stopped_events(client, job_id)]
    assert stops == [(5, 5), (None, 5)]


class _CancelAtSave(TrainerCallback):
    """A cancel that lands while the stopping worker writes its checkpoint (after the step's status read)."""

    def __init__(self, settings, job_id) -> None:
        self.settings, self.job_id = settings, job_id

    def on_step_end(self, state, control) -> None:
        """Stand for the stop signal after step 2."""
        if state.global_step == 2:
            shutdown.request_stop()

    def on_save(self, state, control, checkpoint_path) -> None:
        """The user's cancel, committed just now."""
        with session_factory(self.settings.database_url)() as session:
            session.execute(update(Job).where(Job.id == self.job_id).values(status="cancelling"))
            session.commit()


def test_a_cancel_that_comes_before_the_requeue_ends_the_job_cancelled(client, settings, monkeypatch):
    dataset = upload_frame(client, toy_frame(96, noise=0.2))
    job_id = create_job(client, dataset["id"], FAST, validation_fraction=0.2)
    real = pipeline.train
    monkeypatch.setattr(pipeline, "train", lambda *a, callbacks, **k: real(
        *a, callbacks=[_CancelAtSave(settings, job_id), *callbacks], **k))
    try:
        assert execute_job(job_id, settings=settings) == "cancelled"
    finally:
        shutdown.clear_stop()
    assert _job(settings, job_id).status == "cancelled" and _stopped_events(client, job_id) == []


def test_a_stopping_worker_requeues_a_prediction_run_after_its_current_batch(client, settings, monkeypatch):
    import worker.predict as predict

    dataset = upload_frame(client, toy_frame(96, noise=0.0))
    job_id = create_job(client, dataset["id"], {**FAST, "epochs": 1}, routed=False)
    assert execute_job(job_id, settings=settings) == "succeeded"
    run = client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset_id": dataset["id"]}).json()
    real = predict.predict_proba

    def stop_after_first_batch(*args, **kwargs):
        shutdown.request_stop()
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "CHUNK_ROWS", 32)
    monkeypatch.setattr(predict, "predict_proba", stop_after_first_batch)
    try:
        assert execute_job(run["id"], settings=settings) == "stopped"
    finally:
        shutdown.clear_stop()
    with session_factory(settings.database_url)() as session:
        [data] = session.scalars(select(JobEvent.data).where(JobEvent.job_id == run["id"],
                                                             JobEvent.message.startswith("worker stopped")))
    assert data["global_step"] == 32 and _job(settings, run["id"]).status == "queued"
    assert _attempt_folders(settings, run["id"]) == []
    monkeypatch.undo()
    assert execute_job(run["id"], settings=settings) == "succeeded"
    assert client.get(f"/v1/predictions/{run['id']}/rows", params={"limit": 1000}).json()["count"] == 96


def test_attempts_handed_back_by_stopping_workers_do_not_count_against_max_attempts(client, settings, stop_at):
    dataset = upload_frame(client, toy_frame(96, noise=0.2))
    job_id = create_job(client, dataset["id"], FAST, validation_fraction=0.2)
    stop_at(2)
    assert execute_job(job_id, settings=settings) == "stopped"  # attempt 1: handed back
    one = settings.model_copy(update={"max_attempts": 2})
    old = utcnow() - timedelta(seconds=settings.lease_timeout_s + 5)
    with session_factory(settings.database_url)() as session:
        for attempt, outcome in ((2, "requeued"), (3, "failed")):  # attempt 2's worker dies, then attempt 3's
            session.execute(update(Job).where(Job.id == job_id).values(status="running", attempt=attempt,
                                                                       heartbeat_at=old))
            session.commit()
            assert getattr(reap(session, one, lambda _id: None), outcome) == [job_id]
    error = client.get(f"/v1/jobs/{job_id}").json()["error"]
    assert "gave up after 2 attempt(s), besides 1 handed back by stopping workers" in error["message"]


# ---- real Celery workers, Postgres and a private Redis -------------------------------------------------------


def _submit(api, dataset_id: str) -> str:
    response = api.post("/v1/jobs", json={"dataset_id": dataset_id, **WORKER_JOB})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _finished(settings, job_id, timeout=300) -> Job:
    return wait_for(lambda: (j := _job(settings, job_id)).status in ("succeeded", "failed", "cancelled") and j,
                    timeout, f"job {job_id} to finish", interval=0.3)


def _start_worker(env, log):
    """``start_worker``, its output (JSON log lines) kept in ``log`` for a failure's diagnosis."""
    command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--concurrency", "1",
               "--queues", "jobs", "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"]
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, stdout=out, stderr=out)


def _sigterm_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)  # as systemd does; the pool process gets it as well as the main one


@pytest.mark.chaos
def test_a_sigtermed_worker_requeues_its_job_within_seconds_and_the_next_resumes_it(api, settings, redis_server,
                                                                                    tmp_path):
    import torch

    dataset = upload_frame(api, toy_frame(160, noise=0.2))
    env = worker_env(settings, redis_server.url)
    first = _start_worker(env, tmp_path / "worker1.log")
    job_id = _submit(api, dataset["id"])
    try:
        at = wait_for(lambda: (s := _job(settings, job_id).global_step) > STEPS_PER_EPOCH + 2 and s, 180,
                      "training past warm-up")
        assert _attempt_folders(settings, job_id)
        told = time.monotonic()
        _sigterm_group(first)
        job = wait_for(lambda: (j := _job(settings, job_id)).status == "queued" and j, REQUEUE_BOUND_S,
                       "the job back in the queue")
        assert time.monotonic() - told < REQUEUE_BOUND_S
        first.wait(30)
        assert first.returncode == 0
    finally:
        stop_worker(first)
    assert job.attempt == 1 and job.checkpoint_step >= at  # written after the signal (the last epoch's was 10)
    [event] = _stopped_events(api, job_id)
    assert event["data"]["checkpoint_step"] == job.checkpoint_step
    assert _attempt_folders(settings, job_id) == []
    killed = _killed_holder(settings.scratch("attempts"))  # what a SIGKILLed worker leaves behind
    second = _start_worker(env, tmp_path / "worker2.log")  # takes the message the stopping worker sent again
    try:
        wait_for(lambda: not killed.exists(), 60, "the start-up sweep of the attempt folders")
        done = _finished(settings, job_id)
    finally:
        stop_worker(second)
    assert (done.status, done.attempt) == ("succeeded", 2), done.error_message
    messages = [e["message"] or "" for e in _events(api, job_id)]
    assert f"attempt 2 resumes from the checkpoint at step {job.checkpoint_step}" in messages
    reference = api.post("/v1/jobs", json={"dataset_id": dataset["id"], **WORKER_JOB}).json()["id"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers are
    try:
        assert execute_job(reference, settings=settings) == "succeeded"
    finally:
        torch.set_num_threads(threads)
    _same_report(settings, job_id, reference, done.metrics, _job(settings, reference).metrics)


# ---- the embedded service: python -m app.cli serve -----------------------------------------------------------


def _serve(env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())], cwd=ROOT, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL)


@pytest.mark.chaos
def test_serve_stopped_with_sigterm_requeues_its_running_job(model_dir, tmp_path):
    from app.cli import migrate
    from app.settings import Settings

    settings = Settings(data_dir=tmp_path / "var", model_dir=model_dir)
    migrate(settings)
    auth = {"Authorization": f"Bearer {create_key(settings.database_url, TENANT_A)}"}
    env = worker_env(settings, settings.broker_url)
    for key in ("CLEAR_DATABASE_URL", "CLEAR_BROKER_URL", "CLEAR_ARTIFACT_URL"):
        env.pop(key)  # the embedded defaults under CLEAR_DATA_DIR
    service = _serve(env)
    try:
        with TestClient(create_app(settings), headers=auth) as client:  # enqueues to the embedded broker
            dataset = upload_frame(client, toy_frame(160, noise=0.2))
            job_id = client.post("/v1/jobs", json={"dataset_id": dataset["id"], **WORKER_JOB}).json()["id"]
            wait_for(lambda: _job(settings, job_id).global_step >= 3, 240, "the embedded worker to train")
            told = time.monotonic()
            service.send_signal(signal.SIGTERM)  # to the serve process only: it passes it on
            job = wait_for(lambda: (j := _job(settings, job_id)).status == "queued" and j, REQUEUE_BOUND_S,
                           "the job back in the queue")
            assert time.monotonic() - told < REQUEUE_BOUND_S
            assert service.wait(60) == 0
            assert job.attempt == 1 and job.checkpoint_step and job.checkpoint_step >= 3
            [event] = _stopped_events(client, job_id)
            assert event["data"]["checkpoint_step"] == job.checkpoint_step
            assert _attempt_folders(settings, job_id) == []
            assert _job(settings, job_id).enqueued_at is not None  # sent to the embedded broker again
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait(10)


def _serve_env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEAR_", "CLEARFT_"))}
    env.update(CLEAR_DATA_DIR=str(tmp_path / "var"), HF_HUB_OFFLINE="1", CLEARFT_STATE_DIR=str(tmp_path / "state"),
               **extra)
    return env


def test_serve_on_a_taken_port_starts_nothing_and_registers_nothing(tmp_path):
    """Another service holds the port: serve says so and exits 1 before starting anything, and does not point
    clearft's registry for that URL at its own key (the running service's clients would get 401s)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--no-worker"],
                              cwd=ROOT, env=_serve_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr and "CleaR service on" not in done.stdout
    assert not (tmp_path / "state" / "services.json").exists()
    assert not (tmp_path / "var").exists() and "API key" not in done.stdout  # no database, no key made


def test_two_serves_started_together_leave_one_service_and_its_own_registry_entry(tmp_path):
    """serve binds its port before it makes anything and hands that socket to its API (uvicorn --fd): of two serves
    started a moment apart on one port, one runs and the other is refused before it makes a data folder, and the
    registry names the one that runs. Before, the second one passed its port check while the first was still
    migrating, took the first's answering API for its own and registered its own key for that URL."""
    import json

    port = free_port()
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--no-worker"]
    homes = [tmp_path / "one", tmp_path / "two"]
    procs = []
    try:
        for home in homes:
            procs.append(subprocess.Popen(command, cwd=ROOT, env=dict(_serve_env(tmp_path), CLEAR_DATA_DIR=str(home)),
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            time.sleep(0.3)
        deadline = time.monotonic() + 90
        while all(p.poll() is None for p in procs):
            assert time.monotonic() < deadline, "neither serve was refused"
            time.sleep(0.1)
        [loser] = [i for i, p in enumerate(procs) if p.poll() is not None]
        survivor = 1 - loser
        assert procs[loser].returncode == 1 and "is in use" in procs[loser].stdout.read()
        assert not homes[loser].exists()  # refused before it made anything
        registry = tmp_path / "state" / "services.json"
        while not (registry.exists() and json.loads(registry.read_text())):
            assert procs[survivor].poll() is None and time.monotonic() < deadline, procs[survivor].stdout.read()
            time.sleep(0.1)
        assert json.loads(registry.read_text())[f"http://127.0.0.1:{port}"] == str((homes[survivor] / "api-key"
                                                                                     ).resolve())
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
    assert json.loads((tmp_path / "state" / "services.json").read_text()) == {}


def test_serve_says_which_child_died_and_exits_1(tmp_path):
    """The API dies at start (its scratch folder is a file, so its start-up fails): serve says which child exited,
    with its status, and exits 1, without announcing or registering a service that never answered."""
    (tmp_path / "not-a-folder").write_text("x")
    done = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--port", str(free_port()), "--no-worker"],
                          cwd=ROOT, env=_serve_env(tmp_path, CLEAR_SCRATCH_DIR=str(tmp_path / "not-a-folder")),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "the API exited with status" in done.stderr and "stopping the service" in done.stderr
    assert "CleaR service on" not in done.stdout and not (tmp_path / "state" / "services.json").exists()
