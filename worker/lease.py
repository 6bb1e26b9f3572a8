"""The lease a worker holds on one job attempt: a background thread renews the heartbeat every
``interval_s`` seconds whatever the trainer is doing (loading a model, a long no-grad pass, packaging
the adapter), and notices when the lease was taken away (the reaper requeued or failed the job)."""

from __future__ import annotations

import logging
import os
import socket
import threading

from sqlalchemy.orm import Session, sessionmaker

from app.faults import is_transient
from app.services.leases import lease_status, renew

logger = logging.getLogger(__name__)


def worker_identity() -> str:
    """``host:pid`` of this process, stored as the job's ``lease_owner``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """Attempt ``attempt`` of job ``job_id``; ``lost`` is set once another attempt or the reaper owns it."""

    def __init__(self, factory: sessionmaker[Session], job_id: str, attempt: int, *, interval_s: float) -> None:
        self.factory, self.job_id, self.attempt = factory, job_id, attempt
        self.interval_s = interval_s
        self.lost = threading.Event()
        self.status: str | None = "running"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, self.interval_s))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.renew()
            except Exception:  # keep beating: the step callback still renews, the reaper decides
                logger.exception("heartbeat of job %s failed", self.job_id)
            if self.lost.is_set():
                return

    def _observe(self, status: str | None) -> str | None:
        if status is None:
            self.lost.set()
        self.status = status
        return status

    def renew(self, **fields) -> str | None:
        """Renew the heartbeat (with progress ``fields``); returns the status, None once the lease is lost.
        A transient database error is logged and leaves the last known status."""
        try:
            with self.factory() as session:
                return self._observe(renew(session, self.job_id, self.attempt, **fields))
        except Exception as exc:
            if not is_transient(exc):
                raise
            logger.warning("heartbeat of job %s failed (%s); retrying", self.job_id, exc)
            return self.status

    def check(self) -> str | None:
        """Read the status (a cheap query each training step): ``running``, ``cancelling`` or None (lost)."""
        try:
            with self.factory() as session:
                return self._observe(lease_status(session, self.job_id, self.attempt))
        except Exception as exc:
            if not is_transient(exc):
                raise
            return self.status
