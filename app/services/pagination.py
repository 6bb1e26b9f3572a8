"""Cursor pagination: opaque base64url cursors and the newest-first keyset query on (created_at, id)."""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Bundle, Session

from app.errors import InvalidInput, shown


@dataclass
class Page:
    """One page of results: the items, the total matching ``count``, the cursor of the next page and, when the
    query joined them, ``related`` rows by item id (e.g. the job a retrain came from)."""

    items: list[Any]
    count: int
    next_cursor: str | None
    has_more: bool | None = None
    related: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.has_more is None:
            self.has_more = self.next_cursor is not None


def encode_cursor(values: list[Any]) -> str:
    """An opaque cursor holding ``values`` (JSON, base64url)."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


INT64 = (-(1 << 63), (1 << 63) - 1)


def _storable(value: Any) -> bool:
    """Whether a cursor value can be bound in a query: no integer past 64 bits (SQLite raises
    OverflowError on one) and no NaN or infinity."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int):
        return INT64[0] <= value <= INT64[1]
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def decode_cursor(cursor: str, length: int) -> list[Any]:
    """The values of a cursor made by ``encode_cursor``; ``InvalidInput`` on anything else."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != length or not all(map(_storable, values)):
        raise InvalidInput(f"cursor={shown(cursor)} is not a cursor this service returned: pass next_cursor "
                           "from the previous page, or omit it", param="cursor")
    return values


def newest_first(session: Session, model: Any, *, conditions: list[ColumnElement[bool]], limit: int,
                 cursor: str | None, related: tuple[Any, ColumnElement[bool], Bundle] | None = None) -> Page:
    """Rows of ``model`` matching ``conditions``, newest first by ``(created_at, id)``, after ``cursor``, and the
    count of every row matching ``conditions`` (the cursor aside).

    One statement: the count rides along as an uncorrelated scalar subquery (evaluated once, in the page's own
    snapshot); only a page past the end (no rows, with a cursor) costs a second one for the count.
    ``related=(target, onclause, bundle)`` outer-joins ``target`` in the same statement and puts, for each item
    that has a match (the bundle's first column not null, so make it the target's key), the bundle's row (its
    columns as attributes) in ``Page.related`` under the item's id.

    Raises:
        InvalidInput: a cursor this service did not make.
    """
    matching = select(func.count()).select_from(model).where(*conditions)
    query = select(model, matching.scalar_subquery().label("total"), *([related[2]] if related else []))
    if related:
        query = query.outerjoin(related[0], related[1])
    query = query.where(*conditions).order_by(model.created_at.desc(), model.id.desc())
    if cursor:
        created_raw, last_id = decode_cursor(cursor, 2)
        try:
            created = datetime.fromisoformat(created_raw)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"cursor={shown(cursor)} is malformed: pass next_cursor from the previous page",
                               param="cursor") from exc
        query = query.where(or_(model.created_at < created,
                                and_(model.created_at == created, model.id < str(last_id))))
    rows = session.execute(query.limit(limit + 1)).all()
    if rows:
        count = int(rows[0][1])
    else:
        count = int(session.scalar(matching) or 0) if cursor else 0
    more = len(rows) > limit
    rows = rows[:limit]
    items = [row[0] for row in rows]
    found = {row[0].id: row[2] for row in rows if related and row[2][0] is not None}
    next_cursor = encode_cursor([items[-1].created_at.isoformat(), items[-1].id]) if more else None
    return Page(items, count, next_cursor, related=found)
