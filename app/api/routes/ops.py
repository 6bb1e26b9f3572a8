"""Operations routes: ``/healthz`` (the process answers: it touches nothing, no database, no broker, no
thread), ``/readyz`` (database and broker reachable), both open to anyone, and ``/metrics`` (Prometheus
text format; a key with the ``admin`` scope)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.auth import authenticate_admin
from app.api.handlers import envelope
from app.ops.health import readiness
from app.schemas import ErrorResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. Touches nothing (no database, no broker, not even the thread pool), so it
    stays 200 through a database or broker outage and under load; ``/readyz`` says whether those can be reached."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorResponse}})
def readyz(request: Request):
    """Readiness: 200 if the database (migrated to this code's schema) and the broker can be reached, else 503
    naming what cannot, and why (a database without the schema: run the migrations). Its database
    check takes a pooled connection directly (the overflow when every request session is busy), not a slot of the
    requests' session gate, so a busy API still reports ready."""
    checks = readiness(request.app.state.session_factory, request.app.state.settings.broker_url)
    failing = sorted(name for name, result in checks.items() if result != "ok")
    if failing:
        said = "; ".join(f"the {name}: {checks[name]}" for name in failing)
        return envelope(503, "not_ready", f"not ready: {said}", None,
                        details=[{"check": name, "error": checks[name]} for name in failing])
    return {"status": "ready", "checks": checks}


@router.get("/metrics", response_class=Response, dependencies=[Depends(authenticate_admin)],
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."},
                       401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}})
def metrics(request: Request) -> Response:
    """Jobs by state, queue depth, job durations and API latency, in Prometheus' text format. They count
    every tenant's jobs, so they need a key with the ``admin`` scope."""
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
