"""Nothing the worker writes is lost in a database outage, and progress never goes backwards: writes made while
Postgres is unreachable (through the suite's TCP proxy) are buffered and written in order, with their times, once
it is back; a stale attempt's buffered writes are never applied; a 30 s outage in the middle of an epoch loses no
event and no checkpoint record; a resumed attempt leaves the job's progress at its highest and says where it
resumed."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

import worker.pipeline as pipeline
from app.db import get_engine, session_factory
from app.models import Job, JobEvent, utcnow
from app.services.leases import PendingEvent, as_utc, claim, reap, renew
from app.storage import ArtifactStore
from clear_core import TrainerCallback
from tests.service.helpers import StepGate, create_job, toy_frame, upload_frame
from tests.service.outages import TcpProxy
from tests.service.workers import wait_for
from worker.checkpoints import checkpoint_key
from worker.lease import Lease
from worker.outbox import Outbox
from worker.pipeline import execute_job

# 96 rows, batches of 16: 6 steps an epoch, 18 in all; checkpoints every 4 steps and at each epoch end
FAST = {"epochs": 3, "batch_size": 16, "max_length": 16, "checkpoint_every_steps": 4, "seed": 3}
CHECKPOINT_STEPS = [4, 6, 8, 12, 16, 18]


@pytest.fixture
def dataset(client):
    return upload_frame(client, toy_frame(96, noise=0.2))


@pytest.fixture
def proxy(settings):
    """A TCP proxy in front of the test database, and settings that reach the database only through it."""
    url = make_url(settings.database_url)
    tcp = TcpProxy((url.host, url.port or 5432)).start()
    via = url.set(port=tcp.port).render_as_string(hide_password=False)
    tcp.settings = settings.model_copy(update={"database_url": via, "heartbeat_interval_s": 0.5})
    yield tcp
    tcp.stop()
    get_engine(via).dispose()


def _factory(settings):
    return session_factory(settings.database_url)


def _job(settings, job_id) -> Job:
    with _factory(settings)() as session:
        return session.get(Job, job_id)


def _events(settings, job_id) -> list[JobEvent]:
    with _factory(settings)() as session:
        return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)))


def _claimed(client, settings, dataset) -> str:
    job_id = create_job(client, dataset["id"], FAST)
    with _factory(settings)() as session:
        assert claim(session, job_id, "test:1").attempt == 1
    return job_id


def test_buffered_writes_land_in_order_with_their_own_times_once_the_database_is_back(client, settings, dataset,
                                                                                      proxy):
    job_id = _claimed(client, settings, dataset)
    lease = Lease(_factory(proxy.settings), job_id, 1, interval_s=600)  # no heartbeat thread: the test drives it
    recorded = []
    proxy.stop()
    lease.post("epoch", "epoch 1 of 3", {"epoch": 1, "train_loss": 0.5})
    lease.post("checkpoint", "checkpoint at step 5 stored", {"global_step": 5},
               job_fields={"checkpoint_uri": "jobs/x/checkpoints/step-5.pt", "checkpoint_step": 5},
               on_applied=lambda: recorded.append(5))
    lease.post("message", "third")
    assert lease.renew(progress=5 / 15, epoch=1, global_step=5, metrics={"epoch": 1}) == "running"  # last known
    assert lease.check() == "running" and len(lease.outbox) == 3 and recorded == []
    assert [e.type for e in _events(settings, job_id)] == ["state", "state"]  # nothing written while down
    made = utcnow()
    time.sleep(0.05)
    proxy.start()
    assert lease.flush() and len(lease.outbox) == 0 and recorded == [5]
    events = _events(settings, job_id)
    assert [(e.seq, e.type) for e in events] == [(1, "state"), (2, "state"), (3, "epoch"), (4, "checkpoint"),
                                                 (5, "message")]
    assert all(as_utc(e.created_at) < made for e in events[2:])  # stamped when made, not when written
    job = _job(settings, job_id)
    assert (job.checkpoint_step, job.global_step, job.metrics) == (5, 5, {"epoch": 1})


def test_a_stale_attempts_buffered_writes_are_never_applied(client, settings, dataset, proxy):
    job_id = _claimed(client, settings, dataset)
    stale = Lease(_factory(proxy.settings), job_id, 1, interval_s=600)
    recorded = []
    proxy.stop()
    stale.post("epoch", "epoch 2 of 3", {"epoch": 2})
    stale.post("checkpoint", "checkpoint at step 10 stored", {"global_step": 10},
               job_fields={"checkpoint_uri": "jobs/x/checkpoints/step-10.pt", "checkpoint_step": 10},
               on_applied=lambda: recorded.append(10))
    assert stale.renew(progress=10 / 15, global_step=10) == "running" and len(stale.outbox) == 2
    # the outage outlasts the lease: the reaper requeues the job and attempt 2 takes it
    with _factory(settings)() as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            heartbeat_at=utcnow() - timedelta(seconds=settings.lease_timeout_s + 1)))
        session.commit()
        assert reap(session, settings, lambda _id: None).requeued == [job_id]
        assert claim(session, job_id, "test:2").attempt == 2
    proxy.start()
    assert not stale.flush() and stale.lost.is_set() and len(stale.outbox) == 0 and recorded == []
    stale.post("message", "after the loss")  # ignored: the attempt is fenced out
    assert stale.renew(progress=1.0, global_step=15) is None and not stale.flush() and len(stale.outbox) == 0
    job = _job(settings, job_id)
    assert (job.attempt, job.checkpoint_step, job.global_step) == (2, None, 0)
    assert [e.type for e in _events(settings, job_id)] == ["state"] * 4  # queued, running, queued, running


def test_the_outbox_keeps_what_came_during_a_write_and_backs_off_while_the_database_is_down():
    now = [0.0]
    box = Outbox(clock=lambda: now[0])
    box.post(PendingEvent("epoch", "epoch 1 of 3"))
    box.merge(progress=0.1, global_step=1, metrics={"epoch": 1})
    in_flight = box.take()
    box.post(PendingEvent("message", "made during the write"))
    box.merge(progress=0.2, global_step=2)
    box.applied(in_flight)
    left = box.take()
    assert [e.message for e in left.events] == ["made during the write"]
    assert left.fields == {"progress": 0.2, "global_step": 2, "metrics": {"epoch": 1}}  # rewritten, never lost
    assert box.failed() and not box.due() and box.failing_since == 0.0
    now[0] = 0.5
    assert box.due() and not box.failed()  # the second failure of the same outage: no new warning
    now[0] = 1.4
    assert not box.due()  # the wait doubled to 1 s
    now[0] = 1.5
    assert box.due()
    box.applied(box.take())
    assert not box.pending() and box.failing_since is None and box.discard() == 0


def test_the_jobs_progress_never_moves_back(client, settings, dataset):
    job_id = _claimed(client, settings, dataset)
    with _factory(settings)() as session:
        renew(session, job_id, 1, progress=0.6, epoch=1, global_step=9, max_steps=15, phase="routed", loss=0.5)
        renew(session, job_id, 1, progress=0.5, epoch=1, global_step=8, max_steps=15, phase="warmup", loss=0.9,
              metrics={"epoch": 1})
    job = _job(settings, job_id)
    assert (job.progress, job.global_step, job.phase, job.loss, job.metrics) == (0.6, 9, "routed", 0.5, {"epoch": 1})
    with _factory(settings)() as session:
        renew(session, job_id, 1, progress=10 / 15, epoch=2, global_step=10, phase="routed", loss=0.4)
    job = _job(settings, job_id)
    assert (job.progress, job.epoch, job.global_step, job.loss) == (10 / 15, 2, 10, 0.4)


@pytest.fixture
def extra_callbacks(monkeypatch):
    """Callbacks added, after the pipeline's own, to every ``train`` the pipeline calls."""
    added: list[TrainerCallback] = []
    real = pipeline.train
    monkeypatch.setattr(pipeline, "train", lambda *a, callbacks, **k: real(*a, callbacks=[*callbacks, *added], **k))
    return added


def _run_in_thread(job_id, settings, **kwargs):
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(execute_job(job_id, settings=settings, **kwargs)))
    thread.start()
    return thread, outcome


def _assert_whole_log(events) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.data["epoch"] for e in events if e.type == "epoch"] == [1, 2, 3]
    assert [e.data["global_step"] for e in events if e.type == "checkpoint"] == CHECKPOINT_STEPS


def test_a_30_s_postgres_outage_mid_epoch_loses_no_event_and_no_checkpoint_record(client, settings, dataset, proxy,
                                                                                    extra_callbacks):
    job_id = create_job(client, dataset["id"], FAST)
    down, back = StepGate(7, wait_s=120), StepGate(13, wait_s=120)  # the outage: inside epoch 2 to inside 3
    extra_callbacks += [down, back]
    thread, outcome = _run_in_thread(job_id, proxy.settings)
    try:
        assert down.reached.wait(120)
        assert _job(settings, job_id).checkpoint_step == 6
        proxy.stop()
        stopped = time.monotonic()
        down.release.set()
        assert back.reached.wait(120)
        # epoch 2 ended and the checkpoints at steps 8 and 12 were stored during the outage, none recorded yet
        assert [e.data["epoch"] for e in _events(settings, job_id) if e.type == "epoch"] == [1]
        assert _job(settings, job_id).checkpoint_step == 6
        time.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
        proxy.start()
        restored = utcnow()
        # the heartbeat thread writes the backlog while training still waits: a resume now starts at step 12
        job = wait_for(lambda: (j := _job(settings, job_id)).checkpoint_step == 12 and j, 20, "the buffered records")
        store = ArtifactStore(settings.artifact_url)
        assert job.checkpoint_uri == checkpoint_key(job_id, 12) and store.exists(job.checkpoint_uri)
        # the checkpoints it replaced are deleted just after that commit (CheckpointSync._recorded): wait for it
        wait_for(lambda: not store.exists(checkpoint_key(job_id, 8)) and not store.exists(checkpoint_key(job_id, 6)),
                 10, "the replaced checkpoints removed")
        back.release.set()
        thread.join(120)
    finally:  # on a failure, let the attempt end before the fixtures go
        down.release.set()
        back.release.set()
        if proxy.listener is None:
            proxy.start()
        thread.join(120)
    assert outcome == ["succeeded"]
    events = _events(settings, job_id)
    _assert_whole_log(events)
    epoch_2 = next(e for e in events if e.type == "epoch" and e.data["epoch"] == 2)
    assert as_utc(epoch_2.created_at) < restored  # the time it happened, in the outage
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["attempt"], job["progress"], job["global_step"]) == ("succeeded", 1, 1.0, 18)


class _Watch(TrainerCallback):
    """The job's shown progress and step, read from the database after the pipeline's callbacks wrote theirs."""

    def __init__(self, settings, job_id) -> None:
        self.settings, self.job_id, self.seen = settings, job_id, []

    def _look(self) -> None:
        job = _job(self.settings, self.job_id)
        self.seen.append((job.progress, job.global_step))

    def on_train_begin(self, state, control) -> None:
        self._look()

    def on_step_end(self, state, control) -> None:
        self._look()


def test_a_resumed_attempt_does_not_move_progress_back_and_says_where_it_resumed(client, settings, dataset,
                                                                                 extra_callbacks):
    job_id = create_job(client, dataset["id"], FAST)
    held = StepGate(9, wait_s=120)  # inside epoch 2, after the step-8 checkpoint
    extra_callbacks.append(held)
    thread, outcome = _run_in_thread(job_id, settings.model_copy(update={"heartbeat_interval_s": 600}),
                                     progress_interval_s=0)
    assert held.reached.wait(120)
    with _factory(settings)() as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            heartbeat_at=utcnow() - timedelta(seconds=settings.lease_timeout_s + 1)))
        session.commit()
        assert reap(session, settings, lambda _id: None).requeued == [job_id]  # as if the worker had died
    held.release.set()
    thread.join(60)
    shown = _job(settings, job_id)
    assert outcome == ["lost"] and (shown.checkpoint_step, shown.global_step) == (8, 9)
    watch = _Watch(settings, job_id)
    extra_callbacks[:] = [watch]
    assert execute_job(job_id, settings=settings, progress_interval_s=0) == "succeeded"
    assert watch.seen[0] == (shown.progress, 9)  # the resume point (step 8) is not shown as progress
    assert all(b >= a for a, b in zip(watch.seen, watch.seen[1:]))  # never lower than the step before
    assert all(progress >= shown.progress and step >= 9 for progress, step in watch.seen)
    events = _events(settings, job_id)
    resumed = [e for e in events if e.type == "resumed"]
    assert len(resumed) == 1 and resumed[0].message == "attempt 2 resumes from the checkpoint at step 8"
    assert resumed[0].data == {"attempt": 2, "global_step": 8, "epoch": 1, "max_steps": 18, "progress": 8 / 18}
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["progress"], job["global_step"], job["attempt"]) == (1.0, 18, 2)
