"""Write a finished job's results: the noise report rows in bulk, and the adapter archive, checked
by reloading it and comparing its logits with the trained model's."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from clear_core import load_adapter
from sqlalchemy import insert
from sqlalchemy.orm import Session

from app.models import NoiseRow
from app.storage import ArtifactStore, adapter_key

if TYPE_CHECKING:
    from clear_core import TrainResult

    from worker.pipeline import JobInputs

INSERT_BATCH = 5000
CHECK_ROWS = 64
LOGIT_ATOL = 1e-4


class AdapterMismatch(RuntimeError):
    """The saved adapter, reloaded, does not reproduce the trained model's logits."""


def write_noise_rows(session: Session, job_id: str, records: list[dict[str, Any]], row_indices: list[int]) -> None:
    """Insert one noise row per training row, in batches (not committed); ``row_indices`` maps the
    report's row order back to the dataset's row index."""
    rows = []
    for rec in records:
        row = dict(rec, job_id=job_id, row_id=None if rec["id"] is None else str(rec["id"]),
                   row_index=row_indices[rec["row_index"]])
        row.pop("id")
        rows.append(row)
    for start in range(0, len(rows), INSERT_BATCH):
        session.execute(insert(NoiseRow), rows[start:start + INSERT_BATCH])


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
                    store: ArtifactStore) -> str:
    """Save, verify, archive (.tar.gz, files at the top level) and store the adapter; returns its key."""
    directory = tmp / "adapter"
    result.model.save(directory, training=inputs.training.to_dict())
    verify_adapter(result, directory, inputs)
    archive = tmp / "adapter.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(directory)))
    return store.put_file(str(archive), adapter_key(job_id))
