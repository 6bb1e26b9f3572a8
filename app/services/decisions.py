"""Review decisions on a job's noise report: record them (a list of rows, or a bulk rule applied in SQL), and
list them in ``row_index`` order.

A decision is an upsert on ``(job_id, row_index)``: the latest one per row wins. Its ``label`` is the label the
row takes in a version made from the job: the row's ``suggested_label`` for ``accept``, the chosen label for
``relabel``, its ``given_label`` for ``keep``, None for ``drop``. A request is all or nothing: an unknown row or
a label that is not one of the dataset's classes stores none of its decisions.

A bulk rule is one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` over the job's ``noise_rows`` (the dialect's
own upsert, Postgres or SQLite), so it costs the same few statements on a report of a million rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.errors import InvalidInput, shown
from app.models import REVIEW_ACTIONS, Dataset, Job, NoiseRow, ReviewDecision, utcnow
from app.services.pagination import Page, decode_cursor, encode_cursor

INSERT_BATCH = 5000
LOOKUP_BATCH = 5000
NAMED_MAX = 20  # unknown rows named in one error message
UPDATED = ("tenant_id", "action", "label", "api_key_id", "decided_at")


def _insert(session: Session):
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _upsert(statement):
    """``statement`` (an ``INSERT`` of the dialect) replacing the earlier decision of a row."""
    return statement.on_conflict_do_update(index_elements=["job_id", "row_index"],
                                           set_={name: statement.excluded[name] for name in UPDATED})


def _class_names(session: Session, job: Job) -> list[str]:
    return list(session.scalar(select(Dataset.label_names).where(Dataset.id == job.dataset_id)) or [])


def _empty_counts() -> dict[str, int]:
    return dict.fromkeys(REVIEW_ACTIONS, 0)


def record_decisions(session: Session, job: Job, decisions: list[dict[str, Any]], *, key_id: str | None
                     ) -> dict[str, Any]:
    """Store ``decisions`` (dicts ``{"row_index", "action", "label"}``, ``label`` only for ``relabel``) on the
    succeeded ``job``'s report, made with API key ``key_id``; a row named twice takes its last decision.
    Committed.

    Returns:
        ``{"recorded": n, "by_action": {"accept": n, "keep": n, "relabel": n, "drop": n}}``, n distinct rows.

    Raises:
        InvalidInput: a ``row_index`` that is not in the report (``param`` ``decisions``, up to 20 named), or a
            relabel to a label that is not one of the dataset's classes; nothing is stored then.
    """
    latest: dict[int, dict[str, Any]] = {}
    for position, item in enumerate(decisions):
        latest[int(item["row_index"])] = dict(item, position=position)
    classes = set(_class_names(session, job))
    for item in latest.values():
        if item["action"] == "relabel" and item.get("label") not in classes:
            raise InvalidInput(f"decisions[{item['position']}].label={item.get('label')!r} is not one of the "
                               f"dataset's classes {sorted(classes)}", param=f"decisions.{item['position']}.label")
    known = _report_labels(session, job, list(latest))
    unknown = sorted(set(latest) - set(known))
    if unknown:
        named = ", ".join(map(str, unknown[:NAMED_MAX])) + (f" and {len(unknown) - NAMED_MAX} more"
                                                           if len(unknown) > NAMED_MAX else "")
        rows = (job.report_summary or {}).get("rows")
        span = f" (its rows are 0..{rows - 1})" if isinstance(rows, int) and rows > 0 else ""
        raise InvalidInput(f"row_index {named} is not in the noise report of job {job.id}{span}; nothing was "
                           "stored", param="decisions", code="unknown_rows",
                           details=[{"row": i, "code": "unknown_row", "column": "row_index",
                                     "message": "not in the report"} for i in unknown[:NAMED_MAX]])
    now, counts = utcnow(), _empty_counts()
    records = []
    for row_index, item in sorted(latest.items()):
        given, suggested = known[row_index]
        action = item["action"]
        label = {"accept": suggested, "keep": given, "relabel": item.get("label"), "drop": None}[action]
        counts[action] += 1
        records.append({"job_id": job.id, "row_index": row_index, "tenant_id": job.tenant_id, "action": action,
                        "label": label, "api_key_id": key_id, "decided_at": now})
    try:
        statement = _upsert(_insert(session)(ReviewDecision))
        for start in range(0, len(records), INSERT_BATCH):
            session.execute(statement, records[start:start + INSERT_BATCH])
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return {"recorded": len(records), "by_action": counts}


def _report_labels(session: Session, job: Job, row_indices: list[int]) -> dict[int, tuple[str, str]]:
    """``{row_index: (given_label, suggested_label)}`` of those of ``row_indices`` that are in the report."""
    found: dict[int, tuple[str, str]] = {}
    for start in range(0, len(row_indices), LOOKUP_BATCH):
        part = row_indices[start:start + LOOKUP_BATCH]
        query = (select(NoiseRow.row_index, NoiseRow.given_label, NoiseRow.suggested_label)
                 .where(NoiseRow.job_id == job.id, NoiseRow.tenant_id == job.tenant_id, NoiseRow.row_index.in_(part)))
        found.update({row.row_index: (row.given_label, row.suggested_label) for row in session.execute(query)})
    return found


def _rule_conditions(job: Job, rule: dict[str, Any]) -> list[ColumnElement[bool]]:
    conditions = [NoiseRow.job_id == job.id, NoiseRow.tenant_id == job.tenant_id]
    if rule.get("flagged") is not None:
        conditions.append(NoiseRow.flagged == rule["flagged"])
    if rule.get("min_suggested_confidence") is not None:
        conditions.append(NoiseRow.suggested_confidence >= rule["min_suggested_confidence"])
    for name in ("given_label", "suggested_label", "split"):
        if rule.get(name) is not None:
            conditions.append(getattr(NoiseRow, name) == rule[name])
    return conditions


def apply_rule(session: Session, job: Job, rule: dict[str, Any], action: str, *, key_id: str | None
               ) -> dict[str, Any]:
    """Decide ``action`` (``accept``, ``keep`` or ``drop``) on every report row of ``job`` matching ``rule``
    (keys ``flagged``, ``min_suggested_confidence``, ``given_label``, ``suggested_label``, ``split``; each given
    one must hold; none given, as ``schemas_review.DecisionRule`` allows only with ``all_rows``: every row), in
    one ``INSERT ... SELECT`` upsert. Committed.

    Returns:
        ``{"recorded": n, "by_action": {...}}`` with n the rows the rule matched (0 is not an error).

    Raises:
        InvalidInput: ``action`` is not one a rule may take, or a label in the rule is not one of the dataset's
            classes (such a rule could match nothing: the request is likely a typo).
    """
    if action not in ("accept", "keep", "drop"):
        raise InvalidInput(f"action={action!r}: a rule takes accept, keep or drop (relabel needs a label per row)",
                           param="action")
    classes = _class_names(session, job)
    for name in ("given_label", "suggested_label"):
        if rule.get(name) is not None and rule[name] not in classes:
            raise InvalidInput(f"rule.{name}={rule[name]!r} is not one of the dataset's classes {classes}",
                               param=f"rule.{name}")
    conditions = _rule_conditions(job, rule)
    label = {"accept": NoiseRow.suggested_label, "keep": NoiseRow.given_label,
             "drop": literal(None, ReviewDecision.label.type)}[action]
    source = select(NoiseRow.job_id, NoiseRow.row_index, NoiseRow.tenant_id,
                    literal(action, ReviewDecision.action.type), label,
                    literal(key_id, ReviewDecision.api_key_id.type),
                    literal(utcnow(), ReviewDecision.decided_at.type)).where(*conditions)
    columns = ["job_id", "row_index", "tenant_id", "action", "label", "api_key_id", "decided_at"]
    try:
        matched = session.scalar(select(func.count()).select_from(NoiseRow).where(*conditions)) or 0
        if matched:
            session.execute(_upsert(_insert(session)(ReviewDecision).from_select(columns, source)))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    counts = _empty_counts()
    counts[action] = matched
    return {"recorded": matched, "by_action": counts}


def list_decisions(session: Session, job: Job, *, action: str | None, limit: int, cursor: str | None) -> Page:
    """The job's decisions in ``row_index`` order, ``limit`` per page after ``cursor``, optionally only those
    with ``action``.

    Raises:
        InvalidInput: an unknown ``action`` or a cursor this route did not return.
    """
    if action is not None and action not in REVIEW_ACTIONS:
        raise InvalidInput(f"action={action!r}: use one of {', '.join(REVIEW_ACTIONS)}", param="action")
    conditions = [ReviewDecision.job_id == job.id, ReviewDecision.tenant_id == job.tenant_id]
    if action is not None:
        conditions.append(ReviewDecision.action == action)
    query = select(ReviewDecision).where(*conditions)
    if cursor:
        after = decode_cursor(cursor, 1)[0]
        if not isinstance(after, int) or isinstance(after, bool):
            raise InvalidInput(f"cursor={shown(cursor)} is not a decisions cursor", param="cursor")
        query = query.where(ReviewDecision.row_index > after)
    items = list(session.scalars(query.order_by(ReviewDecision.row_index).limit(limit + 1)))
    count = session.scalar(select(func.count()).select_from(ReviewDecision).where(*conditions)) or 0
    more = len(items) > limit
    items = items[:limit]
    return Page(items, count, encode_cursor([items[-1].row_index]) if more else None)

