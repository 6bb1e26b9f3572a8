"""The noise report: every row of a run, training and held-out, ranked by how likely its given label is wrong.

Symbols: N rows (all rows given to ``train``, in their order), K classes, E' clean-probability
passes. ``label_quality`` is in [0, 1], lower = more likely mislabelled (cleanlab's
self-confidence by default); ``rank`` 1 is the row most likely mislabelled; ``flagged`` comes from
confident learning (``clear_core.confident``) and is withheld when the reliability verdict fails;
``flag_reason`` says why a row is or is not flagged; ``split`` is ``"train"`` or ``"validation"``
(held-out rows, scored out-of-sample, with no p_clean since they were never routed).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .csv_safety import csv_safe
from .estimate import NoiseEstimate


@dataclass
class NoiseReport:
    """Per-row noise estimates of one run; arrays are aligned with the rows given to ``train``.

    Attributes:
        label_names: K class names.
        given: ``(N,)`` given label indices.
        predicted: ``(N,)`` the final model's predicted indices.
        suggested: ``(N,)``; for a flagged row the most probable class other than the given one.
        suggested_confidence: ``(N,)`` probability of the suggested class, in [0, 1].
        p_clean: ``(N,)`` the last pass's p_clean (NaN for held-out rows).
        p_clean_history: ``(E', N)`` p_clean of each pass (NaN for held-out rows).
        label_quality: ``(N,)`` in [0, 1], lower = more likely wrong.
        flagged: ``(N,)`` bool.
        flag_threshold: ``(N,)`` the confident-learning threshold of each row's given class, in [0, 1].
        flag_reason: N strings.
        split: N strings, ``"train"`` or ``"validation"``.
        score: the label-quality method (cleanlab's ``self_confidence`` ...).
        estimate: the :class:`~clear_core.estimate.NoiseEstimate` (matrix, verdict, thresholds, fits).
        ids: optional N caller ids.
        pass_epochs: E' epoch numbers (0-based) at whose start each pass ran; E = after training.
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
    flag_threshold: np.ndarray
    flag_reason: list[str]
    split: list[str]
    score: str
    estimate: NoiseEstimate
    ids: list[Any] | None = None
    pass_epochs: list[int] = field(default_factory=list)
    flag_rule: str = "prune_by_noise_rate"

    @classmethod
    def from_estimate(cls, estimate: NoiseEstimate, label_names: Sequence[str], *, positions: np.ndarray,
                      score: str, flag_rule: str, ids: Sequence[Any] | None = None) -> "NoiseReport":
        """Build the report; ``positions`` ``(N,)`` gives each estimate row's place in the caller's order
        (training rows first in the estimate, as many as ``estimate.p_clean`` has, then held-out rows).

        Raises:
            ValueError: if ``positions`` is not a permutation of the estimate's rows.
        """
        n = len(estimate.predicted)
        positions = np.asarray(positions)
        if positions.shape != (n,) or not np.array_equal(np.sort(positions), np.arange(n)):
            raise ValueError(f"positions must be a permutation of 0..{n - 1}")
        order = np.argsort(positions)  # estimate row of each caller row
        check, train_rows = estimate.check, len(estimate.p_clean)
        p_hist = np.full((estimate.p_clean_history.shape[0], n), np.nan, dtype=np.float32)
        p_hist[:, :train_rows] = estimate.p_clean_history
        split = np.array(["train", "validation"], dtype=object)[(np.arange(n) >= train_rows).astype(np.int64)]
        given_all = estimate.given
        return cls(
            label_names=list(label_names), given=given_all[order], predicted=estimate.predicted[order],
            suggested=check.suggested[order], suggested_confidence=check.suggested_confidence[order],
            p_clean=p_hist[-1][order], p_clean_history=p_hist[:, order], label_quality=check.label_quality[order],
            flagged=check.flagged[order], flag_threshold=check.thresholds[given_all][order],
            flag_reason=[check.reasons[i] for i in order], split=split[order].tolist(), score=score,
            estimate=estimate, ids=list(ids) if ids is not None else None, pass_epochs=list(estimate.pass_epochs),
            flag_rule=flag_rule,
        )

    @property
    def rank(self) -> np.ndarray:
        """``(N,)`` 1-based ranks: flagged rows first, then ascending label_quality, then row index."""
        n = len(self.label_quality)
        order = np.lexsort((np.arange(n), self.label_quality, ~self.flagged))
        ranks = np.empty(n, dtype=np.int64)
        ranks[order] = np.arange(1, n + 1)
        return ranks

    def __len__(self) -> int:
        return len(self.given)

    def columns(self) -> dict[str, Any]:
        """The report's public fields (those of :meth:`to_records`) as N-long columns in row order, without a
        dict per row (one chunk of :meth:`column_chunks`).

        Returns:
            ``row_index`` ``(N,)`` int64; ``id`` N ids or None; ``given_label``, ``predicted_label``,
            ``suggested_label`` ``(N,)`` object arrays of class names (shared strings); ``suggested_confidence``,
            ``label_quality``, ``flag_threshold`` ``(N,)`` float64; ``p_clean`` ``(N,)`` float64, NaN for held-out
            rows; ``p_clean_history`` the ``(E', N)`` float32 history, NaN columns for held-out rows (their
            record's history is ``[]``); ``flagged`` ``(N,)`` bool; ``flag_reason``, ``split`` N strings;
            ``rank`` ``(N,)`` int64.
        """
        return next(self.column_chunks(max(1, len(self))))

    def column_chunks(self, chunk_rows: int) -> Iterator[dict[str, Any]]:
        """The columns of :meth:`columns`, ``chunk_rows`` rows at a time in row order (the last chunk may be
        shorter), so that a writer holds one chunk's copies at a time; ranks are computed once.

        Raises:
            ValueError: if ``chunk_rows`` < 1.
        """
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows={chunk_rows!r}: give at least 1")
        names = np.empty(len(self.label_names), dtype=object)
        names[:] = self.label_names
        ranks = self.rank
        for start in range(0, max(1, len(self)), chunk_rows):  # an empty report gives one empty chunk
            cut = slice(start, min(len(self), start + chunk_rows))
            yield {
                "row_index": np.arange(cut.start, cut.stop, dtype=np.int64),
                "id": self.ids[cut] if self.ids is not None else None,
                "given_label": names[self.given[cut]], "predicted_label": names[self.predicted[cut]],
                "suggested_label": names[self.suggested[cut]],
                "suggested_confidence": np.asarray(self.suggested_confidence[cut], dtype=np.float64),
                "p_clean": np.asarray(self.p_clean[cut], dtype=np.float64),
                "p_clean_history": self.p_clean_history[:, cut],
                "label_quality": np.asarray(self.label_quality[cut], dtype=np.float64),
                "flagged": np.asarray(self.flagged[cut], dtype=bool),
                "flag_threshold": np.asarray(self.flag_threshold[cut], dtype=np.float64),
                "flag_reason": self.flag_reason[cut], "split": self.split[cut], "rank": ranks[cut],
            }

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per row (row order) with the report's public fields (see module docstring)."""
        c = self.columns()
        history = c["p_clean_history"].T.astype(np.float64).tolist()
        return [
            {
                "row_index": i,
                "id": self.ids[i] if self.ids is not None else None,
                "given_label": c["given_label"][i],
                "predicted_label": c["predicted_label"][i],
                "suggested_label": c["suggested_label"][i],
                "suggested_confidence": float(c["suggested_confidence"][i]),
                "p_clean": None if np.isnan(c["p_clean"][i]) else float(c["p_clean"][i]),
                "p_clean_history": [] if np.isnan(c["p_clean"][i]) else history[i],
                "label_quality": float(c["label_quality"][i]),
                "flagged": bool(c["flagged"][i]),
                "flag_threshold": float(c["flag_threshold"][i]),
                "flag_reason": self.flag_reason[i],
                "split": self.split[i],
                "rank": int(c["rank"][i]),
            }
            for i in range(len(self))
        ]

    def summary(self) -> dict[str, Any]:
        """Counts, the estimated noise matrix and rates, per-class thresholds and fits, and the verdict.

        ``flagged`` equals the number of rows flagged; ``noise_matrix.joint`` is the K x K estimate of
        P(given = i, true = j) (rows given, columns true; sums to 1); ``estimated_noise_rate`` is its
        off-diagonal mass (not the flagged fraction).
        """
        est, check, names = self.estimate, self.estimate.check, self.label_names
        validation = sum(1 for s in self.split if s == "validation")
        return {
            "rows": int(len(self)),
            "train_rows": int(len(self) - validation),
            "validation_rows": int(validation),
            "flagged": int(self.flagged.sum()),
            "flagged_fraction": float(self.flagged.mean()),
            "flags_withheld": bool(check.withheld),
            "candidates": int(check.candidates.sum()),
            "flag_rule": f"confident learning (cleanlab filter_by={self.flag_rule})",
            "score": self.score,
            "probabilities": f"softmax averaged over {len(self.pass_epochs)} pass(es) (held-out rows out-of-sample)",
            "class_thresholds": {names[k]: float(t) for k, t in enumerate(check.thresholds)},
            "noise_matrix": {"labels": names, "rows": "given", "columns": "true",
                             "joint": [[float(x) for x in row] for row in check.joint]},
            "estimated_noise_rate": float(check.noise_rate),
            "estimated_noise_rate_per_class": {names[k]: float(r) for k, r in enumerate(check.noise_rate_per_class)},
            "reliability": est.reliability.to_dict(),
            "p_clean_fits": {(names[k] if k >= 0 else "all"): fit.to_dict() for k, fit in est.fits.items()},
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

