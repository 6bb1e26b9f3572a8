"""Statistics of a finished job's noise report, computed in the database and numpy: the histogram of
label_quality (the score the flags are decided on) split by flagged rows with the class thresholds, each
given class's estimated noise rate and the noise matrix (from the report's summary: the calibrated
confident joint), the given-vs-predicted confusion matrix and the reliability verdict. N rows; K classes."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app.models import Dataset, Job, NoiseRow

DEFAULT_BINS = 20


def _labels(session: Session, job: Job, seen: set[str]) -> list[str]:
    dataset = session.scalar(select(Dataset).where(Dataset.id == job.dataset_id, Dataset.tenant_id == job.tenant_id))
    declared = list(dataset.label_names)
    return declared + sorted(seen - set(declared))


def confusion_and_classes(session: Session, job: Job) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``(K, K)`` count matrix (rows given, columns predicted) and per given class: rows, flagged and
    the estimated noise rate (the summary's, from the confident joint)."""
    flagged = func.sum(case((NoiseRow.flagged.is_(True), 1), else_=0))
    cells = session.execute(select(NoiseRow.given_label, NoiseRow.predicted_label, func.count(), flagged)
                            .where(NoiseRow.job_id == job.id, NoiseRow.tenant_id == job.tenant_id)
                            .group_by(NoiseRow.given_label, NoiseRow.predicted_label)).all()
    labels = _labels(session, job, {c[0] for c in cells} | {c[1] for c in cells})
    where = {name: k for k, name in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    flagged_by_class = np.zeros(len(labels), dtype=np.int64)
    for given, predicted, count, n_flagged in cells:
        matrix[where[given], where[predicted]] += count
        flagged_by_class[where[given]] += n_flagged or 0
    rows = matrix.sum(axis=1)
    rates = (job.report_summary or {}).get("estimated_noise_rate_per_class") or {}
    classes = [{"label": name, "rows": int(rows[k]), "flagged": int(flagged_by_class[k]),
                "estimated_noise_rate": float(rates.get(name, 0.0))}
               for k, name in enumerate(labels)]
    return {"labels": labels, "matrix": matrix.tolist()}, classes


def histogram(session: Session, job: Job, *, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Counts per bin of label_quality over [0, 1] (``bins`` equal bins), unflagged and flagged rows apart, and
    the per-class thresholds the flags compare it with."""
    rows = session.execute(select(NoiseRow.label_quality, NoiseRow.flagged)
                           .where(NoiseRow.job_id == job.id, NoiseRow.tenant_id == job.tenant_id)).all()
    values = np.clip(np.array([r[0] for r in rows], dtype=np.float64), 0.0, 1.0)
    is_flagged = np.array([bool(r[1]) for r in rows], dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    flagged_counts, _ = np.histogram(values[is_flagged], bins=edges)
    unflagged_counts, _ = np.histogram(values[~is_flagged], bins=edges)
    thresholds = (job.report_summary or {}).get("class_thresholds") or {}
    return {"field": "label_quality", "edges": edges.round(6).tolist(), "unflagged": unflagged_counts.tolist(),
            "flagged": flagged_counts.tolist(), "thresholds": {k: float(v) for k, v in thresholds.items()}}


def report_stats(session: Session, job: Job, *, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Everything the dashboard plots about ``job``'s report (a ``ReportStatsPublic``)."""
    confusion, classes = confusion_and_classes(session, job)
    summary = job.report_summary or {}
    return {"rows": sum(c["rows"] for c in classes), "flagged": sum(c["flagged"] for c in classes),
            "flags_withheld": bool(summary.get("flags_withheld", False)),
            "estimated_noise_rate": summary.get("estimated_noise_rate"), "noise_matrix": summary.get("noise_matrix"),
            "reliability": summary.get("reliability"), "histogram": histogram(session, job, bins=bins),
            "per_class": classes, "confusion": confusion}
