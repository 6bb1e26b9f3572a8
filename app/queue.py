"""Hand a committed job id to the Celery workers (by task name: the API never imports the worker code)."""

from __future__ import annotations

from functools import cached_property

from app.settings import Settings

RUN_JOB_TASK = "worker.tasks.run_job"


class CeleryEnqueuer:
    """Callable ``enqueue(job_id)`` that sends ``run_job(job_id)`` to the configured broker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def celery(self):
        """The Celery app, built on first use with the workers' configuration."""
        from worker.celery_app import make_celery  # celery config only; no torch behind it

        return make_celery(self.settings)

    def __call__(self, job_id: str) -> None:
        """Send the job; raises if the broker cannot be reached."""
        self.celery.send_task(RUN_JOB_TASK, args=[job_id], retry=True,
                              retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5})
