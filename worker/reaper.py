"""The reaper, run by every worker: a thread in the worker's main process that every
``reaper_interval_s`` requeues jobs whose heartbeat went stale (see ``app.services.leases.reap``).

Running it inside each worker (rather than a separate Celery beat) means the embedded mode
(``python -m app.cli serve``) has it without another process; concurrent reapers are safe because
each change is a conditional UPDATE. Worker pool processes also get their torch thread count here.
"""

from __future__ import annotations

import logging
import threading

from celery.signals import worker_process_init, worker_ready, worker_shutdown

from app.db import session_factory
from app.settings import Settings, get_settings

logger = logging.getLogger(__name__)


class Reaper:
    """A daemon thread calling ``reap`` every ``settings.reaper_interval_s`` seconds until stopped."""

    def __init__(self, settings: Settings, enqueue=None) -> None:
        from app.queue import CeleryEnqueuer

        self.settings = settings
        self.enqueue = enqueue or CeleryEnqueuer(settings)
        self.factory = session_factory(settings.database_url)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="job-reaper", daemon=True)

    def run_once(self):
        """One reaper pass; returns its ``ReapResult``."""
        from app.services.leases import reap

        with self.factory() as session:
            result = reap(session, self.settings, self.enqueue)
        if result.requeued or result.failed or result.cancelled:
            logger.warning("reaper: requeued %s, failed %s, cancelled %s", result.requeued, result.failed,
                           result.cancelled)
        return result

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.reaper_interval_s):
            try:
                self.run_once()
            except Exception:  # the database may be down for a while: try again next round
                logger.warning("reaper pass failed", exc_info=True)

    def start(self) -> "Reaper":
        """Start the thread (a first pass runs after one interval)."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to stop and wait for it briefly."""
        self._stop.set()
        self.thread.join(timeout=5)


_reaper: Reaper | None = None


@worker_ready.connect
def _start_reaper(**_kwargs) -> None:
    global _reaper
    _reaper = Reaper(get_settings()).start()


@worker_shutdown.connect
def _stop_reaper(**_kwargs) -> None:
    if _reaper is not None:
        _reaper.stop()


@worker_process_init.connect
def _limit_threads(**_kwargs) -> None:
    threads = get_settings().worker_torch_threads
    if threads:
        import torch

        torch.set_num_threads(threads)
