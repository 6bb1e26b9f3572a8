"""The web dashboard at ``/ui``: server-rendered pages (Jinja2) over the same services as the REST
routes; charts are drawn in the browser by the vendored Chart.js from JSON embedded in the page.

``app.main`` includes this router behind ``ui_auth.ui_principal`` (a signed-out visitor is sent to the
login form), which leaves the caller in ``request.state.principal``: every page shows its tenant's
objects only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from app.api.deps import SessionDep
from app.errors import NotFound
from app.models import JOB_STATUSES, TERMINAL_STATUSES, Dataset
from app.schemas import JobPublic
from app.services import jobs as jobs_service
from app.services.live import epoch_metrics, progress_snapshot
from app.services.report_stats import report_stats
from app.services.reports import report_page

UI_DIR = Path(__file__).resolve().parents[2] / "ui"
STATIC_DIR = UI_DIR / "static"
UI_URL, STATIC_URL = "/ui", "/ui/static"
FLAGGED_SHOWN = 500
HEADLINE = (("eval_accuracy", "held-out accuracy"), ("eval_macro_f1", "held-out macro F1"),
            ("noise_precision", "report precision (gold)"), ("noise_recall", "report recall (gold)"),
            ("noise_auroc", "report AUROC (gold)"), ("train_gold_accuracy", "training accuracy (gold)"),
            ("wall_time_s", "training time (s)"))
DIGITS = {"wall_time_s": 0}

router = APIRouter(prefix=UI_URL, include_in_schema=False)
templates = Jinja2Templates(directory=str(UI_DIR / "templates"))


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell: floats rounded, missing values blank."""
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


templates.env.globals.update(fmt=fmt, ui_url=UI_URL, static_url=STATIC_URL)


def progress_text(snapshot: dict[str, Any]) -> str:
    """``42% · epoch 2/3 · step 40/96 · routed · loss 0.5123``."""
    parts = [f"{snapshot['progress'] * 100:.0f}%"]
    if snapshot["num_epochs"]:
        parts.append(f"epoch {min((snapshot['epoch'] or 0) + 1, snapshot['num_epochs'])}/{snapshot['num_epochs']}")
    if snapshot["max_steps"]:
        parts.append(f"step {snapshot['global_step']}/{snapshot['max_steps']}")
    parts += [snapshot["phase"]] if snapshot["phase"] else []
    parts += [f"loss {snapshot['loss']:.4f}"] if snapshot["loss"] is not None else []
    return " · ".join(parts)


def tenant_of(request: Request) -> str:
    """The tenant of the signed-in caller (set by the router's authentication dependency)."""
    return request.state.principal.tenant_id


@router.get("", response_class=HTMLResponse)
def jobs_page(request: Request, session: SessionDep,
              status: Annotated[str | None, Query()] = None, cursor: Annotated[str | None, Query()] = None):
    """The job list with states, progress and headline results, newest first."""
    tenant_id = tenant_of(request)
    page = jobs_service.list_jobs(session, tenant_id=tenant_id, status=status or None, limit=50, cursor=cursor)
    ids = {job.dataset_id for job in page.items}
    names = dict(session.execute(select(Dataset.id, Dataset.name).where(
        Dataset.id.in_(ids), Dataset.tenant_id == tenant_id)).all()) if ids else {}
    jobs = [JobPublic.from_job(job) for job in page.items]
    return templates.TemplateResponse(request, "jobs.html", {
        "jobs": jobs, "datasets": names, "status": status, "statuses": JOB_STATUSES,
        "next_cursor": page.next_cursor, "active": any(j.status not in TERMINAL_STATUSES for j in jobs)})


def _duration(job: JobPublic) -> str | None:
    if not (job.started_at and job.finished_at):
        return None
    seconds = int((job.finished_at - job.started_at).total_seconds())
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, session: SessionDep, job_id: str):
    """One job: progress (live while it runs), per-epoch plots, the report's plots, the flagged rows."""
    tenant_id = tenant_of(request)
    try:
        row = jobs_service.get_job(session, job_id, tenant_id=tenant_id)
    except NotFound as exc:
        return templates.TemplateResponse(request, "missing.html", {"message": exc.message}, status_code=404)
    job, snapshot = JobPublic.from_job(row), progress_snapshot(row)
    has_report = job.status == "succeeded" and job.report_summary is not None
    stats = report_stats(session, row) if has_report else None
    flagged = report_page(session, row, filters={"flagged": True}, limit=FLAGGED_SHOWN,
                          cursor=None).items if has_report else []
    dataset = session.scalar(select(Dataset).where(Dataset.id == job.dataset_id,
                                                   Dataset.tenant_id == tenant_id))
    metrics = job.metrics or {}
    data = {"job_id": job.id, "final": job.status in TERMINAL_STATUSES,
            "epochs": epoch_metrics(session, job.id, tenant_id=tenant_id),
            "stats": stats, "stream_url": f"/v1/jobs/{job.id}/events/stream"}
    return templates.TemplateResponse(request, "job.html", {
        "job": job, "api": f"/v1/jobs/{job.id}", "stats": stats, "flagged_rows": flagged, "data": data,
        "dataset_name": dataset.name if dataset else job.dataset_id, "progress_text": progress_text(snapshot),
        "duration": _duration(job),
        "headline": [(label, fmt(metrics[key], DIGITS.get(key, 3))) for key, label in HEADLINE
                     if metrics.get(key) is not None]})
