"""Prediction runs: ``POST /v1/jobs/{job_id}/predictions`` (a dataset as JSON, or an uploaded file as multipart),
``GET /v1/jobs/{job_id}/predictions``, and ``/v1/predictions/{id}``: the run, its rows (paged JSON, CSV and
JSONL streams) and cancel. See ``app.services.predictions`` for why a run is a ``jobs`` row."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from app.api.auth import PrincipalDep
from app.api.handlers import invalid_json, plain_message
from app.api.multipart import ScratchUploadRoute, stored_upload
from app.api.deps import CursorQuery, EnqueueDep, IdempotencyKeyHeader, LimitQuery, SessionDep, SettingsDep, StoreDep
from app.errors import BadRequest, InvalidInput, PayloadTooLarge, unsupported_media_type
from app.schemas import ErrorResponse
from app.schemas_predictions import (PredictionCreate, PredictionPublic, PredictionRowPublic, PredictionRowsPublic,
                                     PredictionsPublic)
from app.services import predictions as service
from app.services.datasets import Limits
from app.services.quotas import upload_too_large

router = APIRouter(tags=["predictions"], route_class=ScratchUploadRoute,
                   responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
FlaggedQuery = Annotated[bool | None, Query(description="Only rows the label check flagged (true) or not (false).")]
LabelQuery = Annotated[str | None, Query(max_length=200)]
MAX_FILE_PARTS = 8
FORM_FIELDS = {"format", "text_column", "text_pair_column", "label_column", "id_column", "batch_size", "label_check"}
_FORM_SCHEMA = {
    "type": "object", "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "CSV, JSONL or Parquet, UTF-8 (CSV/JSONL may be gzipped)."},
        "format": {"type": "string", "description": "csv, jsonl or parquet; default from the file name."},
        "text_column": {"type": "string", "maxLength": 200, "default": "text"},
        "text_pair_column": {"type": "string", "maxLength": 200},
        "label_column": {"type": "string", "maxLength": 200, "description": "Labels to check (optional); default: "
                         "the column 'label' if the file has one, else none."},
        "id_column": {"type": "string", "maxLength": 200},
        "batch_size": {"type": "integer", "minimum": 1, "maximum": 1024},
        "label_check": {"type": "boolean", "default": True, "description": "false: predict only, ignoring any "
                        "label column (no label check, labels the model lacks are no error)."},
    },
}
CREATE_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": PredictionCreate.model_json_schema()},
    "multipart/form-data": {"schema": _FORM_SCHEMA}}}}


def _json_body(raw: bytes) -> PredictionCreate:
    try:
        return PredictionCreate.model_validate_json(raw or b"null")
    except ValidationError as exc:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":  # as on the other JSON routes (app.api.handlers): a 400 that says why
            reason = (first.get("ctx") or {}).get("error") or first["msg"]
            if reason.startswith("number out of range"):
                raise BadRequest(f"the JSON body holds a number too large to read ({reason}): every number the "
                                 "service takes has a range; send one within it", param="body") from None
            raise invalid_json(reason, "{\"dataset_id\": ...} or a multipart upload with a file") from None
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        hint = "" if param else ": send {\"dataset_id\": ...} or a multipart upload with a file"  # the body's shape
        raise InvalidInput(f"{param + ': ' if param else ''}{plain_message(first)}{hint}", param=param or "body",
                           code="invalid_request",
                           details=[{"param": ".".join(str(p) for p in e.get("loc", ())) or None,
                                     "message": plain_message(e), "type": e.get("type")}
                                    for e in exc.errors()]) from None


def _form_text(form, name: str, default: str | None = None) -> str | None:
    values = form.getlist(name)  # at most one: a field given twice stopped the parse (app.api.multipart)
    value = values[0] if values else default
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"form field {name!r} must be text, not a file", param=name)
    if len(value) > 200:
        raise InvalidInput(f"form field {name!r} is longer than 200 characters", param=name)
    return value.strip() or None


def _flag(raw: str | None, name: str) -> bool:
    """A boolean form field: true (the default when absent) or false."""
    if raw is None or raw.strip().lower() in ("true", "1", "yes"):
        return True
    if raw.strip().lower() in ("false", "0", "no"):
        return False
    raise InvalidInput(f"{name}={raw!r} is not a boolean: give true or false", param=name)


def _batch_size(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 5):
        raise InvalidInput(f"batch_size={raw!r} must be an integer from 1 to 1024", param="batch_size")
    return int(raw)


async def _from_upload(request: Request, principal, session, settings, store, enqueue, job_id: str):
    # the form's file lives until the form is closed (ScratchFile): everything that reads it stays in the block.
    # The parser refuses, as a 422 naming the part, an unknown part as it arrives, a repeated one, a text field
    # named 'file' and a part past MAX_FILE_PARTS (app.api.multipart)
    request.state.form_fields = frozenset(FORM_FIELDS | {"file"})
    async with request.form(max_files=MAX_FILE_PARTS, max_fields=len(FORM_FIELDS) + 1) as form:
        files = form.getlist("file")  # at most one: a second part named 'file' stopped the parse (multipart.py)
        if len(files) != 1 or not isinstance(files[0], UploadFile):
            raise InvalidInput("send exactly one file in the form field 'file' (CSV, JSONL or Parquet), or a JSON "
                               "body {\"dataset_id\": ...}", param="file")
        upload_file = files[0]
        fields = {name: _form_text(form, name) for name in FORM_FIELDS}
        quotas = principal.quotas
        try:
            stored = stored_upload(upload_file, quotas.upload_bytes)
        except PayloadTooLarge:
            if quotas.upload_bytes < settings.max_upload_bytes:
                raise upload_too_large(quotas) from None
            raise
        try:
            check = _flag(fields["label_check"], "label_check")
            mapping = {"text": fields["text_column"] or "text", "text_pair": fields["text_pair_column"],
                       "label": fields["label_column"] if check else None, "id": fields["id_column"]}
            upload = service.PredictionUpload(file=stored, filename=upload_file.filename, format=fields["format"],
                                              mapping=mapping,
                                              label_explicit=fields["label_column"] is not None or not check)
            limits = Limits(min_rows_per_class=0, max_rows=settings.max_rows, max_errors=settings.max_errors_listed,
                            max_text_chars=settings.max_text_chars,
                            max_uncompressed_bytes=settings.max_uncompressed_bytes)
            size = _batch_size(fields["batch_size"])
            return await run_in_threadpool(lambda: service.create_from_upload(
                session, store, job_id, upload, limits, tenant_id=principal.tenant_id, settings=settings,
                enqueue=enqueue, quotas=quotas, batch_size=size))
        finally:
            stored.path.unlink(missing_ok=True)


@router.post("/v1/jobs/{job_id}/predictions", status_code=201, response_model=PredictionPublic,
             openapi_extra=CREATE_BODY,
             responses={409: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 429: {"model": ErrorResponse},
                        503: {"model": ErrorResponse}})
async def create_prediction(request: Request, principal: PrincipalDep, session: SessionDep, settings: SettingsDep,
                            store: StoreDep, enqueue: EnqueueDep, job_id: str,
                            idempotency_key: IdempotencyKeyHeader = None) -> PredictionPublic:
    """Predict with job ``job_id``'s adapter (the job must have succeeded, else 409): JSON
    ``{"dataset_id": ...}`` predicts one of the tenant's datasets and checks its labels; a multipart upload
    (``file``: CSV, JSONL or Parquet, validated as dataset uploads are; ``text_column``, optional
    ``label_column``, ...) predicts the file, checking labels where it has them. Labels outside the model's
    classes: 422. The run is queued on a worker (counted in the tenant's ``concurrent_jobs`` quota: 429);
    broker down: 503. Send an ``Idempotency-Key`` to retry safely."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        run = await _from_upload(request, principal, session, settings, store, enqueue, job_id)
    elif media in ("application/json", ""):
        try:
            raw = await request.body()
        except ClientDisconnect:  # the caller left mid-body: a 400 as FastAPI answers it on other routes, not a 500
            raise HTTPException(status_code=400, detail="the request body was cut off before its end") from None
        body = _json_body(raw)
        run = await run_in_threadpool(lambda: service.create_from_dataset(
            session, store, job_id, body.dataset_id, tenant_id=principal.tenant_id, settings=settings,
            enqueue=enqueue, quotas=principal.quotas, batch_size=body.batch_size, label_check=body.label_check))
    else:
        raise unsupported_media_type(media, "JSON {\"dataset_id\": ...} (application/json) or a multipart/form-data "
                                     "upload with the file in the part 'file'")
    return PredictionPublic.from_run(run)


@router.get("/v1/jobs/{job_id}/predictions", response_model=PredictionsPublic)
def list_predictions(principal: PrincipalDep, session: SessionDep, job_id: str, limit: LimitQuery = 50,
                     cursor: CursorQuery = None) -> PredictionsPublic:
    """The prediction runs of a job, newest first."""
    page = service.list_predictions(session, job_id, tenant_id=principal.tenant_id, limit=limit, cursor=cursor)
    return PredictionsPublic(data=[PredictionPublic.from_run(r) for r in page.items], count=page.count,
                             next_cursor=page.next_cursor)


@router.get("/v1/predictions/{prediction_id}", response_model=PredictionPublic)
def get_prediction(principal: PrincipalDep, session: SessionDep, prediction_id: str) -> PredictionPublic:
    """A prediction run: state, progress (0-1), its summary once succeeded, its error once failed."""
    return PredictionPublic.from_run(service.get_prediction(session, prediction_id, tenant_id=principal.tenant_id))


@router.post("/v1/predictions/{prediction_id}/cancel", response_model=PredictionPublic,
             responses={409: {"model": ErrorResponse}})
def cancel_prediction(principal: PrincipalDep, session: SessionDep, prediction_id: str,
                      idempotency_key: IdempotencyKeyHeader = None) -> PredictionPublic:
    """Cancel a run: a queued one stops at once, a running one between two batches."""
    return PredictionPublic.from_run(service.cancel_prediction(session, prediction_id,
                                                               tenant_id=principal.tenant_id))


@router.delete("/v1/predictions/{prediction_id}", status_code=204, response_class=Response,
               responses={409: {"model": ErrorResponse}})
def delete_prediction(principal: PrincipalDep, session: SessionDep, store: StoreDep, prediction_id: str) -> Response:
    """Delete a finished run with its rows and files (204; then 404); 409 while it is queued or running."""
    service.delete_prediction(session, store, prediction_id, tenant_id=principal.tenant_id)
    return Response(status_code=204)


def _filters(flagged: bool | None, predicted_label: str | None, given_label: str | None) -> dict[str, Any]:
    return {"flagged": flagged, "predicted_label": predicted_label, "given_label": given_label}


@router.get("/v1/predictions/{prediction_id}/rows", response_model=PredictionRowsPublic,
            responses={409: {"model": ErrorResponse}})
def prediction_rows(principal: PrincipalDep, session: SessionDep, prediction_id: str, limit: LimitQuery = 100,
                    cursor: CursorQuery = None, flagged: FlaggedQuery = None, predicted_label: LabelQuery = None,
                    given_label: LabelQuery = None) -> PredictionRowsPublic:
    """A page of the run's rows in ``row_index`` order (409 until it has succeeded), with its summary."""
    run = service.finished_run(session, prediction_id, tenant_id=principal.tenant_id)
    page = service.rows_page(session, run, limit=limit, cursor=cursor,
                             **_filters(flagged, predicted_label, given_label))
    return PredictionRowsPublic(data=[PredictionRowPublic(**r) for r in page.items], count=page.count,
                                next_cursor=page.next_cursor, summary=run.report_summary or {})


def _stream(request: Request, session, tenant_id: str, prediction_id: str, kind: str, filters: dict[str, Any]):
    run = service.finished_run(session, prediction_id, tenant_id=tenant_id)
    summary = run.report_summary or {}
    rows = service.iter_rows(request.app.state.session_factory, run, filters)
    body = service.csv_lines(summary, rows) if kind == "csv" else service.jsonl_lines(summary, rows)
    headers = {"Content-Disposition": f'attachment; filename="{prediction_id}.{kind}"',
               "X-Prediction-Summary": json.dumps(summary, separators=(",", ":"))}
    return StreamingResponse(body, media_type="text/csv" if kind == "csv" else "application/x-ndjson",
                             headers=headers)


@router.get("/v1/predictions/{prediction_id}/rows.csv", response_class=StreamingResponse,
            responses={409: {"model": ErrorResponse}})
def prediction_rows_csv(request: Request, principal: PrincipalDep, session: SessionDep, prediction_id: str,
                        flagged: FlaggedQuery = None, predicted_label: LabelQuery = None,
                        given_label: LabelQuery = None) -> StreamingResponse:
    """Every row as CSV, streamed in batches: one ``p_<class>`` column per class, the label-check columns only
    when the rows had labels; formula-like cells are neutralised. The summary is in ``X-Prediction-Summary``."""
    return _stream(request, session, principal.tenant_id, prediction_id, "csv",
                   _filters(flagged, predicted_label, given_label))


@router.get("/v1/predictions/{prediction_id}/rows.jsonl", response_class=StreamingResponse,
            responses={409: {"model": ErrorResponse}})
def prediction_rows_jsonl(request: Request, principal: PrincipalDep, session: SessionDep, prediction_id: str,
                          flagged: FlaggedQuery = None, predicted_label: LabelQuery = None,
                          given_label: LabelQuery = None) -> StreamingResponse:
    """Every row as JSON lines, streamed in batches: a ``{"summary": ...}`` line, then one line per row."""
    return _stream(request, session, principal.tenant_id, prediction_id, "jsonl",
                   _filters(flagged, predicted_label, given_label))
