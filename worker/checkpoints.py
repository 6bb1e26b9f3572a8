"""Checkpoints in the artifact store, so that another worker machine can resume a job.

``clear_core`` writes each checkpoint atomically to a local folder and calls ``on_save``; this
callback copies it to ``jobs/<id>/checkpoints/step-<n>.pt`` in the store (a local folder or object
storage), then records the key on the job (fenced by the attempt; held in the lease's outbox while the
database is unreachable), then, once recorded, deletes the previous one.
The next attempt downloads the recorded checkpoint and passes it to ``train(resume_from=...)``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from clear_core import TrainerCallback, TrainerControl, TrainerState
from clear_core.checkpoint import STATE_FILE

from app.faults import is_transient
from app.storage import ArtifactStore
from worker.lease import Lease

logger = logging.getLogger(__name__)


def checkpoint_key(job_id: str, step: int) -> str:
    """Where the checkpoint of ``job_id`` at ``step`` is stored."""
    return f"jobs/{job_id}/checkpoints/step-{step}.pt"


class CheckpointSync(TrainerCallback):
    """Copies each new checkpoint to the store and points the job at it (a ``checkpoint`` event with the
    job's ``checkpoint_uri``/``checkpoint_step``, through the lease's outbox: written, in order, once the
    database is reachable, and only while this attempt holds the job); the checkpoint it replaces is deleted
    once the new one is recorded.
    ``stored_step`` is the step of the newest checkpoint this attempt stored and recorded (None before its first)."""

    def __init__(self, lease: Lease, store: ArtifactStore) -> None:
        self.lease, self.store = lease, store
        self.previous: str | None = None
        self.stored_step: int | None = None

    def on_save(self, state: TrainerState, control: TrainerControl, checkpoint_path: Path) -> None:
        """Upload, then record (now, or when the database is back); a store failure costs redone steps only."""
        key, step = checkpoint_key(self.lease.job_id, state.global_step), state.global_step
        try:
            self.store.put_file(str(Path(checkpoint_path) / STATE_FILE), key)
        except Exception as exc:  # an object store that is down costs redone steps, not the job
            if not (is_transient(exc) or isinstance(exc, OSError)):
                raise
            logger.warning("checkpoint at step %s of job %s not stored: %s", step, self.lease.job_id, exc)
            return
        self.lease.post("checkpoint", f"checkpoint at step {step} stored", {"global_step": step, "epoch": state.epoch},
                        job_fields={"checkpoint_uri": key, "checkpoint_step": step},
                        on_applied=lambda: self._recorded(key, step))
        self.lease.renew()

    def _recorded(self, key: str, step: int) -> None:
        """The job points at ``key`` (``step``) now: the checkpoint before it can go."""
        previous, self.previous, self.stored_step = self.previous, key, step
        if previous and previous != key:
            try:
                self.store.delete(previous)
            except OSError as exc:  # an orphan is removed with the job's checkpoints at its end
                logger.warning("could not delete the replaced checkpoint %s of job %s: %s", previous,
                               self.lease.job_id, exc)


def restore(store: ArtifactStore, key: str, step: int, directory: Path) -> Path:
    """Download the stored checkpoint ``key`` into ``directory/checkpoint-<step>/`` for ``resume_from``."""
    folder = directory / f"checkpoint-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    store.get_file(key, str(folder / STATE_FILE))
    return folder


def delete_checkpoints(store: ArtifactStore, job_id: str) -> None:
    """Remove a finished job's checkpoints from the store (best effort, logged)."""
    try:
        store.delete_prefix(f"jobs/{job_id}/checkpoints")
    except OSError:
        logger.warning("could not delete the checkpoints of job %s", job_id, exc_info=True)
