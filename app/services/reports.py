"""Noise reports: paged and filtered queries in ``rank`` order (flagged rows first, then ascending
``label_quality``: likeliest wrong first), and CSV/JSONL streams read in batches so a large report never
sits in memory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from clear_core.csv_safety import csv_safe  # no torch or sklearn behind it

from app.errors import Conflict, InvalidInput, shown, until_succeeded
from app.models import DatasetRow, Job, NoiseRow, ReviewDecision
from app.services.jobs import get_job
from app.services.pagination import Page, decode_cursor, encode_cursor
from app.services.streaming import csv_chunks

REPORT_FIELDS = ("rank", "row_index", "id", "text", "text_pair", "given_label", "predicted_label",
                 "suggested_label", "suggested_confidence", "p_clean", "p_clean_history", "label_quality",
                 "flagged", "flag_threshold", "flag_reason", "split", "decision", "decision_label")


def report_job(session: Session, job_id: str, *, tenant_id: str) -> Job:
    """The tenant's job, which must have finished with a report; ``NotFound`` / ``Conflict`` otherwise."""
    job = get_job(session, job_id, tenant_id=tenant_id)
    if job.status != "succeeded" or job.report_summary is None:
        raise Conflict(f"job {job_id!r} is {job.status}: its noise report exists once it has succeeded; "
                       f"{until_succeeded(job.status)}", param="job_id", code="report_not_ready")
    return job


def _query(job: Job, filters: dict[str, Any]):
    query = (select(NoiseRow, DatasetRow.text, DatasetRow.text_pair, ReviewDecision.action, ReviewDecision.label)
             .join(DatasetRow, and_(DatasetRow.dataset_id == job.dataset_id,
                                    DatasetRow.row_index == NoiseRow.row_index))
             .outerjoin(ReviewDecision, and_(ReviewDecision.job_id == NoiseRow.job_id,
                                             ReviewDecision.row_index == NoiseRow.row_index))
             .where(NoiseRow.job_id == job.id, NoiseRow.tenant_id == job.tenant_id))
    if filters.get("decided") is not None:  # the review decisions of issue 10: decided rows, or undecided ones
        decided = ReviewDecision.row_index.is_not(None)
        query = query.where(decided if filters["decided"] else ~decided)
    if filters.get("flagged") is not None:
        query = query.where(NoiseRow.flagged == filters["flagged"])
    for name in ("given_label", "predicted_label", "suggested_label", "split"):
        if filters.get(name) is not None:
            query = query.where(getattr(NoiseRow, name) == filters[name])
    if filters.get("q"):  # a case-insensitive substring of the text or the text pair (ILIKE / SQLite's LIKE)
        pattern = "%" + _like_escape(filters["q"]) + "%"
        query = query.where(or_(DatasetRow.text.ilike(pattern, escape="\\"),
                                DatasetRow.text_pair.ilike(pattern, escape="\\")))
    return query


def _like_escape(text: str) -> str:
    """``text`` with LIKE's wildcards (``%``, ``_``) and the escape character itself escaped by a backslash."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _after(query, cursor: str | None):
    if not cursor:
        return query
    rank, row_index = decode_cursor(cursor, 2)
    if not isinstance(rank, int) or not isinstance(row_index, int):
        raise InvalidInput(f"cursor={shown(cursor)} is not a noise-report cursor", param="cursor")
    return query.where(or_(NoiseRow.rank > rank, and_(NoiseRow.rank == rank, NoiseRow.row_index > row_index)))


def _record(noise: NoiseRow, text: str, text_pair: str | None, decision: str | None = None,
            decision_label: str | None = None) -> dict[str, Any]:
    record = {name: getattr(noise, name) for name in REPORT_FIELDS if hasattr(NoiseRow, name)}
    record.update(id=noise.row_id, text=text, text_pair=text_pair, decision=decision, decision_label=decision_label)
    return {name: record[name] for name in REPORT_FIELDS}


def report_page(session: Session, job: Job, *, filters: dict[str, Any], limit: int, cursor: str | None) -> Page:
    """One page of ``job``'s report in ``clear_core``'s ``rank`` order (then ``row_index``), after ``cursor``."""
    base = _query(job, filters)
    ordered = _after(base, cursor).order_by(NoiseRow.rank, NoiseRow.row_index)
    rows = [_record(*row) for row in session.execute(ordered.limit(limit + 1))]
    count = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows else None
    return Page(rows, count, encode_cursor([last["rank"], last["row_index"]]) if more else None)


def iter_report(factory: sessionmaker[Session], job: Job, filters: dict[str, Any],
                batch: int = 2000) -> Iterator[dict[str, Any]]:
    """Every matching report row in rank order, fetched ``batch`` rows at a time, each batch in its own
    session (a streamed response outlives the request's session)."""
    cursor = None
    while True:
        with factory() as session:
            page = report_page(session, job, filters=filters, limit=batch, cursor=cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _safe_cell(value: Any) -> Any:
    if isinstance(value, list):
        return json.dumps(value)
    return csv_safe(value)


def csv_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The report as CSV text chunks, header first, formula-like cells neutralised."""
    return csv_chunks(REPORT_FIELDS, ([_safe_cell(row[k]) for k in REPORT_FIELDS] for row in rows))


def jsonl_lines(summary: dict[str, Any], rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The report as JSON lines: first ``{"summary": {...}, "columns": [...]}`` (the row fields, in order, so
    a filter that matches no row still says what a row holds), then one object per row."""
    yield json.dumps({"summary": summary, "columns": list(REPORT_FIELDS)}) + "\n"
    for row in rows:
        yield json.dumps(row) + "\n"
