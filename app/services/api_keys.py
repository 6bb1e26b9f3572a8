"""API keys and tenants: a key is ``clr_<8 hex>_<43 url-safe characters>`` (256 random bits after the
prefix), shown once when it is made; the database keeps only its sha256 and its visible prefix.

Scopes: ``read`` (GET), ``write`` (POST: uploads, jobs, cancel) and ``admin`` (both, plus ``/metrics``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import InvalidInput, NotFound
from app.models import ApiKey, Tenant, utcnow

SCOPES = ("read", "write", "admin")
KEY_PATTERN = re.compile(r"^(clr_[0-9a-f]{8})_[A-Za-z0-9_-]{43}$")
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
LOCAL_TENANT = "local"
NAME_MAX = 200  # api_keys.name
QUOTA_COLUMNS = ("max_concurrent_jobs", "max_stored_rows", "max_upload_bytes", "max_jobs_per_hour")
QUOTA_MAX = {"max_concurrent_jobs": 2**31 - 1, "max_stored_rows": 2**63 - 1, "max_upload_bytes": 2**63 - 1,
             "max_jobs_per_hour": 2**31 - 1}  # the columns' ranges (INTEGER, BIGINT)


@dataclass
class NewKey:
    """A key just made: ``key`` is the plaintext (never stored; show it once), ``record`` its row."""

    key: str
    record: ApiKey


def hash_key(key: str) -> str:
    """The sha256 hex digest (64 characters) stored for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(raw: str | list[str]) -> list[str]:
    """Scopes from ``"read,write"`` or a list, deduplicated in ``SCOPES`` order; ``InvalidInput`` on others."""
    names = [s.strip() for s in (raw.split(",") if isinstance(raw, str) else raw) if s.strip()]
    unknown = sorted(set(names) - set(SCOPES))
    if unknown or not names:
        raise InvalidInput(f"scopes {names!r}: give one or more of {', '.join(SCOPES)}", param="scopes")
    return [s for s in SCOPES if s in names]


def ensure_tenant(session: Session, name: str) -> Tenant:
    """The tenant called ``name``, made (not committed) if it does not exist.

    Raises:
        InvalidInput: a name that is not 1-100 lower-case letters, digits, ``_ . -``.
    """
    if not TENANT_PATTERN.match(name):
        raise InvalidInput(f"tenant {name!r}: use 1-100 lower-case letters, digits, '_', '.' or '-', starting with "
                           "a letter or digit", param="tenant")
    tenant = session.get(Tenant, name)
    if tenant is None:
        tenant = Tenant(id=name, created_at=utcnow())
        session.add(tenant)
        session.flush()
    return tenant


def create_key(session: Session, tenant: str, scopes: str | list[str], *, name: str | None = None) -> NewKey:
    """Make a key for ``tenant`` (made too if new) with ``scopes``; committed. The plaintext is only in
    the returned ``NewKey``."""
    scope_list = parse_scopes(scopes)
    if name is not None and len(name) > NAME_MAX:  # the column's length: Postgres would refuse the INSERT
        raise InvalidInput(f"the key's name is {len(name)} characters: use at most {NAME_MAX}", param="name")
    ensure_tenant(session, tenant)
    while True:
        prefix = f"clr_{secrets.token_hex(4)}"
        if session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            break
    key = f"{prefix}_{secrets.token_urlsafe(32)}"
    record = ApiKey(tenant_id=tenant, prefix=prefix, key_hash=hash_key(key), scopes=scope_list, name=name,
                    created_at=utcnow())
    session.add(record)
    session.commit()
    return NewKey(key, record)


def find_key(session: Session, key: str) -> tuple[ApiKey, Tenant] | None:
    """The active (not revoked) key whose hash matches ``key``, with its tenant; None otherwise."""
    if not KEY_PATTERN.match(key):
        return None
    row = session.execute(select(ApiKey, Tenant).join(Tenant, Tenant.id == ApiKey.tenant_id)
                          .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))).first()
    return (row[0], row[1]) if row else None


def list_keys(session: Session, tenant: str | None = None) -> list[ApiKey]:
    """Every key (revoked ones too), oldest first, optionally of one tenant."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if tenant is not None:
        query = query.where(ApiKey.tenant_id == tenant)
    return list(session.scalars(query))


def revoke_key(session: Session, prefix: str) -> ApiKey:
    """Revoke the key with this visible ``prefix`` (``clr_xxxxxxxx``; a whole key works too); committed.
    Revoking twice keeps the first time. Raises ``NotFound`` for an unknown prefix."""
    match = KEY_PATTERN.match(prefix)
    record = session.scalar(select(ApiKey).where(ApiKey.prefix == (match.group(1) if match else prefix)))
    if record is None:
        raise NotFound(f"no API key with prefix {prefix!r}: `python -m app.cli list-keys` shows them", param="prefix")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        session.commit()
    return record


def set_quotas(session: Session, tenant: str, **limits: int | None) -> Tenant:
    """Set the tenant's own quotas (``max_concurrent_jobs=...`` etc.; 0 resets one to the service default);
    the tenant is made if new; committed. ``InvalidInput`` for a negative value (a quota of -1 would refuse
    every request) or one past the column's range."""
    record = ensure_tenant(session, tenant)
    for column, value in limits.items():
        if column not in QUOTA_COLUMNS:
            raise InvalidInput(f"{column} is not a quota: use {', '.join(QUOTA_COLUMNS)}", param=column)
        if value is not None:
            if not 0 <= value <= QUOTA_MAX[column]:
                raise InvalidInput(f"{column}={value}: give a whole number from 1 to {QUOTA_MAX[column]}, or 0 for the "
                                   "service default", param=column)
            setattr(record, column, value or None)
    session.commit()
    return record
