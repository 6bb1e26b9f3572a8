"""Idempotency keys: remember the first answer to a POST carrying ``Idempotency-Key`` so that a retry
with the same key and body gets the same answer, and a reuse of the key for another body is refused.
Keys are per tenant: two tenants using the same key never see each other's answers.

A key is taken with an INSERT (the primary key makes concurrent requests with one key race
safely); a request still running holds it until ``locked_until``; a 5xx answer frees the key so the
retry runs again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import IdempotencyKey, utcnow
from app.services.leases import as_utc

LOCK_S = 600  # longest a request may hold its key before a retry may take it over


@dataclass
class Claim:
    """The outcome of ``begin``: ``new`` (run the request), ``replay``, ``mismatch`` or ``busy``."""

    outcome: str
    record: IdempotencyKey | None = None


def begin(session: Session, tenant_id: str, key: str, fingerprint: str) -> Claim:
    """Take the tenant's ``key`` for a request with ``fingerprint``, or say why not (committed)."""
    now = utcnow()
    try:
        session.add(IdempotencyKey(tenant_id=tenant_id, key=key, fingerprint=fingerprint, state="in_progress",
                                   locked_until=now + timedelta(seconds=LOCK_S), created_at=now))
        session.commit()
        return Claim("new")
    except IntegrityError:
        session.rollback()
    record = session.get(IdempotencyKey, (tenant_id, key), populate_existing=True)
    if record is None:  # freed meanwhile by a failed first request: take it now
        return begin(session, tenant_id, key, fingerprint)
    if record.fingerprint != fingerprint:
        return Claim("mismatch", record)
    if record.state == "done":
        return Claim("replay", record)
    if as_utc(record.locked_until) > now:
        return Claim("busy", record)
    taken = session.execute(update(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id,
                                                         IdempotencyKey.key == key,
                                                         IdempotencyKey.state == "in_progress",
                                                         IdempotencyKey.locked_until == record.locked_until)
                            .values(locked_until=now + timedelta(seconds=LOCK_S))).rowcount
    session.commit()
    return Claim("new") if taken else Claim("busy", record)


def complete(session: Session, tenant_id: str, key: str, status: int, headers: dict[str, str], body: bytes) -> None:
    """Store the answer of the request holding the tenant's ``key``."""
    session.execute(update(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
                    .values(state="done", response_status=status, response_headers=headers, response_body=body))
    session.commit()


def abandon(session: Session, tenant_id: str, key: str) -> None:
    """Free the tenant's ``key`` (the request failed on the service's side: a retry must run again)."""
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key,
                                                 IdempotencyKey.state == "in_progress"))
    session.commit()
