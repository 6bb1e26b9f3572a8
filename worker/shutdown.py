"""Stopping a worker without losing its job: SIGTERM or Ctrl-C on a worker with a running job checkpoints
the job at its next step, puts it back in the queue (event "worker stopped") and lets the next worker resume
from that checkpoint.

Celery's warm shutdown (SIGTERM or a first Ctrl-C on the worker's main process) takes no new task and waits for
the running one. The request reaches the training loop through one byte of memory shared with the pool processes
(``--pool prefork``, the default, forks them after this module was imported; with ``--pool solo`` the job runs in
the main process itself): Celery's ``worker_shutting_down`` signal sets it (see ``worker.celery_app``), and
:class:`StopAtCheckpoint`, a trainer callback, reads it after every step. A pool process that gets SIGTERM itself
(a ``kill`` of the whole process group, systemd's default) treats it the same way while it runs a job: for the
job's duration its SIGTERM handler (billiard's, which exits at once) is replaced by one that asks for the stop,
and the process ends once the job is back in the queue (unless the whole worker is stopping anyway); a second
SIGTERM, or one to an idle pool process, ends it at once, as before. No torch and no Celery here (the pipeline
imports this module).
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from clear_core.callbacks import TrainerCallback, TrainerControl, TrainerState

logger = logging.getLogger(__name__)

# MAP_SHARED | MAP_ANONYMOUS: written by the main process, seen by every pool process forked after this import
# (``worker.celery_app`` imports this module in the worker's main process before its pool starts)
_SHARED = mmap.mmap(-1, 1)
_MAIN_PID = os.getpid()
_SIGNALLED = [False]  # SIGTERM reached this process itself while it ran a job
_PREVIOUS: list[Any] = [signal.SIG_DFL]  # the SIGTERM handler a running job's replaced


def request_stop() -> None:
    """Ask every job of this worker (this process and its pool processes) to stop at its next checkpoint."""
    _SHARED[0] = 1


def stop_requested() -> bool:
    """True once the worker (or, with SIGTERM of its own, this pool process) is stopping."""
    return _SIGNALLED[0] or _SHARED[0] == 1


def clear_stop() -> None:
    """Forget a stop request (for a process that goes on taking jobs, e.g. the tests' own)."""
    _SHARED[0] = 0
    _SIGNALLED[0] = False


@contextmanager
def running_attempt() -> Iterator[None]:
    """Runs a job attempt (and what follows it, such as sending a stopped job to the broker again): in a pool
    process, a SIGTERM meanwhile stops it at a checkpoint instead of ending the process at once, and the process
    ends on leaving the block, as that SIGTERM asked, unless the whole worker is stopping (then the pool ends it).
    The main process keeps Celery's own handler (its warm shutdown reaches the job through
    ``worker_shutting_down``), and so does a job run outside the main thread (tests), where no handler can be set."""
    pool = os.getpid() != _MAIN_PID and threading.current_thread() is threading.main_thread()
    if pool:
        _PREVIOUS[0] = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        if pool:
            signal.signal(signal.SIGTERM, _previous())
            if _SIGNALLED[0] and _SHARED[0] != 1:  # its own SIGTERM, now that the job is safe
                os.kill(os.getpid(), signal.SIGTERM)


def _previous() -> Any:
    return signal.SIG_DFL if _PREVIOUS[0] is None else _PREVIOUS[0]  # None: a handler not set from Python


def _on_sigterm(signum: int, frame: Any) -> None:
    if not _SIGNALLED[0]:
        _SIGNALLED[0] = True  # checkpoint and requeue the running job first
        return
    signal.signal(signal.SIGTERM, _previous())  # told twice: end as the pool process would have
    os.kill(os.getpid(), signal.SIGTERM)


class WorkerStopping(Exception):
    """Training (or a prediction run) stopped because the worker is stopping; ``step`` is the optimizer step
    it stopped at (None before training began). The job goes back to the queue, not to ``failed``."""

    def __init__(self, step: int | None) -> None:
        super().__init__(f"the worker is stopping (step {step})")
        self.step = step


class StopAtCheckpoint(TrainerCallback):
    """Stops training for a stopping worker as soon as nothing would be lost: at once when the newest stored
    checkpoint is at the current step (training has not begun, or an epoch has just been saved), otherwise it
    asks the trainer for a checkpoint after the current step and stops right after it was written (stored or,
    if the store failed, not: the stop is never delayed past one checkpoint).

    ``sync`` is the job's ``worker.checkpoints.CheckpointSync`` (its ``stored_step`` is the newest step this attempt
    stored) and ``resumed_step`` the step of the stored checkpoint this run resumed from (None: a fresh start);
    this callback must come after ``sync`` in the trainer's list. Raises :class:`WorkerStopping`.
    """

    def __init__(self, sync: Any, resumed_step: int | None = None) -> None:
        self.sync, self.resumed_step = sync, resumed_step

    def _stored(self, state: TrainerState) -> bool:
        stored = self.sync.stored_step if self.sync.stored_step is not None else self.resumed_step
        return stored == state.global_step

    def on_train_begin(self, state: TrainerState, control: TrainerControl) -> None:
        """A resumed or fresh start has nothing new to save: stop at once if asked."""
        if stop_requested():
            raise WorkerStopping(state.global_step)

    def on_epoch_begin(self, state: TrainerState, control: TrainerControl) -> None:
        """Stop before the epoch's first step when the previous epoch's checkpoint is stored."""
        if stop_requested() and self._stored(state):
            raise WorkerStopping(state.global_step)

    def on_step_end(self, state: TrainerState, control: TrainerControl) -> None:
        """Ask for a checkpoint at this step (at an epoch's last step, the epoch's own checkpoint follows)."""
        if stop_requested():
            control.should_save = True

    def on_save(self, state: TrainerState, control: TrainerControl, checkpoint_path: Any) -> None:
        """The checkpoint has gone to the store: stop."""
        if stop_requested():
            logger.info("worker stopping: job %s stops at its checkpoint at step %s", self.sync.lease.job_id,
                        state.global_step)
            raise WorkerStopping(state.global_step)
