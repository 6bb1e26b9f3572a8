"""Retrain in one call: a job created with ``from_job`` takes the earlier job's settings, and once both have
succeeded it is compared with it.

Inherited: ``method``, ``routed``, ``base_model``, ``clear`` and ``training`` (merged key by key under the fields
given; a warm-up that was the default for the earlier job's epoch count is derived again when the epochs
change), ``validation_dataset_id``, ``validation_fraction``, ``time_limit_s`` and ``soft_time_limit_s``. A field
given explicitly in the request (even as null) wins over the inherited one.

The comparison (``JobPublic.comparison``) is ``{"from_job_id", "before", "after", "difference"}``: ``before`` and
``after`` hold, for the earlier and the new job, those of ``COMPARED_METRICS`` that the job's final ``metrics``
has (the last epoch's ``eval_accuracy``, ``eval_macro_f1``, ``eval_loss`` on the validation dataset,
``validation_agreement`` and ``validation_gold_accuracy`` on the held-out rows, and with gold labels
``train_gold_accuracy`` and the report's grades ``noise_precision``, ``noise_recall``, ``noise_auroc``,
``true_noise_rate``, and ``flagged_fraction``) plus ``estimated_noise_rate`` from the report summary;
``difference`` is after minus before for each number both have. Note that the two jobs' held-out rows and
reports are of different datasets; only a shared ``validation_dataset_id`` makes the ``eval_*`` numbers
measure the same thing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.models import Dataset, Job
from clear_core.config import default_warmup

INHERITED = ("method", "routed", "base_model", "validation_dataset_id", "validation_fraction", "time_limit_s",
             "soft_time_limit_s")
COMPARED_METRICS = ("eval_accuracy", "eval_macro_f1", "eval_loss", "validation_agreement", "validation_gold_accuracy",
                    "train_gold_accuracy", "noise_precision", "noise_recall", "noise_auroc", "true_noise_rate",
                    "flagged_fraction")


def source_job(session: Session, job_id: str, *, tenant_id: str) -> Job:
    """The tenant's training job ``job_id`` to retrain from; ``InvalidInput`` (code ``unknown_job``) otherwise."""
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))
    if job is None or getattr(job, "kind", "train") != "train":
        raise InvalidInput(f"from_job={job_id!r} names no training job of yours", param="from_job",
                           code="unknown_job")
    return job


def _check_labels(session: Session, old: Job, dataset_id: str, tenant_id: str) -> None:
    new = session.scalar(select(Dataset.label_names).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id))
    before = session.scalar(select(Dataset.label_names).where(Dataset.id == old.dataset_id))
    if new is None or before is None:  # an unknown dataset_id: create_job answers its 404
        return
    extra = sorted(set(new) - set(before))
    if extra:
        raise InvalidInput(f"dataset {dataset_id!r} has labels {extra} that job {old.id}'s dataset "
                           f"{old.dataset_id!r} lacks (its labels: {list(before)}): a retrain needs the same labels "
                           "or a subset of them", param="dataset_id", code="incompatible_labels")


def inherit_settings(session: Session, given: dict[str, Any], *, tenant_id: str) -> dict[str, Any]:
    """A full job spec for ``create_job`` from ``given`` (a ``JobCreate`` dump of the fields the caller set:
    ``model_dump(exclude_unset=True)``, holding ``from_job``) and the settings of that earlier job.

    Raises:
        InvalidInput: ``from_job`` is not a training job of the tenant (``unknown_job``), or the dataset has a
            label the earlier job's dataset does not (``incompatible_labels``).
    """
    old = source_job(session, given["from_job"], tenant_id=tenant_id)
    _check_labels(session, old, given["dataset_id"], tenant_id)
    spec: dict[str, Any] = {name: getattr(old, name) for name in INHERITED}
    spec.update({k: v for k, v in given.items() if k in INHERITED})
    clear = {k: v for k, v in (old.clear_config or {}).items() if k not in ("method", "routed")}
    training = {k: v for k, v in (old.training_config or {}).items() if k != "validation_fraction"}
    old_epochs = training.get("epochs")
    training.update(given.get("training") or {})
    if (training.get("epochs") != old_epochs and "warmup_epochs" not in (given.get("clear") or {})
            and old_epochs is not None and clear.get("warmup_epochs") == default_warmup(old_epochs)):
        # the earlier warm-up was the default for its epoch count, not a choice: derive it again for the new one
        # (epochs 3 resolved warmup 2; a retrain with epochs 2 was refused: "warmup_epochs=2 is not below epochs=2")
        clear["warmup_epochs"] = None
    clear.update(given.get("clear") or {})
    if "validation_fraction" not in given and "validation_fraction" in (given.get("training") or {}):
        spec["validation_fraction"] = None  # the caller's training.validation_fraction decides
    spec.update(dataset_id=given["dataset_id"], from_job=old.id, clear=clear, training=training)
    return spec


def _numbers(job: Any) -> dict[str, float]:
    metrics, summary = job.metrics or {}, job.report_summary or {}
    out = {k: metrics[k] for k in COMPARED_METRICS if _is_number(metrics.get(k))}
    noise = summary.get("estimated_noise_rate", metrics.get("estimated_noise_rate"))
    if _is_number(noise):
        out["estimated_noise_rate"] = noise
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def comparison(before: Any, after: Any) -> dict[str, Any] | None:
    """``{"from_job_id", "before", "after", "difference"}`` of two succeeded jobs (see the module's docstring);
    None unless both succeeded. Each is a ``Job`` or any row with its ``id``, ``status``, ``metrics`` and
    ``report_summary``."""
    if before.status != "succeeded" or after.status != "succeeded":
        return None
    old, new = _numbers(before), _numbers(after)
    difference = {k: new[k] - old[k] for k in new if k in old}
    return {"from_job_id": before.id, "before": old, "after": new, "difference": difference}


def comparisons(session: Session, jobs: list[Job]) -> dict[str, dict[str, Any]]:
    """``{job_id: comparison}`` for those of ``jobs`` that retrained from a job and can be compared (one query)."""
    wanted = {j.from_job_id for j in jobs if j.from_job_id and j.status == "succeeded"}
    if not wanted:
        return {}
    # the four columns a comparison reads, not whole jobs (a page of jobs would load every config twice)
    sources = {j.id: j for j in session.execute(select(Job.id, Job.status, Job.metrics, Job.report_summary)
                                                .where(Job.id.in_(wanted)))}
    out = {}
    for job in jobs:
        source = sources.get(job.from_job_id or "")
        if source is not None and (found := comparison(source, job)) is not None:
            out[job.id] = found
    return out
