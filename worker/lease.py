"""The lease a worker holds on one job attempt: a background thread renews the heartbeat every
``interval_s`` seconds whatever the trainer is doing (loading a model, a long no-grad pass, packaging
the adapter), writes what a database outage held back, and notices when the lease was taken away (the
reaper requeued or failed the job)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.faults import is_transient
from app.models import utcnow
from app.services.leases import PendingEvent, lease_status, renew
from worker.outbox import Outbox

logger = logging.getLogger(__name__)


def worker_identity() -> str:
    """``host:pid`` of this process, stored as the job's ``lease_owner``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """Attempt ``attempt`` of job ``job_id``; ``lost`` is set once another attempt or the reaper owns it.

    Every write of the attempt goes through ``outbox`` and is committed by one fenced ``renew`` (heartbeat,
    progress, then the buffered events in order): while the database is unreachable the writes wait there and
    the trainer goes on; the heartbeat thread (and the trainer's next write) retries, with backoff, and drains
    them once it is back. If the reaper gave the job to another attempt meanwhile (an outage longer than
    ``CLEAR_LEASE_TIMEOUT_S``), nothing buffered is written: the new attempt redoes it from the last recorded
    checkpoint, and a checkpoint record is never written ahead of the events made before it.
    """

    def __init__(self, factory: sessionmaker[Session], job_id: str, attempt: int, *, interval_s: float) -> None:
        self.factory, self.job_id, self.attempt = factory, job_id, attempt
        self.interval_s = interval_s
        self.lost = threading.Event()
        self.status: str | None = "running"
        self.outbox = Outbox()
        self._writing = threading.Lock()  # one batch in flight at a time, so events keep their order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, self.interval_s))
        left = len(self.outbox)
        if left and not self.lost.is_set():  # the attempt ended (released) while the database stayed away
            logger.warning("job %s attempt %s ended with %d event(s) unwritten (the database was unreachable); "
                           "the next attempt redoes the steps after the last recorded checkpoint",
                           self.job_id, self.attempt, left, extra={"job_id": self.job_id})

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sync(wait_backoff=False)
            except Exception:  # keep beating: the step callback still renews, the reaper decides
                logger.exception("heartbeat of job %s failed", self.job_id)
            if self.lost.is_set():
                return

    def _observe(self, status: str | None) -> str | None:
        if status is None and not self.lost.is_set():
            self.lost.set()
            dropped = self.outbox.discard()  # fenced out: the new attempt owns the job's log and checkpoints
            if dropped:
                logger.warning("job %s: attempt %s lost its lease; %d buffered event(s) not written",
                               self.job_id, self.attempt, dropped, extra={"job_id": self.job_id})
        self.status = status
        return status

    def post(self, type_: str, message: str | None, data: dict[str, Any] | None = None, *,
             job_fields: dict[str, Any] | None = None, on_applied: Callable[[], None] | None = None) -> None:
        """Buffer an event (stamped now) for the next write; ``job_fields`` are job columns set in the same
        transaction; ``on_applied`` runs once it is committed, never if the attempt lost the job."""
        if not self.lost.is_set():
            self.outbox.post(PendingEvent(type_, message, data, utcnow(), job_fields or {}), on_applied)

    def _write(self) -> str | None:
        """Commit what is pending in one fenced transaction; raises the database's error if it is down."""
        with self._writing:
            if self.lost.is_set():
                return None
            batch = self.outbox.take()
            with self.factory() as session:
                status = renew(session, self.job_id, self.attempt, events=batch.events, **batch.fields)
            if status is None:
                return self._observe(None)
            outage = self.outbox.failing_since
            self.outbox.applied(batch)
            if outage is not None:
                logger.info("job %s: database back after %.0f s; wrote %d buffered event(s)", self.job_id,
                            self.outbox.clock() - outage, len(batch.events), extra={"job_id": self.job_id})
            for callback in batch.callbacks:
                if callback is not None:
                    callback()
            return self._observe(status)

    def _sync(self, *, wait_backoff: bool) -> str | None:
        """``_write`` unless a recent try failed (``wait_backoff``); a transient error leaves the writes
        buffered and returns the last known status."""
        if wait_backoff and not self.outbox.due():
            return self.status
        try:
            return self._write()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if self.outbox.failed():
                logger.warning("job %s: database unreachable (%s); buffering %d event(s) and the progress, "
                               "retrying", self.job_id, str(exc).splitlines()[0][:300], len(self.outbox),
                               extra={"job_id": self.job_id})
            return self.status

    def renew(self, **fields) -> str | None:
        """Renew the heartbeat with progress ``fields`` and write whatever is buffered; returns the status, None
        once the lease is lost. While the database is unreachable the writes stay buffered (retried with
        backoff) and the last known status is returned."""
        self.outbox.merge(**fields)
        return self._sync(wait_backoff=True)

    def check(self) -> str | None:
        """The status (a cheap read each training step): ``running``, ``cancelling`` or None (lost); with
        writes buffered, it writes them instead (the same answer, from the fenced update)."""
        if self.outbox.pending():
            return self._sync(wait_backoff=True)
        if not self.outbox.due():
            return self.status
        try:
            with self.factory() as session:
                status = lease_status(session, self.job_id, self.attempt)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.outbox.failed()
            return self.status
        self.outbox.recovered()
        return self._observe(status)

    def flush(self) -> bool:
        """Write everything buffered now, before the attempt's final transition (call it under
        ``app.faults.retry_transient``: a database that is still down raises its error). Returns True while
        this attempt holds the job (everything written), False once it lost it (nothing written)."""
        return self._write() is not None
