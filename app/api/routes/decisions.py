"""``/v1/jobs/{job_id}/noise-report/decisions``: record review decisions on a finished job's noise report
(a list of rows, or a bulk rule) and list them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.api.auth import PrincipalDep
from app.api.deps import CursorQuery, IdempotencyKeyHeader, LimitQuery, SessionDep
from app.schemas import ErrorResponse
from app.schemas_review import DecisionPublic, DecisionsCreate, DecisionsPublic, DecisionsRecorded
from app.services import decisions as service
from app.services.reports import report_job

router = APIRouter(prefix="/v1/jobs/{job_id}/noise-report/decisions", tags=["review"],
                   responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse},
                              422: {"model": ErrorResponse}})


@router.post("", response_model=DecisionsRecorded)
def record_decisions(principal: PrincipalDep, session: SessionDep, job_id: str, body: DecisionsCreate,
                     idempotency_key: IdempotencyKeyHeader = None) -> DecisionsRecorded:
    """Decide rows of the report: ``{"decisions": [{"row_index", "action", "label"?}]}`` (``label`` only, and
    required, for ``relabel``: one of the dataset's classes), or ``{"rule": {...}, "action": "accept" | "keep" |
    "drop"}`` for every row matching the rule. The latest decision per row wins. All or nothing: an unknown
    row_index (422 naming it) stores none of the request. 409 until the job has succeeded with a report."""
    job = report_job(session, job_id, tenant_id=principal.tenant_id)
    if body.decisions is not None:
        counts = service.record_decisions(session, job, [d.model_dump() for d in body.decisions],
                                          key_id=principal.key_id)
    else:
        counts = service.apply_rule(session, job, body.rule.model_dump(), body.action, key_id=principal.key_id)
    return DecisionsRecorded(**counts)


@router.get("", response_model=DecisionsPublic)
def list_decisions(principal: PrincipalDep, session: SessionDep, job_id: str, limit: LimitQuery = 100,
                   cursor: CursorQuery = None,
                   action: Annotated[Literal["accept", "keep", "relabel", "drop"] | None,
                                     Query(description="Only decisions with this action.")] = None
                   ) -> DecisionsPublic:
    """The report's decisions in ``row_index`` order, with the label each gives its row, the API key that made
    it and when."""
    job = report_job(session, job_id, tenant_id=principal.tenant_id)
    page = service.list_decisions(session, job, action=action, limit=limit, cursor=cursor)
    return DecisionsPublic(data=[DecisionPublic.model_validate(d) for d in page.items], count=page.count,
                           next_cursor=page.next_cursor)
