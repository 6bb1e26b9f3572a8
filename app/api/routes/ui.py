"""The web dashboard at ``/ui``: server-rendered pages (Jinja2) over the same services as the REST
routes; charts are drawn in the browser by the vendored Chart.js (the noise matrix as plain SVG) from JSON
embedded in the page. A job's page shows its learning warnings, the noise report's reliability verdict,
per-epoch metrics (the ``last_pass_*`` ones named as the clean-probability pass they come from), the
label_quality histogram with each class's threshold, the estimated noise matrix, and the flagged rows with
why each was flagged.

The report table is also the review screen: its script pages, filters and searches the rows through
``GET /v1/jobs/{id}/noise-report``, records decisions on the rows ticked (accept the suggestion, keep the
given label, relabel, drop) with ``POST .../noise-report/decisions``, publishes a version of the dataset
(``POST /v1/datasets/{id}/versions``) and retrains on it (``POST /v1/jobs`` with ``from_job``). Those POSTs
ride on the sign-in cookie with the CSRF token this page embeds (``app.api.auth.csrf_token``: the key itself
never reaches the page's script). A retrained job's page links the job it came from and shows the
before/after comparison.

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
from sqlalchemy.orm import Session

from app.api.auth import COOKIE, csrf_token
from app.api.deps import SessionDep
from app.errors import NotFound
from app.models import JOB_STATUSES, TERMINAL_STATUSES, Dataset, Job, JobEvent
from app.schemas import JobPublic
from app.services import jobs as jobs_service
from app.services import retrain
from app.services.live import epoch_metrics, progress_snapshot
from app.services.report_stats import report_stats
from app.services.reports import report_page

UI_DIR = Path(__file__).resolve().parents[2] / "ui"
STATIC_DIR = UI_DIR / "static"
UI_URL, STATIC_URL = "/ui", "/ui/static"
PAGE_ROWS = 50  # report rows per page of the review table (the script pages on through the API)
HEADLINE = (("eval_accuracy", "held-out accuracy"), ("eval_macro_f1", "held-out macro F1"),
            ("validation_agreement", "held-out agreement (given labels)"),
            ("estimated_noise_rate", "estimated noise rate"), ("true_noise_rate", "true noise rate (gold)"),
            ("flagged_fraction", "flagged fraction"),
            ("noise_precision", "report precision (gold)"), ("noise_recall", "report recall (gold)"),
            ("noise_auroc", "report AUROC (gold)"), ("train_gold_accuracy", "training accuracy (gold)"),
            ("wall_time_s", "training time (s)"))
DIGITS = {"wall_time_s": 0}
# The per-epoch table: metric key and column title. The p_clean columns come from the clean-probability pass
# run at the start of the epoch (the last pass so far), not from the epoch's own training.
EPOCH_COLUMNS = (("phase", "phase"), ("train_loss", "training loss"), ("eval_loss", "held-out loss"),
                 ("eval_accuracy", "held-out accuracy"), ("eval_macro_f1", "held-out macro F1"),
                 ("validation_agreement", "held-out agreement (given labels)"),
                 ("validation_majority_rate", "majority-class rate (held out)"),
                 ("last_pass_p_clean_mean", "last pass p_clean mean"),
                 ("last_pass_p_clean_below_half", "last pass p_clean < 0.5 (fraction)"),
                 ("last_pass_mean_loss", "last pass mean loss"),
                 ("last_pass_p_clean_auroc", "last pass p_clean AUROC (gold)"))
# One colour per class (cycled), shared by the threshold lines of the histogram and their legend.
PALETTE = ("#2f6fde", "#e8871e", "#1d8a4e", "#8e44ad", "#c23b3b", "#16a2b8", "#9c6b30", "#d6338a", "#5c6f82",
           "#7a9a01")

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


def epoch_columns(epochs: list[dict[str, Any]], final: bool) -> list[tuple[str, str]]:
    """The per-epoch table's columns: those some epoch of a final job has; all of them while the job runs
    (epochs streamed in later, e.g. the first routed one after warm-up, may have any of them)."""
    if not final:
        return list(EPOCH_COLUMNS)
    return [(key, title) for key, title in EPOCH_COLUMNS if any(e.get(key) is not None for e in epochs)]


def warning_events(session: Session, job_id: str, *, tenant_id: str) -> list[dict[str, Any]]:
    """The job's ``warning`` events, oldest first: message, stage and time."""
    query = (select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.tenant_id == tenant_id,
                                    JobEvent.type == "warning").order_by(JobEvent.id))
    return [{"message": e.message, "stage": (e.data or {}).get("stage"), "created_at": e.created_at}
            for e in session.scalars(query)]


def verdict(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The banner of the report's reliability verdict: ``state`` (reliable / unreliable), its title, the
    evidence in one line, and when not reliable the reasons and the advice; None for a summary without one."""
    rel = summary.get("reliability")
    if not rel:
        return None
    evidence = (f"{rel.get('evidence', '?')} agreement with the given labels {fmt(rel.get('agreement'))} vs the "
                f"majority-class rate {fmt(rel.get('majority_rate'))} on {rel.get('rows', '?')} rows, skill "
                f"{fmt(rel.get('skill'), 2)}, p = {fmt_p(rel.get('p_value'))}, median training loss "
                f"{fmt(rel.get('loss_ratio'), 2)} × ln K")
    if rel.get("reliable"):
        title = "reliable"
    elif summary.get("flags_withheld"):
        title = "not reliable — flags withheld"
    else:
        title = "not reliable — flags kept (clear.flag_when_unreliable)"
    return {"state": "reliable" if rel.get("reliable") else "unreliable", "title": title, "evidence": evidence,
            "reasons": list(rel.get("reasons") or []), "advice": rel.get("advice") or ""}


def fmt_p(value: Any) -> str:
    """A p-value: two significant digits (``3.2e-06``, ``0.41``), blank when missing."""
    return "" if value is None else f"{value:.2g}"


def class_thresholds(stats: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each class's threshold on the label_quality axis with its colour, in the noise matrix's label order."""
    if not stats:
        return []
    thresholds = stats["histogram"].get("thresholds") or {}
    order = (stats.get("noise_matrix") or {}).get("labels") or list(thresholds)
    names = [n for n in order if n in thresholds] + [n for n in thresholds if n not in order]
    return [{"label": name, "value": float(thresholds[name]), "color": PALETTE[k % len(PALETTE)]}
            for k, name in enumerate(names)]


def report_filters(stats: dict[str, Any] | None) -> dict[str, Any]:
    """The review table's first filters: the flagged rows, or every row (lowest label_quality first) when the
    flags are withheld, where the reasons say what would have been flagged."""
    return {} if not stats or stats.get("flags_withheld") else {"flagged": True}


def report_rows(session: Session, job: Job, stats: dict[str, Any] | None) -> dict[str, Any]:
    """The review table's first page (``PAGE_ROWS`` rows under ``report_filters``): ``{"items", "count",
    "next_cursor"}``; empty without a report."""
    if not stats:
        return {"items": [], "count": 0, "next_cursor": None}
    page = report_page(session, job, filters=report_filters(stats), limit=PAGE_ROWS, cursor=None)
    return {"items": page.items, "count": page.count, "next_cursor": page.next_cursor}


def decision_text(action: str | None, label: str | None) -> str:
    """A row's decision for the table: ``accept → 0``, ``relabel → 2``, ``keep``, ``drop``; blank if undecided."""
    if not action:
        return ""
    return f"{action} → {label}" if action in ("accept", "relabel") and label is not None else action


def review_links(session: Session, job: Job) -> dict[str, Any]:
    """What the review loop already made from ``job``: its versions (newest first: id, name, rows, lineage)
    and the jobs retrained from it (newest first: id, status, dataset)."""
    made = session.scalars(select(Dataset).where(Dataset.from_job_id == job.id, Dataset.tenant_id == job.tenant_id)
                           .order_by(Dataset.created_at.desc()).limit(20))
    versions = [{"id": d.id, "name": d.name, "row_count": d.row_count, "lineage": d.lineage or {}} for d in made]
    retrained = session.scalars(select(Job).where(Job.from_job_id == job.id, Job.tenant_id == job.tenant_id)
                                .order_by(Job.created_at.desc()).limit(20))
    return {"versions": versions,
            "retrains": [{"id": j.id, "status": j.status, "dataset_id": j.dataset_id} for j in retrained]}


def comparison_rows(comparison: dict[str, Any] | None) -> list[dict[str, str]]:
    """The retrain comparison as table rows: metric, before, after and the signed difference, formatted."""
    if not comparison:
        return []
    before, after, difference = comparison["before"], comparison["after"], comparison["difference"]
    names = [n for n in after if n in before] + [n for n in after if n not in before] + \
        [n for n in before if n not in after]
    return [{"metric": n, "before": fmt(before.get(n)), "after": fmt(after.get(n)),
             "difference": "" if n not in difference else f"{difference[n]:+.3f}"} for n in names]


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, session: SessionDep, job_id: str):
    """One job: progress (live while it runs), learning warnings, the report's verdict, per-epoch plots and
    table, the report's plots (label_quality with the class thresholds, the noise matrix, noise per class,
    confusion), the flagged rows."""
    tenant_id = tenant_of(request)
    try:
        row = jobs_service.get_job(session, job_id, tenant_id=tenant_id)
    except NotFound as exc:
        return templates.TemplateResponse(request, "missing.html", {"message": exc.message}, status_code=404)
    job, snapshot = JobPublic.from_job(row), progress_snapshot(row)
    job = job.model_copy(update={"comparison": retrain.comparisons(session, [row]).get(row.id)})
    has_report = job.status == "succeeded" and job.report_summary is not None
    stats = report_stats(session, row) if has_report else None
    dataset = session.scalar(select(Dataset).where(Dataset.id == job.dataset_id,
                                                   Dataset.tenant_id == tenant_id))
    metrics = job.metrics or {}
    final = job.status in TERMINAL_STATUSES
    epochs = epoch_metrics(session, job.id, tenant_id=tenant_id)
    columns = epoch_columns(epochs, final)
    thresholds = class_thresholds(stats)
    rows = report_rows(session, row, stats)
    cookie = request.cookies.get(COOKIE)
    review = {"dataset_id": job.dataset_id, "page_rows": PAGE_ROWS, "filters": report_filters(stats),
              "count": rows["count"], "next_cursor": rows["next_cursor"],
              "has_ids": any(r["id"] is not None for r in rows["items"]),
              "csrf_token": csrf_token(cookie) if cookie else None,
              "can_write": request.state.principal.allows("write")} if stats else None
    data = {"job_id": job.id, "final": final, "epochs": epochs, "epoch_columns": [key for key, _ in columns],
            "stats": stats, "thresholds": thresholds, "stream_url": f"/v1/jobs/{job.id}/events/stream",
            "review": review}
    parent = session.scalar(select(Dataset).where(Dataset.id == dataset.parent_id, Dataset.tenant_id == tenant_id)
                            ) if dataset is not None and dataset.parent_id else None
    return templates.TemplateResponse(request, "job.html", {
        "job": job, "api": f"/v1/jobs/{job.id}", "stats": stats, "flagged_rows": rows["items"], "review": review,
        "classes": list(dataset.label_names or []) if dataset else [], "parent": parent, "dataset": dataset,
        "made": review_links(session, row) if stats else None, "comparison": comparison_rows(job.comparison),
        "decision_text": decision_text,
        "data": data, "dataset_name": dataset.name if dataset else job.dataset_id,
        "progress_text": progress_text(snapshot), "duration": _duration(job), "epochs": epochs,
        "epoch_columns": columns, "warnings": warning_events(session, job.id, tenant_id=tenant_id),
        "verdict": verdict(job.report_summary or {}) if has_report else None, "thresholds": thresholds,
        "headline": [(label, fmt(metrics[key], DIGITS.get(key, 3))) for key, label in HEADLINE
                     if isinstance(metrics.get(key), (int, float)) and not isinstance(metrics.get(key), bool)]})
