"""``/v1/datasets/{dataset_id}``: versions made from a job's review decisions, and the rows of any dataset as
CSV, JSON lines or Parquet (streamed)."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from app.api.auth import PrincipalDep
from app.api.deps import IdempotencyKeyHeader, SessionDep, SettingsDep
from app.schemas import DatasetPublic, ErrorResponse
from app.schemas_review import VersionCreate
from app.services import exports, versions
from app.services.datasets import get_dataset

router = APIRouter(prefix="/v1/datasets/{dataset_id}", tags=["datasets"],
                   responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})


@router.post("/versions", status_code=201, response_model=DatasetPublic,
             responses={409: {"model": ErrorResponse}, 429: {"model": ErrorResponse}})
async def create_version(principal: PrincipalDep, session: SessionDep, settings: SettingsDep, dataset_id: str,
                         body: VersionCreate, idempotency_key: IdempotencyKeyHeader = None) -> DatasetPublic:
    """A new dataset from this one and ``from_job``'s review decisions: decided rows take the decision's label,
    rows decided ``drop`` are left out, the rest keep theirs (ids, texts and gold labels carried over, rows
    renumbered 0..n-1). Checked like an upload (422 ``invalid_rows`` naming the classes left too small; nothing
    is stored), counted against the stored-rows quota (429). ``from_job`` must be a succeeded job of yours
    trained on this dataset (422 otherwise; 409 while it has no report). ``Idempotency-Key`` makes it safe to
    retry."""
    version = await run_in_threadpool(lambda: versions.create_version(
        session, dataset_id, body.from_job, tenant_id=principal.tenant_id, name=body.name,
        min_rows_per_class=settings.min_rows_per_class, max_rows=settings.max_rows, quotas=principal.quotas))
    return DatasetPublic.model_validate(version)


def _headers(dataset_id: str, kind: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{dataset_id}-rows.{kind}"'}


@router.get("/rows.csv", response_class=StreamingResponse)
def rows_csv(request: Request, principal: PrincipalDep, session: SessionDep, dataset_id: str,
             formula_safe: Annotated[bool, Query(description="Prefix cells a spreadsheet would run as a formula "
                                                 "(= + - @, tab, CR) with ' for opening in a spreadsheet; the "
                                                 "file then no longer holds the exact values.")] = False
             ) -> StreamingResponse:
    """Every row in ``row_index`` order as CSV (``id,text,text_pair,label,gold_label``), streamed, holding the
    values exactly, so it uploads again as the same rows (with ``id_column=id`` where the dataset has ids,
    ``gold_label_column=gold_label`` and ``text_pair_column=text_pair`` where it has them). Data, not a report:
    open it in a spreadsheet only with ``formula_safe=true``, which neutralises formula-like cells."""
    dataset = get_dataset(session, dataset_id, tenant_id=principal.tenant_id)
    rows = exports.iter_rows(request.app.state.session_factory, dataset.id)
    return StreamingResponse(exports.csv_lines(rows, formula_safe=formula_safe), media_type="text/csv",
                             headers=_headers(dataset.id, "csv"))


@router.get("/rows.jsonl", response_class=StreamingResponse)
def rows_jsonl(request: Request, principal: PrincipalDep, session: SessionDep, dataset_id: str
               ) -> StreamingResponse:
    """Every row in ``row_index`` order as JSON lines ``{"id", "text", "text_pair", "label", "gold_label"}``,
    streamed; for a version, the sha256 of this body is the dataset's ``sha256``."""
    dataset = get_dataset(session, dataset_id, tenant_id=principal.tenant_id)
    rows = exports.iter_rows(request.app.state.session_factory, dataset.id)
    return StreamingResponse(exports.jsonl_lines(rows), media_type="application/x-ndjson",
                             headers=_headers(dataset.id, "jsonl"))


@router.get("/rows.parquet", response_class=FileResponse)
def rows_parquet(request: Request, principal: PrincipalDep, session: SessionDep, dataset_id: str) -> FileResponse:
    """Every row in ``row_index`` order as Parquet (string columns ``id, text, text_pair, label, gold_label``,
    one row group per 5,000 rows), written to a temporary file that is streamed and then removed."""
    dataset = get_dataset(session, dataset_id, tenant_id=principal.tenant_id)
    path = exports.write_parquet(request.app.state.session_factory, dataset.id)
    return FileResponse(path, media_type="application/vnd.apache.parquet", filename=f"{dataset.id}-rows.parquet",
                        background=BackgroundTask(os.unlink, path))
