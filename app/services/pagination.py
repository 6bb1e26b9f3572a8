"""Cursor pagination: opaque base64url cursors and the newest-first keyset query on (created_at, id)."""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from app.errors import InvalidInput


@dataclass
class Page:
    """One page of results: the items, the total matching ``count`` and the cursor of the next page."""

    items: list[Any]
    count: int
    next_cursor: str | None
    has_more: bool | None = None

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
        raise InvalidInput(f"cursor={cursor!r} is not a cursor this service returned: pass next_cursor "
                           "from the previous page, or omit it", param="cursor")
    return values


def newest_first(session: Session, model: Any, *, conditions: list[ColumnElement[bool]], limit: int,
                 cursor: str | None) -> Page:
    """Rows of ``model`` matching ``conditions``, newest first by ``(created_at, id)``, after ``cursor``."""
    query = select(model).where(*conditions).order_by(model.created_at.desc(), model.id.desc())
    if cursor:
        created_raw, last_id = decode_cursor(cursor, 2)
        try:
            created = datetime.fromisoformat(created_raw)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"cursor={cursor!r} is malformed: pass next_cursor from the previous page",
                               param="cursor") from exc
        query = query.where(or_(model.created_at < created,
                                and_(model.created_at == created, model.id < str(last_id))))
    items = list(session.scalars(query.limit(limit + 1)))
    count = session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0
    more = len(items) > limit
    items = items[:limit]
    next_cursor = encode_cursor([items[-1].created_at.isoformat(), items[-1].id]) if more else None
    return Page(items, count, next_cursor)
