"""The Celery task: take a job id, let the plain pipeline do the work (it re-reads the job row)."""

from __future__ import annotations

import logging

from celery import shared_task

from app.settings import get_settings

logger = logging.getLogger(__name__)


@shared_task(name="worker.tasks.run_job")
def run_job(job_id: str) -> str:
    """Run job ``job_id`` to its end; returns the final status ("skipped" if another worker holds it)."""
    from worker.pipeline import execute_job  # torch loads in the worker process only, on first job

    status = execute_job(job_id, settings=get_settings())
    logger.info("job %s ended %s", job_id, status)
    return status
