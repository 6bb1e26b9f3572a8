"""Datasets: parse an upload in chunks, validate each row, and store the dataset and its rows in one
transaction (or nothing at all)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.errors import InvalidInput, NotFound
from app.models import Dataset, DatasetRow
from app.services.pagination import Page, newest_first
from app.services.quotas import Quotas, check_stored_rows, lock_tenant
from app.services.parsing import check_unique_names, detect_format, iter_chunks, parquet_schema
from app.services.uploads import StoredUpload, check_gzip_name, safe_name
from app.services.validation import LABEL_MAX, RowValidator, check_mapping, check_parquet_types

INSERT_BATCH = 5000


@dataclass
class Upload:
    """An uploaded file spooled to disk, with its column mapping (``mapping`` maps roles text,
    text_pair, label, id, gold_label to column names) and optionally the declared label set."""

    file: StoredUpload
    filename: str | None
    name: str | None
    format: str | None
    mapping: dict[str, str | None]
    labels: str | None = None


@dataclass
class Limits:
    """What an upload may contain."""

    min_rows_per_class: int
    max_rows: int
    max_errors: int = 100
    max_text_chars: int = 20_000
    max_uncompressed_bytes: int = 512 * 1024 * 1024


def parse_declared_labels(raw: str | None) -> list[str] | None:
    """The declared labels from a JSON list or a comma-separated string; None when not given."""
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw) if raw.strip().startswith("[") else raw.split(",")
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"labels is not a valid JSON list: {exc.msg}", param="labels") from exc
    if not isinstance(value, list):
        raise InvalidInput("labels must be a JSON list or comma-separated names", param="labels")
    labels = [str(v).strip() for v in value if str(v).strip()]
    if len(set(labels)) != len(labels) or len(labels) < 2 or any(len(v) > LABEL_MAX or "\x00" in v for v in labels):
        raise InvalidInput(f"labels={labels!r}: declare at least 2 distinct labels of at most {LABEL_MAX} "
                           "characters", param="labels")
    return labels


def create_dataset(session: Session, upload: Upload, limits: Limits, *, tenant_id: str,
                   quotas: Quotas | None = None) -> Dataset:
    """Parse ``upload`` in chunks, validate every row and store the dataset as ``ready`` with all its
    rows in one transaction, or store nothing; it belongs to ``tenant_id``, whose ``quotas`` (if given)
    bound the rows it may store.

    Raises:
        InvalidInput: a bad file, a missing column or failing rows; ``details`` lists up to
            ``limits.max_errors`` row errors ``{"row", "code", "column", "message"}``.
        PayloadTooLarge: a compressed file that expands past ``limits.max_uncompressed_bytes``.
        QuotaExceeded: the tenant's ``stored_rows`` quota would be passed (checked before and after parsing).
    """
    if quotas is not None:
        check_stored_rows(session, tenant_id, quotas, 0)
    declared = parse_declared_labels(upload.labels)
    fmt = detect_format(upload.filename, upload.format)
    mapping = {role: (column or None) for role, column in upload.mapping.items()}
    check_mapping(mapping)
    check_gzip_name(upload.file.path, upload.filename)
    columns = None
    if fmt == "parquet" and (schema := parquet_schema(upload.file.path)) is not None:
        check_unique_names(schema.names, "the Parquet schema")
        check_parquet_types(schema, mapping)
        columns = sorted({c for c in mapping.values() if c})  # only the mapped columns are ever decoded
    validator = RowValidator(mapping, declared, limits.min_rows_per_class, limits.max_rows, limits.max_text_chars,
                             limits.max_errors, fixed_columns=fmt != "jsonl")
    dataset = Dataset(tenant_id=tenant_id, name=safe_name(upload.name, upload.filename), status="processing",
                      format=fmt,
                      sha256=upload.file.sha256, size_bytes=upload.file.size, row_count=0, label_names=[],
                      class_histogram={}, columns={k: v for k, v in mapping.items() if v})
    try:
        session.add(dataset)
        session.flush()
        for chunk in iter_chunks(upload.file.path, fmt, max_uncompressed=limits.max_uncompressed_bytes,
                                 columns=columns):
            rows = validator.add(chunk)
            if rows is not None:
                _insert_rows(session, dataset.id, rows)
        names, histogram = validator.finish()
        if quotas is not None:
            lock_tenant(session, tenant_id)  # held until the commit: concurrent uploads count one after another
            check_stored_rows(session, tenant_id, quotas, validator.rows)
    except BaseException:
        session.rollback()  # nothing of an invalid file is kept
        raise
    dataset.status, dataset.row_count = "ready", validator.rows
    dataset.label_names, dataset.class_histogram = names, histogram
    session.commit()
    return dataset


def _insert_rows(session: Session, dataset_id: str, frame) -> None:
    records = frame.assign(dataset_id=dataset_id).to_dict("records")
    for start in range(0, len(records), INSERT_BATCH):
        # executemany: SQLAlchemy batches these into multi-row INSERTs (insertmanyvalues)
        session.execute(insert(DatasetRow), records[start:start + INSERT_BATCH])


def get_dataset(session: Session, dataset_id: str, *, tenant_id: str, param: str = "dataset_id") -> Dataset:
    """The tenant's dataset with this id; raises ``NotFound`` otherwise (another tenant's id included)."""
    dataset = session.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id))
    if dataset is None:
        raise NotFound(f"no dataset with id {dataset_id!r}", param=param)
    return dataset


def list_datasets(session: Session, *, tenant_id: str, limit: int, cursor: str | None) -> Page:
    """The tenant's datasets newest first, ``limit`` per page, continuing after ``cursor``."""
    return newest_first(session, Dataset, conditions=[Dataset.tenant_id == tenant_id], limit=limit, cursor=cursor)
