"""Dataset exports: a dataset's rows in ``row_index`` order as CSV, JSON lines or Parquet, read from the
database ``BATCH`` rows at a time (keyset on ``row_index``), so a large dataset never sits in memory.

Every format has the columns ``id, text, text_pair, label, gold_label`` (``id`` is the row's id from the upload,
empty when it had none). Every format holds the values exactly, so an export uploads again as the same rows; a
CSV export asked for ``formula_safe`` (to open in a spreadsheet) gives cells that a spreadsheet would run as a
formula (starting ``= + - @``, tab or carriage return) a leading ``'`` (``clear_core.csv_safety``) instead.

The JSON lines export is also the canonical form behind a version's ``sha256``: ``rows_digest`` hashes exactly
the bytes ``GET /v1/datasets/{id}/rows.jsonl`` returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clear_core.csv_safety import csv_safe

from app.models import DatasetRow
from app.services.streaming import csv_chunks

EXPORT_FIELDS = ("id", "text", "text_pair", "label", "gold_label")
BATCH = 5000
CSV_FLUSH_ROWS = 500


def row_batch(session: Session, dataset_id: str, after: int, limit: int = BATCH) -> list[dict[str, Any]]:
    """Up to ``limit`` rows of the dataset with ``row_index > after``, in order, as export records (with
    ``row_index`` as well, for the next batch's keyset)."""
    query = (select(DatasetRow.row_index, DatasetRow.row_id, DatasetRow.text, DatasetRow.text_pair, DatasetRow.label,
                    DatasetRow.gold_label)
             .where(DatasetRow.dataset_id == dataset_id, DatasetRow.row_index > after)
             .order_by(DatasetRow.row_index).limit(limit))
    return [{"row_index": r.row_index, "id": r.row_id, "text": r.text, "text_pair": r.text_pair, "label": r.label,
             "gold_label": r.gold_label} for r in session.execute(query)]


def _batches_in(session: Session, dataset_id: str, batch: int) -> Iterator[list[dict[str, Any]]]:
    after = -1
    while rows := row_batch(session, dataset_id, after, batch):
        yield rows
        after = rows[-1]["row_index"]


def iter_rows(factory: sessionmaker[Session], dataset_id: str, batch: int = BATCH) -> Iterator[dict[str, Any]]:
    """Every row of the dataset in ``row_index`` order as ``{id, text, text_pair, label, gold_label}``, each batch
    read in a session of its own (a streamed response outlives the request's session)."""
    after = -1
    while True:
        with factory() as session:
            rows = row_batch(session, dataset_id, after, batch)
        if not rows:
            return
        for row in rows:
            yield {name: row[name] for name in EXPORT_FIELDS}
        after = rows[-1]["row_index"]


def jsonl_line(record: dict[str, Any]) -> str:
    """One row as its JSON line: ``{"id", "text", "text_pair", "label", "gold_label"}`` in that order, ASCII
    (non-ASCII characters as ``\\u`` escapes), ``", "`` and ``": "`` separators, then ``\\n``."""
    return json.dumps({name: record[name] for name in EXPORT_FIELDS}) + "\n"


def jsonl_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The rows as JSON lines (see ``jsonl_line``), in chunks of about ``CSV_FLUSH_ROWS`` rows."""
    chunk: list[str] = []
    for row in rows:
        chunk.append(jsonl_line(row))
        if len(chunk) >= CSV_FLUSH_ROWS:
            yield "".join(chunk)
            chunk = []
    if chunk:
        yield "".join(chunk)


def csv_lines(rows: Iterator[dict[str, Any]], *, formula_safe: bool = False) -> Iterator[str]:
    """The rows as CSV text chunks: the header ``id,text,text_pair,label,gold_label``, then one line per row,
    missing values empty; the values exact, or with formula-like cells neutralised when ``formula_safe``."""
    cell = csv_safe if formula_safe else (lambda value: value)
    return csv_chunks(EXPORT_FIELDS, ([cell(row[k]) for k in EXPORT_FIELDS] for row in rows),
                      flush_rows=CSV_FLUSH_ROWS)


def write_parquet(factory: sessionmaker[Session], dataset_id: str, batch: int = BATCH,
                  directory: str | None = None) -> str:
    """Write the dataset to a temporary Parquet file, one row group per ``batch`` rows (every column a nullable
    string), and return its path; the caller deletes it. On any error the file is removed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, pa.string()) for name in EXPORT_FIELDS])
    fd, path = tempfile.mkstemp(prefix="export-", suffix=".parquet", dir=directory)
    os.close(fd)
    try:
        with pq.ParquetWriter(path, schema) as writer:
            after, wrote = -1, False
            while True:
                with factory() as session:
                    rows = row_batch(session, dataset_id, after, batch)
                if not rows:
                    break
                columns = {name: [r[name] for r in rows] for name in EXPORT_FIELDS}
                writer.write_table(pa.table(columns, schema=schema))
                wrote, after = True, rows[-1]["row_index"]
            if not wrote:  # a file with the schema and no rows
                writer.write_table(pa.table({name: [] for name in EXPORT_FIELDS}, schema=schema))
    except BaseException:
        os.unlink(path)
        raise
    return path


def rows_digest(session: Session, dataset_id: str, batch: int = BATCH) -> tuple[str, int]:
    """``(sha256 hex, size in bytes)`` of the dataset's JSON lines export (``jsonl_line`` of every row in
    ``row_index`` order), read through ``session`` (so rows not yet committed by it count)."""
    digest, size = hashlib.sha256(), 0
    for rows in _batches_in(session, dataset_id, batch):
        data = "".join(jsonl_line(r) for r in rows).encode()
        digest.update(data)
        size += len(data)
    return digest.hexdigest(), size
