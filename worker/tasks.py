"""The Celery task: take a job id, let the plain pipeline do the work (it re-reads the job row).

Only transient faults (the database, the broker or the store briefly gone) are retried, with
exponential backoff and jitter; bad input, out-of-memory and time limits end the job as ``failed``.
A job the pipeline handed back because this worker is stopping (outcome ``stopped``) is sent to the queue again
at once, so another (or the restarted) worker resumes it from its checkpoint within seconds; a task that reaches
a worker already stopping is sent again without being claimed (``deferred``).
"""

from __future__ import annotations

import logging
import random

from celery import shared_task

from app.db import session_factory
from app.faults import TransientJobError, is_transient
from app.ops.logs import job_context
from app.queue import CeleryEnqueuer
from app.services.leases import dispatch
from app.settings import Settings, get_settings
from worker import shutdown

logger = logging.getLogger(__name__)
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0


def backoff_s(retries: int) -> float:
    """Seconds before retry number ``retries + 1``: 2, 4, 8 ... at most 300, with full jitter."""
    return random.uniform(0.5, 1.0) * min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** retries)


@shared_task(name="worker.tasks.run_job", bind=True)
def run_job(self, job_id: str) -> str:
    """Run job ``job_id`` to its end; returns the outcome ("skipped" if another delivery holds it, "stopped" or
    "deferred" when this worker is stopping, see the module docstring)."""
    from worker.pipeline import execute_job  # torch loads in the worker process only, on first job

    settings = get_settings()
    with job_context(job_id):  # every log line of this job carries its id
        if shutdown.stop_requested():
            # taken by a worker already stopping (a polling transport still delivers for up to 2 s): leave the job
            # queued, unclaimed, for the next worker
            send_again(job_id, settings)
            return "deferred"
        with shutdown.running_attempt():  # from here a SIGTERM of this pool process checkpoints and requeues
            try:
                status = execute_job(job_id, settings=settings)
            except Exception as exc:
                if not (isinstance(exc, TransientJobError) or is_transient(exc)):
                    raise
                logger.warning("job %s: transient fault, retry %s: %s", job_id, self.request.retries + 1, exc)
                raise self.retry(exc=exc, countdown=backoff_s(self.request.retries),
                                 max_retries=settings.max_transient_retries)
            logger.info("job %s ended %s", job_id, status)
            if status == "stopped":
                send_again(job_id, settings)
    return status


def send_again(job_id: str, settings: Settings) -> bool:
    """Send the task of job ``job_id``, queued again by a stopping worker, to the broker at once (for the next
    worker: this one takes no new job while it stops). False, logged, if the broker or the database refused: the
    reaper sends it after ``redispatch_after_s`` then."""
    try:
        with session_factory(settings.database_url)() as session:
            return dispatch(session, job_id, CeleryEnqueuer(settings))
    except Exception as exc:
        if not is_transient(exc):
            raise
        logger.warning("job %s: could not send it again (%s); the reaper will", job_id, exc)
        return False
