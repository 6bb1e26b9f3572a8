"""The Celery task: take a job id, let the plain pipeline do the work (it re-reads the job row).

Only transient faults (the database, the broker or the store briefly gone) are retried, with
exponential backoff and jitter; bad input, out-of-memory and time limits end the job as ``failed``.
"""

from __future__ import annotations

import logging
import random

from celery import shared_task

from app.faults import TransientJobError, is_transient
from app.ops.logs import job_context
from app.settings import get_settings

logger = logging.getLogger(__name__)
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0


def backoff_s(retries: int) -> float:
    """Seconds before retry number ``retries + 1``: 2, 4, 8 ... at most 300, with full jitter."""
    return random.uniform(0.5, 1.0) * min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** retries)


@shared_task(name="worker.tasks.run_job", bind=True)
def run_job(self, job_id: str) -> str:
    """Run job ``job_id`` to its end; returns the outcome ("skipped" if another delivery holds it)."""
    from worker.pipeline import execute_job  # torch loads in the worker process only, on first job

    settings = get_settings()
    with job_context(job_id):  # every log line of this job carries its id
        try:
            status = execute_job(job_id, settings=settings)
        except Exception as exc:
            if not (isinstance(exc, TransientJobError) or is_transient(exc)):
                raise
            logger.warning("job %s: transient fault, retry %s: %s", job_id, self.request.retries + 1, exc)
            raise self.retry(exc=exc, countdown=backoff_s(self.request.retries),
                             max_retries=settings.max_transient_retries)
        logger.info("job %s ended %s", job_id, status)
    return status
