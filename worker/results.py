"""Write a finished job's results: the noise report rows in bulk, and the adapter archive, checked
by reloading it and comparing its logits with the trained model's."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from clear_core import load_adapter
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.models import Job, NoiseRow
from app.storage import ArtifactStore, adapter_key

if TYPE_CHECKING:
    from clear_core import TrainResult

    from worker.pipeline import JobInputs

INSERT_BATCH = 5000
CHECK_ROWS = 64
LOGIT_ATOL = 1e-4


class AdapterMismatch(RuntimeError):
    """The saved adapter, reloaded, does not reproduce the trained model's logits."""


def _upsert(session: Session):
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(NoiseRow)
    updates = {c.name: statement.excluded[c.name] for c in NoiseRow.__table__.columns
               if c.name not in ("job_id", "row_index")}
    return statement.on_conflict_do_update(index_elements=["job_id", "row_index"], set_=updates)


def write_noise_rows(session: Session, job_id: str, records: list[dict[str, Any]], row_indices: list[int]) -> None:
    """Upsert one noise row per training row on (job_id, row_index), in batches (not committed), so
    writing the same report twice (a retried finish, a duplicate delivery) leaves one row each;
    ``row_indices`` maps the report's row order back to the dataset's row index. The rows belong to the
    job's tenant."""
    tenant_id = session.scalar(select(Job.tenant_id).where(Job.id == job_id))
    rows = []
    for rec in records:
        row = dict(rec, job_id=job_id, tenant_id=tenant_id, row_id=None if rec["id"] is None else str(rec["id"]),
                   row_index=row_indices[rec["row_index"]])
        row.pop("id")
        rows.append(row)
    for start in range(0, len(rows), INSERT_BATCH):
        session.execute(_upsert(session), rows[start:start + INSERT_BATCH])


def verify_adapter(result: "TrainResult", directory: Path, inputs: "JobInputs") -> float:
    """Reload the saved adapter and return the largest logit difference on the first rows.

    Raises:
        AdapterMismatch: if it exceeds ``LOGIT_ATOL`` plus a relative tolerance.
    """
    texts = list(inputs.data.texts[:CHECK_ROWS])
    pairs = list(inputs.data.text_pairs[:CHECK_ROWS]) if inputs.data.text_pairs is not None else None
    reloaded = load_adapter(directory, model_path=inputs.model_path)
    expected = result.model.predict_logits(texts, pairs)
    got = reloaded.predict_logits(texts, pairs)
    diff = float(np.max(np.abs(expected - got)))
    if not np.allclose(expected, got, atol=LOGIT_ATOL, rtol=1e-3):
        raise AdapterMismatch(f"the reloaded adapter's logits differ from the trained model's by {diff:.2e}")
    return diff


def package_adapter(result: "TrainResult", job_id: str, inputs: "JobInputs", tmp: Path,
                    store: ArtifactStore, *, tenant_id: str) -> str:
    """Save, verify, archive (.tar.gz, files at the top level) and store the adapter below its tenant's
    folder; returns its key."""
    directory = tmp / "adapter"
    result.save(directory, training=inputs.training.to_dict())
    verify_adapter(result, directory, inputs)
    archive = tmp / "adapter.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(directory)))
    return store.put_file(str(archive), adapter_key(tenant_id, job_id))
