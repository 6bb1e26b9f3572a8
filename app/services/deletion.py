"""Deleting datasets and jobs with everything that belongs to them, one function per kind of object.

- ``delete_job``: the job's noise rows, events and review decisions (``_delete_job_children``, which also runs
  every function in ``JOB_CHILD_HOOKS``: a later kind of job result registers its own cleanup there), then the
  job; versions made from it and jobs retrained from it stay, their ``from_job_id`` set to null. Its artifacts
  (everything under ``tenants/<tenant>/jobs/<id>/``, the checkpoints under ``jobs/<id>/``, ``adapter_uri`` and
  ``checkpoint_uri``) are removed after the commit.
- ``delete_dataset``: its rows, then the dataset. A dataset that jobs use (to train or as their validation
  dataset) or that has versions is only deleted with ``cascade=True``, which deletes those jobs and versions,
  their versions and jobs in turn, and so on.

Nothing is deleted while one of the jobs concerned is queued, running or cancelling (``Conflict``): cancel it and
wait for it to end. The database work is one transaction; the artifact store is touched only after it committed,
because files cannot be rolled back: a failed commit must leave the job and its adapter whole, while an
artifact that cannot be removed afterwards (a store outage) only leaves an orphan file, which is logged (with
its key, for an operator to remove) rather than failing a delete that has already happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from app.errors import Conflict
from app.models import Dataset, DatasetRow, Job, JobEvent, NoiseRow, ReviewDecision
from app.services.datasets import get_dataset
from app.services.jobs import get_job
from app.services.quotas import ACTIVE
from app.storage import ArtifactStore

logger = logging.getLogger(__name__)
NAMED_MAX = 10  # ids named in a refusal's message

# (session, job) -> artifact keys or prefixes to remove after the commit; each hook deletes its own rows of the
# job (not committed). Another kind of job result appends its cleanup here.
JobChildHook = Callable[[Session, Job], list[str]]
JOB_CHILD_HOOKS: list[JobChildHook] = []


def job_artifacts(job: Job) -> list[str]:
    """The artifact-store keys and prefixes of ``job``: its tenant folder ``tenants/<tenant>/jobs/<id>``, its
    checkpoint folder ``jobs/<id>``, and ``adapter_uri`` / ``checkpoint_uri`` wherever they point."""
    keys = [f"tenants/{job.tenant_id}/jobs/{job.id}", f"jobs/{job.id}"]
    return keys + [uri for uri in (job.adapter_uri, job.checkpoint_uri) if uri]


def _delete_job_children(session: Session, store: ArtifactStore, job: Job) -> list[str]:
    """Delete (not committed) every row that belongs to ``job``: review decisions, noise rows, events, and what
    each of ``JOB_CHILD_HOOKS`` deletes; point versions and jobs made from it at nothing (``from_job_id`` null).
    Returns the artifact keys/prefixes to remove once the transaction committed (``store`` is passed for hooks
    that need to list what is there; nothing is removed from it here)."""
    del store  # removing files waits for the commit (see the module's docstring)
    session.execute(delete(ReviewDecision).where(ReviewDecision.job_id == job.id))
    session.execute(delete(NoiseRow).where(NoiseRow.job_id == job.id))
    session.execute(delete(JobEvent).where(JobEvent.job_id == job.id))
    session.execute(update(Dataset).where(Dataset.from_job_id == job.id).values(from_job_id=None))
    session.execute(update(Job).where(Job.from_job_id == job.id).values(from_job_id=None))
    keys = job_artifacts(job)
    for hook in JOB_CHILD_HOOKS:
        keys += hook(session, job)
    return keys


def _refuse_active(jobs: list[Job], what: str) -> None:
    active = [j for j in jobs if j.status in ACTIVE]
    if active:
        named = ", ".join(f"{j.id} ({j.status})" for j in active[:NAMED_MAX])
        runs = [j for j in active if j.kind == "predict"]
        how = " or ".join(([] if len(runs) == len(active) else ["a job with POST /v1/jobs/{id}/cancel"])
                          + (["a prediction run with POST /v1/predictions/{id}/cancel"] if runs else []))
        raise Conflict(f"{what} cannot be deleted while a job or prediction run using it is queued, running or "
                       f"cancelling: {named}; cancel {how} and wait until it ends", param="id", code="job_active",
                       details=[{"job_id" if j.kind != "predict" else "prediction_id": j.id, "status": j.status}
                                for j in active])


def remove_artifacts(store: ArtifactStore, keys: list[str]) -> list[str]:
    """Remove each key (a file or a folder-like prefix) from ``store``; returns those that could not be removed
    (each logged as a warning; none raises)."""
    failed = []
    for key in dict.fromkeys(keys):
        try:
            store.delete_prefix(key)  # a file or a folder: removed recursively if it exists
        except Exception:  # the delete already happened in the database: an orphan file is logged, not raised
            logger.warning("could not remove artifact %r after its owner was deleted", key, exc_info=True)
            failed.append(key)
    return failed


def _commit_then_remove(session: Session, store: ArtifactStore, keys: list[str]) -> None:
    try:
        session.commit()
    except BaseException:
        session.rollback()
        raise
    remove_artifacts(store, keys)


def delete_job(session: Session, store: ArtifactStore, job_id: str, *, tenant_id: str) -> None:
    """Delete the tenant's job, its rows (``_delete_job_children``) and, after the commit, its artifacts.

    Raises:
        NotFound: no such job of the tenant (another tenant's id included).
        Conflict: the job is queued, running or cancelling (code ``job_active``).
    """
    job = get_job(session, job_id, tenant_id=tenant_id)
    session.refresh(job, with_for_update=True)  # no state change slips in between the check and the delete
    _refuse_active([job], f"job {job_id!r}")
    try:
        keys = _delete_job_children(session, store, job)
        session.execute(delete(Job).where(Job.id == job.id))
    except BaseException:
        session.rollback()
        raise
    _commit_then_remove(session, store, keys)


def dependents(session: Session, dataset_ids: list[str]) -> tuple[list[Dataset], list[Job]]:
    """The versions whose parent is one of ``dataset_ids`` and the jobs that train on one of them or use one as
    their validation dataset."""
    versions = list(session.scalars(select(Dataset).where(Dataset.parent_id.in_(dataset_ids))
                                    .order_by(Dataset.created_at, Dataset.id)))
    jobs = list(session.scalars(select(Job).where(or_(Job.dataset_id.in_(dataset_ids),
                                                      Job.validation_dataset_id.in_(dataset_ids)))
                                .order_by(Job.created_at, Job.id)))
    return versions, jobs


def _closure(session: Session, root: Dataset) -> tuple[list[str], list[Job]]:
    """Every dataset id below ``root`` (itself first, then versions of versions...) and every job using one."""
    dataset_ids, frontier, jobs = [root.id], [root.id], {}
    while frontier:
        versions, users = dependents(session, frontier)
        jobs.update({j.id: j for j in users})
        frontier = [v.id for v in versions if v.id not in dataset_ids]
        dataset_ids += frontier
    return dataset_ids, list(jobs.values())


def _names(objects, kind: str) -> str:
    ids = [o.id for o in objects]
    more = f" and {len(ids) - NAMED_MAX} more" if len(ids) > NAMED_MAX else ""
    return f"{len(ids)} {kind}{'s' if len(ids) != 1 else ''} ({', '.join(ids[:NAMED_MAX])}{more})"


def delete_dataset(session: Session, store: ArtifactStore, dataset_id: str, *, tenant_id: str,
                   cascade: bool = False) -> None:
    """Delete the tenant's dataset and its rows; with ``cascade`` also every version below it and every job
    using any of them (each as ``delete_job`` does, artifacts removed after the commit).

    Raises:
        NotFound: no such dataset of the tenant.
        Conflict: a job concerned is queued, running or cancelling (code ``job_active``); or, without
            ``cascade``, versions or jobs depend on the dataset (code ``dataset_in_use``, naming them).
    """
    dataset = get_dataset(session, dataset_id, tenant_id=tenant_id)
    session.refresh(dataset, with_for_update=True)
    dataset_ids, jobs = _closure(session, dataset)
    _refuse_active(jobs, f"dataset {dataset_id!r}")
    versions, users = dependents(session, [dataset.id])
    if (versions or users) and not cascade:
        jobs_, runs = [j for j in users if j.kind != "predict"], [j for j in users if j.kind == "predict"]
        parts = [p for p in (_names(versions, "version") if versions else "", _names(jobs_, "job") if jobs_ else "",
                             _names(runs, "prediction run") if runs else "") if p]
        raise Conflict(f"dataset {dataset_id!r} is used by {' and '.join(parts)}: delete those first, or delete "
                       "it with ?cascade=true to delete them too", param="cascade", code="dataset_in_use",
                       details=[{"dataset_id": v.id, "kind": "version"} for v in versions]
                       + [{"job_id": j.id, "kind": "job"} if j.kind != "predict"
                          else {"prediction_id": j.id, "kind": "prediction"} for j in users])
    try:
        keys: list[str] = []
        for job in jobs:
            keys += _delete_job_children(session, store, job)
        if jobs:
            session.execute(delete(Job).where(Job.id.in_([j.id for j in jobs])))
        session.execute(update(Dataset).where(Dataset.id.in_(dataset_ids)).values(parent_id=None))
        session.execute(delete(DatasetRow).where(DatasetRow.dataset_id.in_(dataset_ids)))
        session.execute(delete(Dataset).where(Dataset.id.in_(dataset_ids)))
    except BaseException:
        session.rollback()
        raise
    _commit_then_remove(session, store, keys)
