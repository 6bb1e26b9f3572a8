"""``GET /v1/jobs/{id}/noise-report/stats``: what the dashboard plots about a finished job's report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.auth import PrincipalDep
from app.api.deps import SessionDep
from app.schemas import ErrorResponse
from app.schemas_live import ReportStatsPublic
from app.services.report_stats import report_stats
from app.services.reports import report_job

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["results"],
                   responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse},
                              422: {"model": ErrorResponse}})


@router.get("/noise-report/stats", response_model=ReportStatsPublic)
def noise_report_stats(principal: PrincipalDep, session: SessionDep, job_id: str,
                       bins: Annotated[int, Query(ge=2, le=100, description="Histogram bins over [0, 1].")] = 20
                       ) -> ReportStatsPublic:
    """The p_clean histogram (flagged rows apart), estimated noise per given class, and the
    given-vs-predicted confusion matrix."""
    return ReportStatsPublic(**report_stats(session, report_job(session, job_id, tenant_id=principal.tenant_id),
                                          bins=bins))
