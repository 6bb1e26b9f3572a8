"""Write a finished job's results: the noise report rows in columns (COPY on Postgres), and the adapter archive, checked
by reloading it and comparing its logits with the trained model's."""

from __future__ import annotations

import json
import math
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
from clear_core import load_adapter
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from app.models import Job, NoiseRow
from app.storage import ArtifactStore, adapter_key

if TYPE_CHECKING:
    from clear_core import TrainResult
    from clear_core.report import NoiseReport

    from worker.pipeline import JobInputs

INSERT_BATCH = 5000
COPY_CHUNK_ROWS = 50_000  # rows rendered to CSV per COPY write: bounds the text held at once
CHECK_ROWS = 64
LOGIT_ATOL = 1e-4
# the noise_rows columns a report fills, in COPY order (job_id and tenant_id are the job's)
REPORT_COLUMNS = ("row_index", "row_id", "given_label", "predicted_label", "suggested_label", "suggested_confidence",
                  "p_clean", "p_clean_history", "label_quality", "flagged", "flag_threshold", "flag_reason", "split",
                  "rank")


class AdapterMismatch(RuntimeError):
    """The saved adapter, reloaded, does not reproduce the trained model's logits."""


def write_noise_report(session: Session, job_id: str, report: "NoiseReport", row_indices: Sequence[int]) -> int:
    """Replace the job's noise rows by one row per report row (not committed), written in columns: with
    ``COPY ... FROM STDIN`` on Postgres, a bulk insert on SQLite, a chunk of rows at a time and with no dict
    per row. The job's row is locked first and its earlier rows deleted in the same transaction, so writing
    the same report twice (a retried finish, a duplicate delivery) leaves one row each. ``row_indices``
    ``(N,)`` maps the report's row order to the dataset's row index. The rows belong to the job's tenant.
    Returns N."""
    size = COPY_CHUNK_ROWS if _is_postgres(session) else INSERT_BATCH
    return _write_chunks(session, job_id, (_stored_ids(chunk, row_indices) for chunk in report.column_chunks(size)))


def write_noise_rows(session: Session, job_id: str, records: list[dict[str, Any]], row_indices: list[int]) -> int:
    """:func:`write_noise_report` for report records (``NoiseReport.to_records``), e.g. a report read back;
    a record without ``flag_reason`` / ``split`` stores null / ``"train"``. Returns the number of rows."""
    history = np.full((max((len(r["p_clean_history"]) for r in records), default=0), len(records)), np.nan)
    for i, rec in enumerate(records):
        history[:len(rec["p_clean_history"]), i] = rec["p_clean_history"]
    columns = {
        "row_index": np.array([rec["row_index"] for rec in records], dtype=np.int64),
        "id": [rec["id"] for rec in records],
        "p_clean": np.array([np.nan if rec["p_clean"] is None else rec["p_clean"] for rec in records], np.float64),
        "p_clean_history": history, "flag_reason": [rec.get("flag_reason") for rec in records],
        "split": [rec.get("split", "train") for rec in records],
    }
    for name in ("given_label", "predicted_label", "suggested_label"):
        columns[name] = [rec[name] for rec in records]
    for name, dtype in (("suggested_confidence", np.float64), ("label_quality", np.float64), ("flagged", bool),
                        ("flag_threshold", np.float64), ("rank", np.int64)):
        columns[name] = np.array([rec[name] for rec in records], dtype=dtype)
    return _write_chunks(session, job_id, [_stored_ids(columns, row_indices)])


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _stored_ids(chunk: dict[str, Any], row_indices: Sequence[int]) -> dict[str, Any]:
    """A chunk of report columns with the stored ids: ``row_index`` the dataset's row index of each report row,
    ``row_id`` the caller id as a string (or None)."""
    ids = chunk.pop("id")
    chunk["row_id"] = None if ids is None else [None if x is None else str(x) for x in ids]
    chunk["row_index"] = np.fromiter((row_indices[i] for i in chunk["row_index"].tolist()), dtype=np.int64,
                                     count=len(chunk["row_index"]))
    return chunk


def _write_chunks(session: Session, job_id: str, chunks: Iterable[dict[str, Any]]) -> int:
    tenant_id = session.scalar(select(Job.tenant_id).where(Job.id == job_id).with_for_update())
    session.execute(delete(NoiseRow).where(NoiseRow.job_id == job_id))
    if _is_postgres(session):
        return _copy_rows(session, job_id, tenant_id, chunks)
    n = 0
    for chunk in chunks:
        size = len(chunk["row_index"])
        for start in range(0, size, INSERT_BATCH):
            session.execute(insert(NoiseRow), _dicts(job_id, tenant_id, chunk, start, min(size, start + INSERT_BATCH)))
        n += size
    return n


def _copy_rows(session: Session, job_id: str, tenant_id: str, chunks: Iterable[dict[str, Any]]) -> int:
    """COPY the rows in CSV (pyarrow renders each chunk: shortest round-trip floats, quoted strings, empty
    = null) through the session's own connection, so they commit or roll back with it."""
    import pyarrow.csv as pa_csv

    names = ", ".join(("job_id", "tenant_id") + REPORT_COLUMNS)
    sql = f"COPY {NoiseRow.__tablename__} ({names}) FROM STDIN WITH (FORMAT csv)"
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    raw = session.connection().connection.driver_connection
    n = 0
    with raw.cursor() as cursor, cursor.copy(sql) as copy:
        for chunk in chunks:
            size = len(chunk["row_index"])
            for start in range(0, size, COPY_CHUNK_ROWS):
                sink = pa.BufferOutputStream()
                pa_csv.write_csv(_arrow_chunk(job_id, tenant_id, chunk, start, min(size, start + COPY_CHUNK_ROWS)),
                                 sink, options)
                copy.write(memoryview(sink.getvalue()))
            n += size
    return n


def _arrow_chunk(job_id: str, tenant_id: str, columns: dict[str, Any], start: int, end: int) -> pa.Table:
    """Rows ``start:end`` as an Arrow table in COPY column order; the history as the JSON text that the
    ORM's JSON column stores (``json.dumps`` of the floats)."""
    size, cut = end - start, slice(start, end)
    floats = {name: pa.array(columns[name][cut], pa.float64())
              for name in ("suggested_confidence", "label_quality", "flag_threshold")}
    p_clean = columns["p_clean"][cut]
    row_id = columns["row_id"]
    table = {
        "job_id": pa.repeat(job_id, size), "tenant_id": pa.repeat(tenant_id, size),
        "row_index": pa.array(columns["row_index"][cut], pa.int64()),
        "row_id": pa.nulls(size, pa.string()) if row_id is None else pa.array(row_id[cut], pa.string()),
        **{name: pa.array(list(columns[name][cut]), pa.string())
           for name in ("given_label", "predicted_label", "suggested_label")},
        "suggested_confidence": floats["suggested_confidence"],
        "p_clean": pa.array(p_clean, pa.float64(), mask=np.isnan(p_clean)),
        "p_clean_history": pa.array([json.dumps(h) for h in _histories(columns["p_clean_history"], cut)],
                                    pa.string()),
        "label_quality": floats["label_quality"], "flagged": pa.array(columns["flagged"][cut], pa.bool_()),
        "flag_threshold": floats["flag_threshold"],
        "flag_reason": pa.array(columns["flag_reason"][cut], pa.string()),
        "split": pa.array(columns["split"][cut], pa.string()), "rank": pa.array(columns["rank"][cut], pa.int64()),
    }
    return pa.table(table)


def _histories(history: np.ndarray, cut: slice) -> list[list[float]]:
    """Each row's p_clean history as floats (``[]`` for a held-out row: its history is NaN)."""
    rows = history[:, cut].T.astype(np.float64)
    known = ~np.isnan(rows).any(axis=1) if rows.shape[1] else np.zeros(len(rows), bool)
    return [h if ok else [] for h, ok in zip(rows.tolist(), known.tolist())]


def _dicts(job_id: str, tenant_id: str, columns: dict[str, Any], start: int, end: int) -> list[dict[str, Any]]:
    """Rows ``start:end`` as insert parameters (SQLite's bulk insert), values as ``to_records`` gives them."""
    cut = slice(start, end)
    p_clean = columns["p_clean"][cut].tolist()
    row_id = columns["row_id"]
    out = []
    for j, history in enumerate(_histories(columns["p_clean_history"], cut)):
        i = start + j
        out.append({"job_id": job_id, "tenant_id": tenant_id, "row_index": int(columns["row_index"][i]),
                    "row_id": None if row_id is None else row_id[i],
                    "given_label": columns["given_label"][i], "predicted_label": columns["predicted_label"][i],
                    "suggested_label": columns["suggested_label"][i],
                    "suggested_confidence": float(columns["suggested_confidence"][i]),
                    "p_clean": None if math.isnan(p_clean[j]) else p_clean[j], "p_clean_history": history,
                    "label_quality": float(columns["label_quality"][i]), "flagged": bool(columns["flagged"][i]),
                    "flag_threshold": float(columns["flag_threshold"][i]), "flag_reason": columns["flag_reason"][i],
                    "split": columns["split"][i], "rank": int(columns["rank"][i])})
    return out


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
