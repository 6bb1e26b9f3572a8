"""A job's results: the noise report (paged JSON, CSV and JSONL streams) and the adapter archive."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from app.api.auth import PrincipalDep
from app.api.deps import CursorQuery, LimitQuery, SessionDep, StoreDep
from app.errors import Conflict, until_succeeded
from app.schemas import ErrorResponse, NoiseReportPublic, NoiseRowPublic
from app.services import reports as service
from app.services.jobs import get_job

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["results"],
                   responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})
FlaggedQuery = Annotated[bool | None, Query(description="Only flagged (true) or unflagged (false) rows.")]
LabelQuery = Annotated[str | None, Query()]
SplitQuery = Annotated[Literal["train", "validation"] | None,
                       Query(description="Only training rows or only held-out (validation) rows.")]
DecidedQuery = Annotated[bool | None, Query(description="Only rows with a review decision (true) or without (false).")]
TextQuery = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$",
                                        description="Only rows whose text or text pair contains this, ignoring case.")]


def _filters(flagged: bool | None, given_label: str | None, predicted_label: str | None,
             split: str | None = None, decided: bool | None = None, suggested_label: str | None = None,
             q: str | None = None) -> dict[str, Any]:
    return {"flagged": flagged, "given_label": given_label, "predicted_label": predicted_label, "split": split,
            "decided": decided, "suggested_label": suggested_label, "q": q}


@router.get("/noise-report", response_model=NoiseReportPublic)
def noise_report(principal: PrincipalDep, session: SessionDep, job_id: str, limit: LimitQuery = 100,
                 cursor: CursorQuery = None,
                 flagged: FlaggedQuery = None, given_label: LabelQuery = None,
                 predicted_label: LabelQuery = None, split: SplitQuery = None,
                 decided: DecidedQuery = None, suggested_label: LabelQuery = None,
                 q: TextQuery = None) -> NoiseReportPublic:
    """The noise report in ``rank`` order (flagged rows first, then ascending ``label_quality``), with its summary
    (counts, estimated noise matrix and rates, reliability verdict); each row has its review ``decision`` and
    ``decision_label`` (null when undecided). Filters combine: ``flagged``, ``given_label``, ``predicted_label``,
    ``suggested_label``, ``split``, ``decided`` and ``q`` (a case-insensitive substring of the text)."""
    job = service.report_job(session, job_id, tenant_id=principal.tenant_id)
    filters = _filters(flagged, given_label, predicted_label, split, decided, suggested_label, q)
    page = service.report_page(session, job, filters=filters, limit=limit, cursor=cursor)
    return NoiseReportPublic(data=[NoiseRowPublic(**r) for r in page.items], count=page.count,
                             next_cursor=page.next_cursor, summary=job.report_summary or {})


def _stream(request: Request, session: SessionDep, tenant_id: str, job_id: str, kind: str,
            filters: dict[str, Any]):
    job = service.report_job(session, job_id, tenant_id=tenant_id)
    summary = job.report_summary or {}
    rows = service.iter_report(request.app.state.session_factory, job, filters)
    body = service.csv_lines(rows) if kind == "csv" else service.jsonl_lines(summary, rows)
    media = "text/csv" if kind == "csv" else "application/x-ndjson"
    headers = {"Content-Disposition": f'attachment; filename="{job_id}-noise-report.{kind}"',
               "X-Noise-Report-Summary": json.dumps(summary, separators=(",", ":"))}
    return StreamingResponse(body, media_type=media, headers=headers)


@router.get("/noise-report.csv", response_class=StreamingResponse)
def noise_report_csv(request: Request, principal: PrincipalDep, session: SessionDep, job_id: str,
                     flagged: FlaggedQuery = None,
                     given_label: LabelQuery = None, predicted_label: LabelQuery = None,
                     split: SplitQuery = None, decided: DecidedQuery = None, suggested_label: LabelQuery = None,
                     q: TextQuery = None) -> StreamingResponse:
    """The whole report as CSV, streamed; the summary is in the ``X-Noise-Report-Summary`` header."""
    filters = _filters(flagged, given_label, predicted_label, split, decided, suggested_label, q)
    return _stream(request, session, principal.tenant_id, job_id, "csv", filters)


@router.get("/noise-report.jsonl", response_class=StreamingResponse)
def noise_report_jsonl(request: Request, principal: PrincipalDep, session: SessionDep, job_id: str,
                       flagged: FlaggedQuery = None,
                       given_label: LabelQuery = None, predicted_label: LabelQuery = None,
                       split: SplitQuery = None, decided: DecidedQuery = None, suggested_label: LabelQuery = None,
                       q: TextQuery = None) -> StreamingResponse:
    """The whole report as JSON lines, streamed: a ``{"summary": ..., "columns": [...]}`` line, then one line per
    row."""
    filters = _filters(flagged, given_label, predicted_label, split, decided, suggested_label, q)
    return _stream(request, session, principal.tenant_id, job_id, "jsonl", filters)


@router.get("/adapter", response_class=StreamingResponse)
def adapter(principal: PrincipalDep, session: SessionDep, store: StoreDep, job_id: str) -> StreamingResponse:
    """The trained adapter as a .tar.gz (peft files, label map, CleaR config, tokenizer)."""
    job = get_job(session, job_id, tenant_id=principal.tenant_id)
    if job.status != "succeeded" or not job.adapter_uri:
        raise Conflict(f"job {job_id!r} is {job.status}: its adapter exists once it has succeeded; "
                       f"{until_succeeded(job.status)}", param="job_id", code="adapter_not_ready")
    key = job.adapter_uri

    def chunks():
        with store.open(key) as fh:
            while chunk := fh.read(1 << 20):
                yield chunk

    headers = {"Content-Disposition": f'attachment; filename="{job_id}-adapter.tar.gz"',
               "Content-Length": str(store.size(key))}
    return StreamingResponse(chunks(), media_type="application/gzip", headers=headers)
