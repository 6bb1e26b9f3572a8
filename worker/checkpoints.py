"""Checkpoints in the artifact store, so that another worker machine can resume a job.

``clear_core`` writes each checkpoint atomically to a local folder and calls ``on_save``; this
callback copies it to ``jobs/<id>/checkpoints/step-<n>.pt`` in the store (a local folder or object
storage), then records the key on the job (fenced by the attempt), then deletes the previous one.
The next attempt downloads the recorded checkpoint and passes it to ``train(resume_from=...)``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from clear_core import TrainerCallback, TrainerControl, TrainerState
from clear_core.checkpoint import STATE_FILE
from sqlalchemy import update

from app.faults import is_transient
from app.models import Job
from app.services.leases import ACTIVE
from app.storage import ArtifactStore
from worker.lease import Lease

logger = logging.getLogger(__name__)


def checkpoint_key(job_id: str, step: int) -> str:
    """Where the checkpoint of ``job_id`` at ``step`` is stored."""
    return f"jobs/{job_id}/checkpoints/step-{step}.pt"


class CheckpointSync(TrainerCallback):
    """Copies each new checkpoint to the store and points the job at it; ``stored_step`` is the step of the newest
    checkpoint this attempt stored and recorded (None before its first)."""

    def __init__(self, lease: Lease, store: ArtifactStore) -> None:
        self.lease, self.store = lease, store
        self.previous: str | None = None
        self.stored_step: int | None = None

    def on_save(self, state: TrainerState, control: TrainerControl, checkpoint_path: Path) -> None:
        """Upload, record (only while this attempt holds the job), then drop the older checkpoint."""
        key = checkpoint_key(self.lease.job_id, state.global_step)
        try:
            self.store.put_file(str(Path(checkpoint_path) / STATE_FILE), key)
            with self.lease.factory() as session:
                row = session.execute(update(Job).where(Job.id == self.lease.job_id, Job.attempt == self.lease.attempt,
                                                        Job.status.in_(ACTIVE))
                                      .values(checkpoint_uri=key, checkpoint_step=state.global_step)
                                      .returning(Job.checkpoint_uri)).first()
                session.commit()
        except Exception as exc:  # a missed checkpoint costs redone steps, not the job
            if not (is_transient(exc) or isinstance(exc, OSError)):
                raise
            logger.warning("checkpoint at step %s of job %s not stored: %s", state.global_step, self.lease.job_id, exc)
            return
        if row is None:
            return  # the lease is gone; the new attempt owns the checkpoints now
        if self.previous and self.previous != key:
            self.store.delete(self.previous)
        self.previous, self.stored_step = key, state.global_step


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
