"""The Celery application and its one settings dict (no torch here: the API imports it to enqueue).

Start a worker with ``celery -A worker.celery_app worker --concurrency 1``. Stop it with SIGTERM or Ctrl-C
(Celery's warm shutdown): a running job is checkpointed at its next step and queued again (``worker.shutdown``).
"""

from __future__ import annotations

import importlib
from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_init, worker_process_init, worker_ready, worker_shutting_down

from app.ops.logs import configure_from_env
from app.settings import Settings, get_settings

VISIBILITY_MARGIN_S = 3600
HARD_LIMIT_MARGIN_S = 600


def celery_config(settings: Settings) -> dict[str, Any]:
    """Settings of a reliable long-job queue: ack after the work, one job per worker process at a time,
    requeue when the worker dies, and a visibility timeout longer than the longest job."""
    return {
        "broker_url": settings.broker_url,
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "task_reject_on_worker_lost": True,
        # a job's own limits are enforced by the worker (soft) and the reaper (hard); this kills a
        # worker process stuck past the longest allowed job, still well inside the visibility timeout
        "task_time_limit": settings.max_job_seconds + HARD_LIMIT_MARGIN_S,
        # a running job survives a broker restart: it needs only the database, and a redelivered
        # copy of its message is refused by the conditional claim
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_ignore_result": True,
        "task_default_queue": "jobs",
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options(settings.broker_url, settings.max_job_seconds),
        "worker_hijack_root_logger": False,
        "imports": ["worker.tasks", "worker.reaper"],
    }


def transport_options(broker_url: str, max_job_seconds: int) -> dict[str, Any]:
    """Broker options: brokers that redeliver unacked messages after a visibility timeout (Redis, SQS)
    get one longer than the longest job, so a running job is never handed to a second worker."""
    if broker_url.split(":", 1)[0] in ("redis", "rediss", "sqs", "sentinel"):
        return {"visibility_timeout": max_job_seconds + VISIBILITY_MARGIN_S}
    return {}  # kombu's SQLAlchemy transport passes its options to create_engine


@setup_logging.connect
def json_logs(loglevel: int | str | None = None, **_: Any) -> None:
    """Workers log JSON lines carrying the job id, as the API does (``CLEAR_LOG_LEVEL`` overrides
    ``--loglevel``; ``CLEAR_LOG_FORMAT=text`` for plain lines)."""
    configure_from_env(loglevel or "INFO")


@worker_init.connect
def _before_the_pool(**_: Any) -> None:
    """Load ``worker.shutdown`` in the main process: its stop flag is memory the pool processes must inherit."""
    importlib.import_module("worker.shutdown")


@worker_shutting_down.connect
def _stopping(**_: Any) -> None:
    """Warm (or cold) shutdown began: running jobs checkpoint at their next step and go back to the queue. Celery
    calls this from its signal handler in the main process, so it only sets the flag shared with the pool."""
    from worker.shutdown import request_stop

    request_stop()


@worker_ready.connect
def _sweep_attempt_folders(**_: Any) -> None:
    """Remove the attempt folders of workers that died (never a live worker's)."""
    from worker.scratch import sweep_at_start

    sweep_at_start(get_settings())


@worker_process_init.connect
def _own_connections(**_: Any) -> None:
    """A pool process forked after the main process opened database connections (the reaper's; a pool process
    replaced after a crash, a time limit or a SIGTERM of its own) must not use them: it gets a fresh pool, and the
    inherited connections are left to the main process (SQLAlchemy's ``dispose(close=False)`` for forks)."""
    from app.db import get_engine

    get_engine(get_settings().database_url).dispose(close=False)


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured for ``settings``."""
    app = Celery("clear")
    app.conf.update(celery_config(settings))
    return app


def __getattr__(name: str) -> Any:
    # ``celery -A worker.celery_app`` looks up ``celery``/``app``: build it from the environment then.
    if name in ("celery", "app"):
        global celery
        celery = make_celery(get_settings())
        return celery
    raise AttributeError(name)
