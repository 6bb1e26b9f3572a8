"""A finished job written straight to the database (no training): per-epoch events, a noise report
with known counts, and timestamps, for the tests of the live, stats, dashboard and metrics routes."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert

from app.db import session_factory
from app.models import NoiseRow, utcnow
from app.services.transitions import add_event, transition
from tests.service.conftest import TENANT_A
from tests.service.helpers import toy_frame, upload_frame

EPOCHS = [{"epoch": 1, "phase": "warmup", "train_loss": 1.0, "eval_loss": 0.9, "eval_accuracy": 0.6},
          {"epoch": 2, "phase": "routed", "train_loss": 0.7, "eval_loss": 0.8, "eval_accuracy": 0.7}]


def noise_rows(job_id: str, labels: list[str], n: int, tenant_id: str = TENANT_A) -> list[dict]:
    """n report rows of the tenant's job: row i has p_clean = label_quality = (7i mod n)/n, predicted i mod 3,
    every third flagged."""
    rows = [dict(job_id=job_id, tenant_id=tenant_id, row_index=i, row_id=f"r{i}", given_label=labels[i],
                 predicted_label=str(i % 3),
                 suggested_label=str(i % 3), suggested_confidence=0.9, p_clean=(i * 7 % n) / n,
                 p_clean_history=[0.5, (i * 7 % n) / n], label_quality=(i * 7 % n) / n, flagged=i % 3 == 0,
                 flag_threshold=0.5, rank=0) for i in range(n)]
    for rank, row in enumerate(sorted(rows, key=lambda r: (r["label_quality"], r["row_index"])), start=1):
        row["rank"] = rank
    return rows


def make_finished_job(client, settings, n: int = 30, tenant_id: str = TENANT_A) -> tuple[str, list[dict]]:
    """Upload a toy dataset, create a job, and finish it with two epoch events and an n-row report, with
    ``client`` (whose key is of ``tenant_id``); returns the job id and its report rows."""
    frame = toy_frame(n)
    dataset = upload_frame(client, frame)
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert",
                                           "training": {"epochs": 2}}).json()["id"]
    rows = noise_rows(job_id, [str(v) for v in frame["label"]], n, tenant_id)
    summary = {"rows": n, "flagged": sum(r["flagged"] for r in rows), "flags_withheld": False,
               "class_thresholds": {"0": 0.4, "1": 0.5, "2": 0.6}, "estimated_noise_rate": 0.1,
               "estimated_noise_rate_per_class": {"0": 0.1, "1": 0.2, "2": 0.0},
               "noise_matrix": {"labels": ["0", "1", "2"], "rows": "given", "columns": "true",
                                "joint": [[0.3, 0.05, 0.0], [0.0, 0.3, 0.05], [0.0, 0.0, 0.3]]},
               "reliability": {"reliable": True, "verdict": "reliable", "reasons": [], "advice": ""}}
    started = utcnow()
    with session_factory(settings.database_url)() as session:
        transition(session, job_id, ("queued",), "running", started_at=started)
        for metrics in EPOCHS:
            add_event(session, job_id, "epoch", message=f"epoch {metrics['epoch']} of 2", data=metrics)
        session.execute(insert(NoiseRow), rows)
        transition(session, job_id, ("running",), "succeeded", report_summary=summary, progress=1.0, epoch=2,
                   global_step=8, max_steps=8, metrics=EPOCHS[-1], finished_at=started + timedelta(seconds=42))
    return job_id, rows
