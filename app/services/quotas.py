"""Tenant quotas: jobs queued or running at once, stored dataset rows, upload size and jobs created per
hour. Each is the tenant's own ``max_*`` column when set, else the service's ``quota_*`` setting; a
request over one is refused with ``QuotaExceeded`` (429, ``Retry-After``, the quota's name).

The checks that count rows lock the tenant's row first (``SELECT ... FOR UPDATE`` on Postgres), so two
concurrent requests of one tenant cannot both take the last unit of a quota.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import QuotaExceeded
from app.models import Dataset, Job, Tenant, utcnow
from app.services.leases import as_utc
from app.settings import Settings

ACTIVE = ("queued", "running", "cancelling")
HOUR_S = 3600


@dataclass(frozen=True)
class Quotas:
    """A tenant's effective limits: jobs at once, dataset rows stored, bytes per upload, jobs per hour."""

    concurrent_jobs: int
    stored_rows: int
    upload_bytes: int
    jobs_per_hour: int
    retry_after_s: int = 30


def quotas_for(tenant: Tenant, settings: Settings) -> Quotas:
    """The tenant's overrides over the settings' defaults (upload size never above ``max_upload_bytes``)."""
    upload = tenant.max_upload_bytes or settings.quota_upload_bytes or settings.max_upload_bytes
    return Quotas(concurrent_jobs=tenant.max_concurrent_jobs or settings.quota_concurrent_jobs,
                  stored_rows=tenant.max_stored_rows or settings.quota_stored_rows,
                  upload_bytes=min(upload, settings.max_upload_bytes),
                  jobs_per_hour=tenant.max_jobs_per_hour or settings.quota_jobs_per_hour,
                  retry_after_s=settings.quota_retry_after_s)


def lock_tenant(session: Session, tenant_id: str) -> None:
    """Hold the tenant's row until the transaction ends (serialises its quota checks on Postgres)."""
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())


def check_job_quotas(session: Session, tenant_id: str, quotas: Quotas) -> None:
    """Refuse a new job when the tenant has ``concurrent_jobs`` unfinished or made ``jobs_per_hour`` in the
    last hour (``Retry-After``: when the oldest of those turns an hour old). Locks the tenant's row."""
    lock_tenant(session, tenant_id)
    active = session.scalar(select(func.count()).select_from(Job)
                            .where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE))) or 0
    if active >= quotas.concurrent_jobs:
        raise QuotaExceeded(f"this tenant already has {active} jobs queued or running, its quota of "
                            f"{quotas.concurrent_jobs}: wait for one to end or cancel one", quota="concurrent_jobs",
                            limit=quotas.concurrent_jobs, retry_after_s=quotas.retry_after_s)
    now = utcnow()
    recent = select(Job.created_at).where(Job.tenant_id == tenant_id, Job.created_at > now - timedelta(seconds=HOUR_S))
    count = session.scalar(select(func.count()).select_from(recent.subquery())) or 0
    if count >= quotas.jobs_per_hour:
        oldest = as_utc(session.scalar(recent.order_by(Job.created_at).offset(count - quotas.jobs_per_hour).limit(1)))
        wait = math.ceil((oldest + timedelta(seconds=HOUR_S) - now).total_seconds())
        raise QuotaExceeded(f"this tenant created {count} jobs in the last hour, its quota of "
                            f"{quotas.jobs_per_hour}: retry after {max(1, wait)} s", quota="jobs_per_hour",
                            limit=quotas.jobs_per_hour, retry_after_s=wait)


def stored_rows(session: Session, tenant_id: str) -> int:
    """Rows in the tenant's datasets."""
    return int(session.scalar(select(func.coalesce(func.sum(Dataset.row_count), 0))
                              .where(Dataset.tenant_id == tenant_id)) or 0)


def check_stored_rows(session: Session, tenant_id: str, quotas: Quotas, new_rows: int) -> None:
    """Refuse a dataset of ``new_rows`` rows that would take the tenant past ``stored_rows``."""
    stored = stored_rows(session, tenant_id)
    if stored + new_rows > quotas.stored_rows:
        raise QuotaExceeded(f"this tenant stores {stored} dataset rows; {new_rows} more would pass its quota of "
                            f"{quotas.stored_rows}: upload fewer rows or ask an administrator to raise the quota "
                            "(python -m app.cli set-quotas)", quota="stored_rows", limit=quotas.stored_rows,
                            retry_after_s=quotas.retry_after_s)


def upload_too_large(quotas: Quotas) -> QuotaExceeded:
    """The refusal of an upload larger than the tenant's ``upload_bytes``."""
    return QuotaExceeded(f"the file is larger than this tenant's upload quota of {quotas.upload_bytes} bytes: split "
                         "it or ask an administrator to raise the quota", quota="upload_bytes",
                         limit=quotas.upload_bytes, retry_after_s=quotas.retry_after_s)
