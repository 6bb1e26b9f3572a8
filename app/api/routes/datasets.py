"""``/v1/datasets``: upload (multipart file + column mapping), list, get."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from app.api.deps import CursorQuery, LimitQuery, SessionDep, SettingsDep
from app.errors import PayloadTooLarge
from app.schemas import DatasetPublic, DatasetsPublic, ErrorResponse
from app.services import datasets as service

router = APIRouter(prefix="/v1/datasets", tags=["datasets"],
                   responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
CHUNK = 1 << 20


async def read_capped(upload: UploadFile, limit: int) -> bytes:
    """The whole upload, refusing (413) as soon as it grows past ``limit`` bytes."""
    parts, size = [], 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the file is larger than the limit of {limit} bytes: split it or sample it",
                                  param="file")
        parts.append(chunk)
    return b"".join(parts)


@router.post("", status_code=201, response_model=DatasetPublic, responses={413: {"model": ErrorResponse}})
async def upload_dataset(
    session: SessionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="CSV, JSONL or Parquet, UTF-8.")],
    name: Annotated[str | None, Form()] = None,
    format: Annotated[str | None, Form(description="csv, jsonl or parquet; default from the file name.")] = None,
    text_column: Annotated[str, Form()] = "text",
    text_pair_column: Annotated[str | None, Form()] = None,
    label_column: Annotated[str, Form()] = "label",
    id_column: Annotated[str | None, Form()] = None,
    gold_label_column: Annotated[str | None, Form(description="Ground truth; scores reports only.")] = None,
    labels: Annotated[str | None, Form(description="Declared labels: JSON list or comma-separated.")] = None,
) -> DatasetPublic:
    """Upload a labelled dataset; every row is validated before it is stored (all rows or none)."""
    content = await read_capped(file, settings.max_upload_bytes)
    mapping = {"text": text_column, "text_pair": text_pair_column or None, "label": label_column,
               "id": id_column or None, "gold_label": gold_label_column or None}
    upload = service.Upload(content=content, filename=file.filename, name=name, format=format,
                            mapping=mapping, labels=labels)
    dataset = service.create_dataset(session, upload, min_rows_per_class=settings.min_rows_per_class,
                                     max_rows=settings.max_rows, max_errors=settings.max_errors_listed)
    return DatasetPublic.model_validate(dataset)


@router.get("", response_model=DatasetsPublic)
def list_datasets(session: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None) -> DatasetsPublic:
    """Datasets, newest first."""
    page = service.list_datasets(session, limit=limit, cursor=cursor)
    return DatasetsPublic(data=[DatasetPublic.model_validate(d) for d in page.items], count=page.count,
                          next_cursor=page.next_cursor)


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(session: SessionDep, dataset_id: str) -> DatasetPublic:
    """One dataset: status, row count, class histogram, sha256."""
    return DatasetPublic.model_validate(service.get_dataset(session, dataset_id))
