"""``/v1/datasets``: upload (multipart file + column mapping), list, get."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from app.api.auth import PrincipalDep
from app.api.multipart import ScratchUploadRoute, stored_upload
from app.api.deps import CursorQuery, IdempotencyKeyHeader, LimitQuery, SessionDep, SettingsDep
from app.errors import PayloadTooLarge
from app.schemas import DatasetPublic, DatasetsPublic, ErrorResponse
from app.services import datasets as service
from app.services.quotas import upload_too_large

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=ScratchUploadRoute,
                   responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
Column = Annotated[str | None, Form(max_length=200)]


@router.post("", status_code=201, response_model=DatasetPublic,
             responses={409: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 429: {"model": ErrorResponse}})
async def upload_dataset(
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="CSV, JSONL or Parquet, UTF-8 (CSV/JSONL may be gzipped).")],
    idempotency_key: IdempotencyKeyHeader = None,
    name: Annotated[str | None, Form(max_length=1000)] = None,
    format: Annotated[str | None, Form(description="csv, jsonl or parquet; default from the file name.")] = None,
    text_column: Annotated[str, Form(max_length=200)] = "text",
    text_pair_column: Column = None,
    label_column: Annotated[str, Form(max_length=200)] = "label",
    id_column: Column = None,
    gold_label_column: Annotated[str | None, Form(max_length=200,
                                                  description="Ground truth; scores reports only.")] = None,
    labels: Annotated[str | None, Form(max_length=100_000,
                                       description="Declared labels: JSON list or comma-separated.")] = None,
) -> DatasetPublic:
    """Upload a labelled dataset; every row is validated before it is stored (all rows or none).

    The file is written to a temporary file under the scratch folder while the body arrives (413 past the
    size limit; ``app.api.multipart``), removed whatever the outcome, and parsed in chunks, so it is never
    held in memory whole; its name is only a label, never a path. On Postgres the rows are stored with COPY
    in the upload's transaction. Over the tenant's upload or stored-rows quota: 429 naming the quota.
    """
    quotas = principal.quotas  # (a second part named 'file' was refused while the form was parsed: multipart.py)
    try:
        stored = stored_upload(file, quotas.upload_bytes)
    except PayloadTooLarge:
        if quotas.upload_bytes < settings.max_upload_bytes:
            raise upload_too_large(quotas) from None
        raise
    try:
        mapping = {"text": text_column, "text_pair": text_pair_column, "label": label_column,
                   "id": id_column, "gold_label": gold_label_column}
        upload = service.Upload(file=stored, filename=file.filename, name=name, format=format, mapping=mapping,
                                labels=labels)
        limits = service.Limits(min_rows_per_class=settings.min_rows_per_class, max_rows=settings.max_rows,
                                max_errors=settings.max_errors_listed, max_text_chars=settings.max_text_chars,
                                max_uncompressed_bytes=settings.max_uncompressed_bytes)
        dataset = await run_in_threadpool(lambda: service.create_dataset(
            session, upload, limits, tenant_id=principal.tenant_id, quotas=quotas))
    finally:
        stored.path.unlink(missing_ok=True)
    return DatasetPublic.model_validate(dataset)


@router.get("", response_model=DatasetsPublic)
def list_datasets(principal: PrincipalDep, session: SessionDep, limit: LimitQuery = 50,
                  cursor: CursorQuery = None) -> DatasetsPublic:
    """The caller's tenant's datasets, newest first."""
    page = service.list_datasets(session, tenant_id=principal.tenant_id, limit=limit, cursor=cursor)
    return DatasetsPublic(data=[DatasetPublic.model_validate(d) for d in page.items], count=page.count,
                          next_cursor=page.next_cursor)


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(principal: PrincipalDep, session: SessionDep, dataset_id: str) -> DatasetPublic:
    """One dataset: status, row count, class histogram, sha256 (404 for another tenant's id)."""
    return DatasetPublic.model_validate(service.get_dataset(session, dataset_id, tenant_id=principal.tenant_id))
