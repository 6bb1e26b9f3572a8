"""Datasets: parse an upload in chunks, validate each row, and store the dataset and its rows in one
transaction (or nothing at all).

On Postgres the rows stream into ``dataset_rows`` through one ``COPY ... FROM STDIN`` (text format, built
in columns with Arrow) on the upload's own connection and transaction, chunk by chunk while the file is
parsed, so the server stores a chunk while the next one is validated; SQLite gets batched INSERTs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import delete, insert, select, text
from sqlalchemy.orm import Session

from app.errors import InvalidInput, NotFound, shown, too_many_digits
from app.models import Dataset, DatasetRow
from app.services.pagination import Page, newest_first
from app.services.quotas import Quotas, check_stored_rows, lock_tenant
from app.services.parsing import (FastPathUnusable, check_unique_names, detect_format, iter_chunks, iter_tables,
                                  parquet_schema)
from app.services.uploads import StoredUpload, check_gzip_name, safe_name
from app.services.validation import LABEL_MAX, RowValidator, check_mapping, check_parquet_types

INSERT_BATCH = 5000
COPY_COLUMNS = ("dataset_id", "row_index", "row_id", "text", "text_pair", "label", "gold_label")
COPY_SQL = f"COPY dataset_rows ({', '.join(COPY_COLUMNS)}) FROM STDIN"
_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))  # backslash first
# Postgres (migration 0009): lock the dataset and check it exists once, so its rows' own checks are skipped
TRUST_SQL = text("SELECT dataset_rows_trust(:dataset_id)")


def trust_dataset_rows(session: Session, dataset_id: str) -> None:
    """Before storing rows of ``dataset_id`` in this transaction on Postgres: check the dataset exists and lock
    it (``FOR KEY SHARE``) once, so the per-row check of migration 0009 is skipped for its rows (without this
    call each row is checked on its own: the same outcome, one function call per row). Nothing on SQLite.

    Raises:
        sqlalchemy.exc.IntegrityError: no such dataset (``foreign_key_violation``).
    """
    if _is_postgres(session):
        session.execute(TRUST_SQL, {"dataset_id": dataset_id})


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
    except ValueError as exc:  # an integer past the int-string limit: a 500 before
        said = too_many_digits(exc)
        if said is None:
            raise
        raise InvalidInput(f"labels {said}", param="labels") from None
    if not isinstance(value, list):
        raise InvalidInput("labels must be a JSON list or comma-separated names", param="labels")
    labels = [str(v).strip() for v in value if str(v).strip()]
    if len(set(labels)) != len(labels) or len(labels) < 2 or any(len(v) > LABEL_MAX or "\x00" in v for v in labels):
        raise InvalidInput(f"labels={shown(labels)}: declare at least 2 distinct labels of at most {LABEL_MAX} "
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

    def new_validator() -> RowValidator:
        return RowValidator(mapping, declared, limits.min_rows_per_class, limits.max_rows, limits.max_text_chars,
                            limits.max_errors, fixed_columns=fmt != "jsonl")

    dataset = Dataset(tenant_id=tenant_id, name=safe_name(upload.name, upload.filename), status="processing",
                      format=fmt,
                      sha256=upload.file.sha256, size_bytes=upload.file.size, row_count=0, label_names=[],
                      class_histogram={}, columns={k: v for k, v in mapping.items() if v})
    path, cap = upload.file.path, limits.max_uncompressed_bytes
    try:
        session.add(dataset)
        session.flush()
        try:
            validator = _store_fast(session, dataset.id, new_validator(),
                                    iter_tables(path, fmt, max_uncompressed=cap, columns=columns))
        except FastPathUnusable:  # a CSV Arrow cannot read as pandas does: pandas' parse is the reference
            validator = _store(session, dataset.id, new_validator(),
                               iter_chunks(path, fmt, max_uncompressed=cap, columns=columns))
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


def _store_fast(session: Session, dataset_id: str, validator: RowValidator, chunks: Iterable) -> RowValidator:
    """``_store`` over the fast path's chunks; on ``FastPathUnusable`` the rows it stored are removed
    again (a savepoint on Postgres, whose COPY the failure aborted; a DELETE on SQLite) before it re-raises."""
    if _is_postgres(session):
        with session.begin_nested():
            return _store(session, dataset_id, validator, chunks)
    try:
        return _store(session, dataset_id, validator, chunks)
    except FastPathUnusable:
        session.execute(delete(DatasetRow).where(DatasetRow.dataset_id == dataset_id))
        raise


def _store(session: Session, dataset_id: str, validator: RowValidator, chunks: Iterable) -> RowValidator:
    """Validate every chunk and store the rows of the valid ones (none are stored after the first error:
    the upload fails and its transaction is rolled back); returns the validator, ready to ``finish``."""
    with _row_writer(session, dataset_id) as write:
        for chunk in chunks:
            rows = validator.add(chunk)
            if rows is not None and rows.num_rows:
                write(rows)
    return validator


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


@contextmanager
def _row_writer(session: Session, dataset_id: str) -> Iterator[Callable[[pa.Table], None]]:
    """A function that stores a validated chunk (``RowValidator.add``'s table) as rows of ``dataset_id``:
    into one COPY on Postgres, opened at the first chunk and ended (or failed) when the block exits."""
    if not _is_postgres(session):
        yield lambda rows: _insert_rows(session, dataset_id, rows)
        return
    connection = session.connection().connection.driver_connection  # the upload's psycopg connection
    utf8 = connection.info.encoding == "utf-8"
    with connection.cursor() as cursor, ExitStack() as stack:
        copies = []

        def write(rows: pa.Table) -> None:
            if not copies:  # exiting the stack ends the COPY, or fails it (CopyFail) when the block raised
                trust_dataset_rows(session, dataset_id)  # the same connection and transaction as the COPY
                copies.append(stack.enter_context(cursor.copy(COPY_SQL)))
            data = copy_text(dataset_id, rows)
            copies[0].write(data if utf8 else bytes(data).decode("utf-8"))

        yield write


def copy_text(dataset_id: str, rows: pa.Table) -> memoryview:
    """``rows`` as the body of a text-format ``COPY dataset_rows (COPY_COLUMNS)``: one line per row, columns
    tab-separated, backslash, tab, newline and carriage return escaped, null as ``\\N``; built in columns."""
    fields = [pa.scalar(dataset_id), pc.cast(rows.column("row_index"), pa.string())]
    fields += [_copy_field(rows.column(name)) for name in COPY_COLUMNS[2:]]
    if isinstance(fields[-1], pa.Scalar):  # gold_label all null, as usual: the line end joins it, one pass less
        lines = pc.binary_join_element_wise(*fields[:-1], pa.scalar(fields[-1].as_py() + "\n"), "\t")
    else:
        lines = pc.binary_join_element_wise(pc.binary_join_element_wise(*fields, "\t"), "\n", "")
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    start, end = _byte_span(lines)
    return memoryview(lines.buffers()[2])[start:end]


def _copy_field(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.null_count == len(values):
        return pa.scalar("\\N")
    raw = _raw_bytes(values)
    for char, escaped in _COPY_ESCAPES:
        if char.encode() in raw:  # a byte search first: almost no text holds a tab, newline or backslash
            values = pc.replace_substring(values, char, escaped)
    return pc.fill_null(values, "\\N") if values.null_count else values


def _raw_bytes(values: pa.Array) -> bytes:
    """The bytes of a string array's cells, concatenated (what a byte search needs; no per-cell work)."""
    data = values.buffers()[2]
    if len(values) == 0 or data is None:
        return b""
    start, end = _byte_span(values)
    return bytes(memoryview(data)[start:end])


def _byte_span(values: pa.Array) -> tuple[int, int]:
    """Where a (possibly sliced) string array's cells lie in its data buffer: ``(start, end)`` in bytes."""
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)
    return int(offsets[values.offset]), int(offsets[values.offset + len(values)])


def _insert_rows(session: Session, dataset_id: str, rows: pa.Table) -> None:
    records = rows.append_column("dataset_id", pa.array([dataset_id] * rows.num_rows, pa.string())).to_pylist()
    for start in range(0, len(records), INSERT_BATCH):
        # executemany: SQLAlchemy batches these into multi-row INSERTs (insertmanyvalues)
        session.execute(insert(DatasetRow), records[start:start + INSERT_BATCH])


def get_dataset(session: Session, dataset_id: str, *, tenant_id: str, param: str = "dataset_id") -> Dataset:
    """The tenant's dataset with this id; raises ``NotFound`` otherwise (another tenant's id included)."""
    dataset = session.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id))
    if dataset is None:
        raise NotFound(f"no dataset with id {shown(dataset_id)}", param=param)
    return dataset


def list_datasets(session: Session, *, tenant_id: str, limit: int, cursor: str | None) -> Page:
    """The tenant's datasets newest first, ``limit`` per page, continuing after ``cursor``."""
    return newest_first(session, Dataset, conditions=[Dataset.tenant_id == tenant_id], limit=limit, cursor=cursor)
