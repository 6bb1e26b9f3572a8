"""Datasets: parse and validate an upload, then store it and its rows in one transaction."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import insert
from sqlalchemy.orm import Session

from app.errors import InvalidInput, NotFound
from app.models import Dataset, DatasetRow
from app.services.pagination import Page, newest_first
from app.services.parsing import detect_format, parse_file
from app.services.validation import validate_rows

INSERT_BATCH = 5000


@dataclass
class Upload:
    """An uploaded file with its column mapping (``mapping`` maps roles text, text_pair, label, id,
    gold_label to column names) and optionally the declared label set."""

    content: bytes
    filename: str | None
    name: str | None
    format: str | None
    mapping: dict[str, str | None]
    labels: str | None = None


def parse_declared_labels(raw: str | None) -> list[str] | None:
    """The declared labels from a JSON list or a comma-separated string; None when not given."""
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw) if raw.strip().startswith("[") else raw.split(",")
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"labels is not a valid JSON list: {exc.msg}", param="labels") from exc
    labels = [str(v).strip() for v in value if str(v).strip()]
    if len(set(labels)) != len(labels) or len(labels) < 2:
        raise InvalidInput(f"labels={labels!r}: declare at least 2 distinct labels", param="labels")
    return labels


def create_dataset(session: Session, upload: Upload, *, min_rows_per_class: int, max_rows: int,
                   max_errors: int) -> Dataset:
    """Validate every row of ``upload`` and store the dataset as ``ready`` with all its rows, or nothing.

    Raises:
        InvalidInput: a bad file, a missing column or failing rows; ``details`` lists up to
            ``max_errors`` row errors ``{"row", "code", "column", "message"}``.
    """
    declared = parse_declared_labels(upload.labels)
    fmt = detect_format(upload.filename, upload.format)
    frame = parse_file(upload.content, fmt)
    valid, errors = validate_rows(frame, upload.mapping, declared_labels=declared,
                                  min_rows_per_class=min_rows_per_class, max_rows=max_rows)
    if valid is None:
        codes = sorted({e["code"] for e in errors})
        raise InvalidInput(f"{len(errors)} validation error(s) ({', '.join(codes)}); fix the listed rows "
                           "and upload again", param="file", code="invalid_rows", details=errors[:max_errors])
    dataset = Dataset(name=upload.name or upload.filename or "dataset", status="ready", format=fmt,
                      sha256=hashlib.sha256(upload.content).hexdigest(), size_bytes=len(upload.content),
                      row_count=len(valid.frame), label_names=valid.label_names, class_histogram=valid.histogram,
                      columns={k: v for k, v in upload.mapping.items() if v})
    session.add(dataset)
    session.flush()
    _insert_rows(session, dataset.id, valid.frame)
    session.commit()
    return dataset


def _insert_rows(session: Session, dataset_id: str, frame) -> None:
    records = frame.assign(dataset_id=dataset_id).to_dict("records")
    for start in range(0, len(records), INSERT_BATCH):
        # executemany: SQLAlchemy batches these into multi-row INSERTs (insertmanyvalues)
        session.execute(insert(DatasetRow), records[start:start + INSERT_BATCH])


def get_dataset(session: Session, dataset_id: str, *, param: str = "dataset_id") -> Dataset:
    """The dataset with this id; raises ``NotFound`` otherwise."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset with id {dataset_id!r}", param=param)
    return dataset


def list_datasets(session: Session, *, limit: int, cursor: str | None) -> Page:
    """Datasets newest first, ``limit`` per page, continuing after ``cursor``."""
    return newest_first(session, Dataset, conditions=[], limit=limit, cursor=cursor)
