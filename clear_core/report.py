"""The noise report: every training row ranked by how likely its given label is wrong.

Symbols: N training rows, K classes, E' clean-probability passes. ``label_quality`` is in
[0, 1], lower = more likely mislabelled (the direction of cleanlab's self-confidence);
``rank`` 1 is the row most likely mislabelled; ``flagged`` is ``label_quality < flag_threshold``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .csv_safety import csv_safe
from .noise import NoiseTracker, softmax


@dataclass
class NoiseReport:
    """Per-row noise estimates of one training run; arrays are aligned with the training rows.

    Attributes:
        label_names: K class names.
        given: ``(N,)`` given label indices.
        predicted: ``(N,)`` the final model's predicted indices.
        suggested: ``(N,)`` argmax of the softmax averaged over the passes (training dynamics).
        suggested_confidence: ``(N,)`` that averaged probability, in [0, 1].
        p_clean: ``(N,)`` the last pass's p_clean, in [0, 1].
        p_clean_history: ``(E', N)`` p_clean of each pass.
        label_quality: ``(N,)`` in [0, 1], lower = more likely wrong.
        flagged: ``(N,)`` bool, ``label_quality < flag_threshold``.
        flag_threshold: the threshold in (0, 1).
        score: the rule that produced label_quality (``ClearConfig.report_score``).
        ids: optional N caller ids.
        pass_epochs: E' epoch numbers (0-based) at whose start each pass ran; E = after training.
        mean_loss: ``(N,)`` the given label's cross-entropy averaged over the passes (>= 0),
            which breaks ties of label_quality in ``rank`` (p_clean saturates at 0 and 1).
    """

    label_names: list[str]
    given: np.ndarray
    predicted: np.ndarray
    suggested: np.ndarray
    suggested_confidence: np.ndarray
    p_clean: np.ndarray
    p_clean_history: np.ndarray
    label_quality: np.ndarray
    flagged: np.ndarray
    flag_threshold: float
    score: str
    ids: list[Any] | None = None
    pass_epochs: list[int] | None = None
    mean_loss: np.ndarray | None = None

    @classmethod
    def from_tracker(
        cls,
        tracker: NoiseTracker,
        final_logits: np.ndarray,
        label_names: Sequence[str],
        *,
        score: str,
        flag_threshold: float,
        ids: Sequence[Any] | None = None,
    ) -> "NoiseReport":
        """Build the report from the dynamics and the final model's logits ``(N, K)``."""
        quality = np.clip(tracker.score(score), 0.0, 1.0)
        mean_probs = tracker.prob_sum / len(tracker.p_clean_history)
        return cls(
            label_names=list(label_names),
            given=tracker.given.copy(),
            predicted=softmax(final_logits).argmax(axis=1),
            suggested=mean_probs.argmax(axis=1),
            suggested_confidence=mean_probs.max(axis=1),
            p_clean=tracker.p_clean_history[-1].copy(),
            p_clean_history=np.stack(tracker.p_clean_history),
            label_quality=quality,
            flagged=quality < flag_threshold,
            flag_threshold=flag_threshold,
            score=score,
            ids=list(ids) if ids is not None else None,
            pass_epochs=list(tracker.epochs),
            mean_loss=np.mean(tracker.loss_history, axis=0),
        )

    @property
    def rank(self) -> np.ndarray:
        """``(N,)`` 1-based ranks: ascending label_quality, ties by larger mean loss, then row index."""
        n = len(self.label_quality)
        loss = self.mean_loss if self.mean_loss is not None else np.zeros(n)
        order = np.lexsort((np.arange(n), -loss, self.label_quality))
        ranks = np.empty(len(order), dtype=np.int64)
        ranks[order] = np.arange(1, len(order) + 1)
        return ranks

    def __len__(self) -> int:
        return len(self.given)

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per row (row order) with the report's public fields (see module docstring)."""
        names, ranks = self.label_names, self.rank
        return [
            {
                "row_index": i,
                "id": self.ids[i] if self.ids is not None else None,
                "given_label": names[self.given[i]],
                "predicted_label": names[self.predicted[i]],
                "suggested_label": names[self.suggested[i]],
                "suggested_confidence": float(self.suggested_confidence[i]),
                "p_clean": float(self.p_clean[i]),
                "p_clean_history": [float(x) for x in self.p_clean_history[:, i]],
                "label_quality": float(self.label_quality[i]),
                "flagged": bool(self.flagged[i]),
                "flag_threshold": float(self.flag_threshold),
                "rank": int(ranks[i]),
            }
            for i in range(len(self))
        ]

    def summary(self) -> dict[str, Any]:
        """Counts: rows, flagged (== rows flagged), threshold, score, estimated noise rate per given class."""
        per_class = {}
        for k, name in enumerate(self.label_names):
            rows = self.given == k
            per_class[name] = float(self.flagged[rows].mean()) if rows.any() else 0.0
        return {
            "rows": int(len(self)),
            "flagged": int(self.flagged.sum()),
            "flag_threshold": float(self.flag_threshold),
            "score": self.score,
            "estimated_noise_rate": float(self.flagged.mean()),
            "estimated_noise_rate_per_class": per_class,
        }

    def write_csv(self, path: str | Path) -> Path:
        """Write the report sorted by rank to a CSV file (history as ';'-joined floats).

        Text cells that a spreadsheet would run as a formula (leading ``= + - @``, tab, CR)
        are prefixed with ``'`` (OWASP CSV injection guidance).
        """
        records = sorted(self.to_records(), key=lambda r: r["rank"])
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(records[0]))
            writer.writeheader()
            for rec in records:
                rec = {k: csv_safe(v) for k, v in rec.items()}
                rec["p_clean_history"] = ";".join(f"{x:.4f}" for x in rec["p_clean_history"])
                writer.writerow(rec)
        return path

