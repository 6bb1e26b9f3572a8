"""``DELETE /v1/datasets/{dataset_id}`` and ``DELETE /v1/jobs/{job_id}``: remove an object with everything that
belongs to it (``app.services.deletion``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.auth import PrincipalDep
from app.api.deps import SessionDep, StoreDep
from app.schemas import ErrorResponse
from app.services import deletion as service

router = APIRouter(tags=["deletion"], responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})


@router.delete("/v1/datasets/{dataset_id}", status_code=204, response_class=Response)
def delete_dataset(principal: PrincipalDep, session: SessionDep, store: StoreDep, dataset_id: str,
                   cascade: Annotated[bool, Query(description="Also delete the versions of this dataset and the "
                                                  "jobs using it (or its versions), recursively.")] = False
                   ) -> Response:
    """Delete a dataset and its rows (204; then 404). 409 while a job using it is queued, running or cancelling,
    and, without ``cascade=true``, while versions or jobs depend on it (the answer names them)."""
    service.delete_dataset(session, store, dataset_id, tenant_id=principal.tenant_id, cascade=cascade)
    return Response(status_code=204)


@router.delete("/v1/jobs/{job_id}", status_code=204, response_class=Response)
def delete_job(principal: PrincipalDep, session: SessionDep, store: StoreDep, job_id: str) -> Response:
    """Delete a finished job with its events, noise report, review decisions and artifacts (adapter,
    checkpoints) (204; then 404). 409 while it is queued, running or cancelling. Versions made from it and jobs
    retrained from it stay (their ``from_job_id`` becomes null)."""
    service.delete_job(session, store, job_id, tenant_id=principal.tenant_id)
    return Response(status_code=204)
