"""Noise-report summaries and rows as the service returns them since issue 12 (every row reported, a
``split`` and a ``flag_reason`` per row, the noise matrix and the reliability verdict in the summary),
for the offline client tests and the dashboard tests."""

from __future__ import annotations

import copy
from typing import Any

LABELS = ["0", "1", "2"]
ADVICE = ("train more epochs, raise learning_rate, or give a longer max_length (texts may be cut before the words "
          "that decide the label)")
JOINT = [[0.28, 0.03, 0.02], [0.02, 0.30, 0.01], [0.03, 0.01, 0.30]]  # sums to 1; off-diagonal 0.12
RELIABLE = {"reliable": True, "verdict": "reliable", "evidence": "held-out", "rows": 20, "agreement": 0.85,
            "majority_rate": 0.35, "skill": 0.77, "p_value": 1e-6, "loss_ratio": 0.4, "reasons": [], "advice": ""}
UNRELIABLE_REASONS = ["held-out agreement with the given labels 0.350 on 20 rows is not clearly above the "
                      "majority-class rate 0.350 (skill 0.00 < 0.2)",
                      "the training loss 1.090 is 99% of ln K = 1.099 (a uniform guess)"]
WARNING = ("the model has not learned the task after warm-up: " + "; ".join(UNRELIABLE_REASONS)
           + f". Try: {ADVICE}")


def summary(*, reliable: bool = True, rows: int = 60, validation_rows: int = 12, flagged: int = 9) -> dict[str, Any]:
    """A report summary: reliable with ``flagged`` flags, or not reliable with its flags withheld (0 flagged)."""
    reliability = copy.deepcopy(RELIABLE)
    if not reliable:
        reliability.update(reliable=False, verdict="not reliable", agreement=0.35, skill=0.0, p_value=0.6,
                           loss_ratio=0.99, reasons=list(UNRELIABLE_REASONS), advice=ADVICE)
        flagged = 0
    return {"rows": rows, "train_rows": rows - validation_rows, "validation_rows": validation_rows,
            "flagged": flagged, "flagged_fraction": flagged / rows, "flags_withheld": not reliable,
            "candidates": 9, "flag_rule": "confident learning (cleanlab filter_by=prune_by_noise_rate)",
            "score": "self_confidence", "probabilities": "softmax averaged over 2 pass(es)",
            "class_thresholds": {"0": 0.71, "1": 0.42, "2": 0.55},
            "noise_matrix": {"labels": LABELS, "rows": "given", "columns": "true", "joint": JOINT},
            "estimated_noise_rate": 0.12, "estimated_noise_rate_per_class": {"0": 0.152, "1": 0.091, "2": 0.118},
            "reliability": reliability,
            "p_clean_fits": {k: {"components": 2, "noisy_weight": 0.1, "ashman_d": 2.5, "bic_gain": 12.0,
                                 "rows": 16, "borrowed": False} for k in LABELS}}


def reason(predicted: str, given: str, *, flagged: bool, withheld: bool = False) -> str:
    """A ``flag_reason`` in the service's words."""
    text = (f"predicted '{predicted}' with 0.93 (class threshold 0.71); given '{given}' has 0.05 "
            "(class threshold 0.42)")
    if withheld:
        return f"flag withheld (the report is not reliable): {text}"
    return text if flagged else f"{text}: kept"


def report_rows(n: int = 6, *, flagged: int = 2, withheld: bool = False) -> list[dict[str, Any]]:
    """``n`` report rows in rank order: the first ``flagged`` flagged (none when ``withheld``); every third
    row a validation row (no p_clean)."""
    rows = []
    for i in range(n):
        is_flagged = i < flagged and not withheld
        split = "validation" if i % 3 == 2 else "train"
        rows.append({"rank": i + 1, "row_index": 10 + i, "id": f"r{i}", "text": f"row {i} about markets " * 4,
                     "text_pair": None, "given_label": "1", "predicted_label": "0", "suggested_label": "0",
                     "suggested_confidence": 0.93, "p_clean": None if split == "validation" else 0.2,
                     "p_clean_history": [] if split == "validation" else [0.3, 0.2],
                     "label_quality": round(0.05 + 0.1 * i, 2), "flagged": is_flagged, "flag_threshold": 0.42,
                     "flag_reason": reason("0", "1", flagged=is_flagged, withheld=withheld and i < flagged),
                     "split": split})
    return rows


EPOCHS = [{"epoch": 1, "phase": "warmup", "train_loss": 1.05, "validation_agreement": 0.35,
           "validation_majority_rate": 0.35},
          {"epoch": 2, "phase": "routed", "train_loss": 0.95, "validation_agreement": 0.40,
           "validation_majority_rate": 0.35, "last_pass_p_clean_mean": 0.62, "last_pass_p_clean_below_half": 0.3,
           "last_pass_mean_loss": 1.01, "last_pass_p_clean_auroc": 0.71}]


def db_rows(job_id: str, tenant_id: str, given: list[str], *, reliable: bool) -> list[dict[str, Any]]:
    """``noise_rows`` of a job: row i has label_quality (7i mod N)/N, every fifth a validation row (no p_clean),
    every fourth flagged (withheld, with a reason saying so, when not ``reliable``); ranked flagged first."""
    n, rows = len(given), []
    for i in range(n):
        quality, split, candidate = (i * 7 % n) / n, "validation" if i % 5 == 4 else "train", i % 4 == 0
        predicted = LABELS[(LABELS.index(given[i]) + 1) % len(LABELS)] if candidate else given[i]
        rows.append(dict(job_id=job_id, tenant_id=tenant_id, row_index=i, row_id=f"r{i}", given_label=given[i],
                         predicted_label=predicted, suggested_label=predicted, suggested_confidence=0.9,
                         p_clean=None if split == "validation" else quality,
                         p_clean_history=[] if split == "validation" else [0.5, quality], label_quality=quality,
                         flagged=candidate and reliable, flag_threshold=0.42, split=split,
                         flag_reason=reason(predicted, given[i], flagged=candidate and reliable,
                                            withheld=candidate and not reliable)))
    order = sorted(rows, key=lambda r: (not r["flagged"], r["label_quality"], r["row_index"]))
    for rank, row in enumerate(order, start=1):
        row["rank"] = rank
    return rows


def finish_job(database_url: str, job_id: str, tenant_id: str, given: list[str], *,
               reliable: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Finish a queued job (nobody runs it) as a worker would since issue 12: two epoch events, when not
    ``reliable`` two warning events, the report rows and the summary; returns (rows, summary)."""
    from sqlalchemy import insert

    from app.db import session_factory
    from app.models import NoiseRow
    from app.services.transitions import add_event, transition

    rows = db_rows(job_id, tenant_id, given, reliable=reliable)
    report = summary(reliable=reliable, rows=len(rows), validation_rows=sum(r["split"] == "validation" for r in rows),
                     flagged=sum(r["flagged"] for r in rows))
    with session_factory(database_url)() as session:
        transition(session, job_id, ("queued",), "running")
        for metrics in EPOCHS:
            add_event(session, job_id, "epoch", message=f"epoch {metrics['epoch']} of 2", data=metrics)
            if not reliable and metrics["epoch"] == 1:
                add_event(session, job_id, "warning", message=WARNING,
                          data={"stage": "after_warmup", "reliability": report["reliability"]})
        if not reliable:
            add_event(session, job_id, "warning", message=WARNING.replace("after warm-up", "at the end of training"),
                      data={"stage": "end", "reliability": report["reliability"]})
        session.execute(insert(NoiseRow), rows)
        metrics = dict(EPOCHS[-1], estimated_noise_rate=report["estimated_noise_rate"], report_reliable=reliable,
                       flagged_fraction=report["flagged_fraction"], true_noise_rate=0.2,
                       warnings=[] if reliable else [WARNING])
        transition(session, job_id, ("running",), "succeeded", report_summary=report, progress=1.0, epoch=2,
                   global_step=8, max_steps=8, metrics=metrics)
    return rows, report
