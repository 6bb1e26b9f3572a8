"""One attempt of a prediction run (a ``jobs`` row of kind ``predict``, see ``app.services.predictions``),
claimed and leased by ``worker.pipeline.execute_job`` exactly as a training job is: load the model job's
adapter from the artifact store, predict every row in batches (progress and a cancel check after each), run
the noise report's label check on the probabilities when the rows carry labels, then write every row and
move the run to ``succeeded`` in one transaction fenced by the attempt, replacing whatever rows an earlier
attempt left. Outcomes are the pipeline's: succeeded, failed, cancelled, lost (the lease was taken away:
nothing written), stopped (the worker is stopping: queued again after the current batch, to start over), or a
transient fault that gives the run back to the queue. Its files live in an attempt folder (``worker.scratch``)."""

from __future__ import annotations

import json
import logging
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from clear_core import load_adapter, predict_proba
from clear_core.confident import check_labels
from clear_core.trainer import pick_device
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from app.faults import retry_transient
from app.models import DatasetRow, Job, PredictionRow, utcnow
from app.services.leases import ACTIVE
from app.services.transitions import transition
from worker.pipeline import Attempt
from worker.scratch import attempt_folder
from worker.shutdown import WorkerStopping, stop_requested

logger = logging.getLogger(__name__)
CHUNK_ROWS = 512  # rows per progress write and cancel check
INSERT_BATCH = 5000  # rows per bulk insert (SQLite)
COPY_CHUNK_ROWS = 50_000  # rows rendered to CSV per COPY write (Postgres): bounds the text held at once
LOAD_CHUNK_ROWS = 20_000  # dataset rows fetched per round trip
FLAG_RULE, QUALITY = "prune_by_noise_rate", "self_confidence"  # the noise report's defaults (ClearConfig)


class RunCancelled(Exception):
    """The run was asked to stop (its status became ``cancelling``)."""


class RunLost(Exception):
    """Another attempt or the reaper holds the run now."""


@dataclass
class PredictionInputs:
    """The rows of a run: N texts (and text pairs), their ids, row indices and given labels (or None)."""

    row_indices: list[int]
    row_ids: list[str | None]
    texts: list[str]
    text_pairs: list[str] | None
    labels: list[str] | None


def _from_rows(row_indices, row_ids, texts, pairs, labels) -> PredictionInputs:
    has_pair = any(p is not None for p in pairs)
    has_label = any(y is not None for y in labels)
    return PredictionInputs(list(row_indices), list(row_ids), list(texts), list(pairs) if has_pair else None,
                            list(labels) if has_label else None)


def load_prediction_inputs(session: Session, run: Job, store, tmp: Path) -> PredictionInputs:
    """A run's rows: the dataset's (its labels are the given labels, unless the run was created with
    ``label_check=false``) or the uploaded file's validated rows.

    Raises:
        ValueError: the uploaded input is no longer in the artifact store.
    """
    if run.dataset_id:
        labelled = (run.training_config or {}).get("labelled", True)
        columns = [DatasetRow.row_index, DatasetRow.row_id, DatasetRow.text, DatasetRow.text_pair, DatasetRow.label]
        query = (select(*columns[:5 if labelled else 4]).where(DatasetRow.dataset_id == run.dataset_id)
                 .order_by(DatasetRow.row_index).execution_options(yield_per=LOAD_CHUNK_ROWS))
        parts: list[list] = [[] for _ in range(5 if labelled else 4)]
        for chunk in session.execute(query).partitions():  # streamed: no row tuple kept per row
            for part, values in zip(parts, zip(*chunk)):
                part.extend(values)
        if not parts[0]:
            return PredictionInputs([], [], [], None, None)
        return _from_rows(*parts, *([] if labelled else [[None] * len(parts[0])]))
    if not run.input_uri or not store.exists(run.input_uri):
        raise ValueError(f"the uploaded input of prediction run {run.id} is gone from the artifact store: upload the "
                         "file again in a new prediction")
    import pyarrow.parquet as pq

    local = tmp / "input.parquet"
    store.get_file(run.input_uri, str(local))
    table = pq.read_table(local).to_pydict()
    return _from_rows(table["row_index"], table["row_id"], table["text"], table["text_pair"], table["label"])


def summarise(labels: list[str], probs: np.ndarray, given: list[str] | None, check) -> dict[str, Any]:
    """The run's summary (see ``PredictionPublic``): counts, mean confidence and, with labels, the label check's
    flag counts, thresholds and estimated noise matrix and rates."""
    predicted = probs.argmax(axis=1)
    counts = Counter(int(k) for k in predicted)
    summary: dict[str, Any] = {
        "rows": int(len(probs)), "labels": list(labels), "labelled": given is not None,
        "predicted_histogram": {name: counts.get(k, 0) for k, name in enumerate(labels)},
        "mean_confidence": float(probs.max(axis=1).mean()),
    }
    if given is None:
        return summary
    given_counts = Counter(given)
    flagged_per_class = Counter(g for g, f in zip(given, check.flagged) if f)
    summary.update({
        "given_histogram": {name: given_counts.get(name, 0) for name in labels},
        "agreement": float(np.mean([labels[k] == g for k, g in zip(predicted, given)])),
        "flagged": int(check.flagged.sum()), "flagged_fraction": float(check.flagged.mean()),
        "flagged_per_class": {name: flagged_per_class.get(name, 0) for name in labels},
        "flag_rule": f"confident learning (cleanlab filter_by={FLAG_RULE}) on the model's probabilities",
        "score": QUALITY,
        "class_thresholds": {name: float(t) for name, t in zip(labels, check.thresholds)},
        "noise_matrix": {"labels": list(labels), "rows": "given", "columns": "true",
                         "joint": [[float(x) for x in row] for row in check.joint]},
        "estimated_noise_rate": float(check.noise_rate),
        "estimated_noise_rate_per_class": {name: float(r) for name, r in zip(labels, check.noise_rate_per_class)},
    })
    return summary


@dataclass
class PredictionColumns:
    """A run's ``prediction_rows`` in columns, N rows in row order (no dict per row: a million rows stay arrays and
    the lists of texts the inputs already hold). The label-check columns are None for a run without labels.

    Attributes:
        row_index: ``(N,)`` int64, the rows' indices in the input.
        row_id, text, text_pair: the inputs' lists (``text_pair`` None when no row has one).
        labels: the model's K class names; ``predicted`` ``(N,)`` int64 indices into them.
        probabilities: ``(N, K)`` float, each row summing to 1, in ``labels`` order.
        given_label: the N given labels, or None.
        flagged: ``(N,)`` bool; ``suggested`` ``(N,)`` int64 (class index); ``suggested_confidence`` and
            ``label_quality`` ``(N,)`` float in [0, 1]; ``flag_reason`` N strings.
    """

    row_index: np.ndarray
    row_id: list[str | None]
    text: list[str]
    text_pair: list[str | None] | None
    labels: list[str]
    predicted: np.ndarray
    probabilities: np.ndarray
    given_label: list[str] | None = None
    flagged: np.ndarray | None = None
    suggested: np.ndarray | None = None
    suggested_confidence: np.ndarray | None = None
    label_quality: np.ndarray | None = None
    flag_reason: list[str] | None = None

    def __len__(self) -> int:
        return len(self.row_index)


def prediction_columns(inputs: PredictionInputs, labels: list[str], probs: np.ndarray, check) -> PredictionColumns:
    """The columns of a run's rows from its inputs, the model's ``(N, K)`` probabilities and, for labelled rows, the
    label check (``clear_core.confident.check_labels``; None without labels)."""
    columns = PredictionColumns(np.asarray(inputs.row_indices, dtype=np.int64), inputs.row_ids, inputs.texts,
                                inputs.text_pairs, list(labels), probs.argmax(axis=1).astype(np.int64), probs)
    if check is not None:
        columns.given_label = inputs.labels
        columns.flagged = np.asarray(check.flagged, dtype=bool).copy()
        columns.suggested = np.asarray(check.suggested, dtype=np.int64)
        columns.suggested_confidence = np.asarray(check.suggested_confidence, dtype=np.float64)
        columns.label_quality = np.asarray(check.label_quality, dtype=np.float64)
        columns.flag_reason = list(check.reasons)
    return columns


def withhold_if_unreliable(summary: dict[str, Any], columns: PredictionColumns, model_summary: dict[str, Any] | None,
                           model_clear: dict[str, Any] | None) -> bool:
    """Carry the trained model's own reliability verdict into a labelled run, and withhold its flags when that
    verdict was "not reliable" (as the model's noise report withheld its own; ``clear.flag_when_unreliable``
    of the job keeps them): a model that did not learn would flag rows at random. ``summary`` gets
    ``model_reliability`` and ``flags_withheld``; withheld rows keep their suggestion and label_quality but are
    not flagged, and their ``flag_reason`` says why (``columns`` is changed in place). Returns whether the flags
    were withheld."""
    reliability = (model_summary or {}).get("reliability") or {}
    summary["model_reliability"] = {"verdict": reliability.get("verdict"), "reasons": reliability.get("reasons", [])}
    withheld = reliability.get("verdict") == "not reliable" and not (model_clear or {}).get("flag_when_unreliable")
    summary["flags_withheld"] = withheld
    if not withheld:
        return False
    summary["candidates"] = summary["flagged"]
    summary["flagged"], summary["flagged_fraction"] = 0, 0.0
    summary["flagged_per_class"] = {name: 0 for name in summary["flagged_per_class"]}
    why = ("not flagged: the model's own noise report was not reliable ("
           + "; ".join(reliability.get("reasons") or ["see the job's report"]) + "), so its label check is not either")
    columns.flagged[:] = False
    columns.flag_reason = [why] * len(columns)
    return True


# prediction_rows in COPY order (run_id and tenant_id are the run's)
ROW_COLUMNS = ("row_index", "row_id", "text", "text_pair", "given_label", "predicted_label", "probabilities",
               "flagged", "suggested_label", "suggested_confidence", "label_quality", "flag_reason")


def _chunk(columns: PredictionColumns, start: int, end: int) -> dict[str, Any]:
    """Rows ``start:end`` as Python values per column, as the ORM would store them (the probabilities as the
    floats of a JSON list; label-check columns None for an unlabelled run)."""
    cut, n = slice(start, end), end - start
    names = columns.labels
    labelled = columns.given_label is not None
    return {
        "row_index": columns.row_index[cut].tolist(), "row_id": columns.row_id[cut], "text": columns.text[cut],
        "text_pair": columns.text_pair[cut] if columns.text_pair is not None else [None] * n,
        "given_label": columns.given_label[cut] if labelled else [None] * n,
        "predicted_label": [names[k] for k in columns.predicted[cut].tolist()],
        "probabilities": columns.probabilities[cut].astype(np.float64).tolist(),
        "flagged": columns.flagged[cut].tolist() if labelled else [None] * n,
        "suggested_label": [names[k] for k in columns.suggested[cut].tolist()] if labelled else [None] * n,
        "suggested_confidence": columns.suggested_confidence[cut].tolist() if labelled else [None] * n,
        "label_quality": columns.label_quality[cut].tolist() if labelled else [None] * n,
        "flag_reason": columns.flag_reason[cut] if labelled else [None] * n,
    }


def _copy(session: Session, run_id: str, tenant_id: str, columns: PredictionColumns) -> None:
    """COPY the rows in CSV (pyarrow renders each chunk of ``COPY_CHUNK_ROWS``) on the session's connection, so they
    commit or roll back with it."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    names = ", ".join(("run_id", "tenant_id") + ROW_COLUMNS)
    sql = f"COPY {PredictionRow.__tablename__} ({names}) FROM STDIN WITH (FORMAT csv)"
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    types = {"row_index": pa.int64(), "flagged": pa.bool_(), "suggested_confidence": pa.float64(),
             "label_quality": pa.float64()}
    raw = session.connection().connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(sql) as copy:
        for start in range(0, len(columns), COPY_CHUNK_ROWS):
            chunk = _chunk(columns, start, min(len(columns), start + COPY_CHUNK_ROWS))
            chunk["probabilities"] = [json.dumps(p) for p in chunk["probabilities"]]  # what the JSON column stores
            size = len(chunk["row_index"])
            table = pa.table({"run_id": pa.repeat(run_id, size), "tenant_id": pa.repeat(tenant_id, size),
                              **{name: pa.array(chunk[name], types.get(name, pa.string())) for name in ROW_COLUMNS}})
            sink = pa.BufferOutputStream()
            pa_csv.write_csv(table, sink, options)
            copy.write(memoryview(sink.getvalue()))


def _insert(session: Session, run_id: str, tenant_id: str, columns: PredictionColumns) -> None:
    """Bulk inserts of ``INSERT_BATCH`` rows (SQLite), their parameter dicts built one batch at a time."""
    for start in range(0, len(columns), INSERT_BATCH):
        chunk = _chunk(columns, start, min(len(columns), start + INSERT_BATCH))
        records = [{"run_id": run_id, "tenant_id": tenant_id, **dict(zip(ROW_COLUMNS, values))}
                   for values in zip(*(chunk[name] for name in ROW_COLUMNS))]
        session.execute(insert(PredictionRow), records)


def write_rows(session: Session, run_id: str, attempt: int, columns: PredictionColumns, summary: dict) -> bool:
    """In one transaction: lock the run while ``attempt`` holds it, delete any rows an earlier attempt wrote,
    write ``columns`` (``COPY ... FROM STDIN`` on Postgres, bulk inserts on SQLite, a chunk at a time), and move
    the run to ``succeeded``; all or nothing (a row the database refuses rolls every row back and raises).
    Returns False (nothing written) when the attempt no longer holds the run."""
    held = session.execute(select(Job.tenant_id).where(Job.id == run_id, Job.attempt == attempt,
                                                       Job.status.in_(ACTIVE)).with_for_update()).first()
    if held is None:
        session.rollback()
        return False
    try:
        session.execute(delete(PredictionRow).where(PredictionRow.run_id == run_id))
        write = _copy if session.get_bind().dialect.name == "postgresql" else _insert
        write(session, run_id, held.tenant_id, columns)
    except BaseException:
        session.rollback()
        raise
    return transition(session, run_id, ACTIVE, "succeeded", on_attempt=attempt, progress=1.0,
                      report_summary=summary, finished_at=utcnow(), lease_owner=None,
                      message=f"{len(columns)} rows predicted", event_data={"rows": len(columns)})


class PredictionAttempt(Attempt):
    """One claimed attempt of a prediction run; ``run()`` (inherited) maps every failure to the run's end state."""

    def _train_and_finish(self) -> str:
        run = self.job
        try:
            with attempt_folder(self.settings.scratch("attempts"), self.id) as tmp:
                with self.factory() as session:
                    inputs = load_prediction_inputs(session, run, self.store, tmp)
                    adapter_uri, model_summary, model_clear = session.execute(
                        select(Job.adapter_uri, Job.report_summary, Job.clear_config)
                        .where(Job.id == run.model_job_id)).one()
                if not inputs.texts:
                    raise ValueError("the input has no rows to predict")
                model = self._load_model(adapter_uri, tmp)
                labels = list(model.label_names)
                if inputs.labels is not None:
                    unknown = sorted(set(inputs.labels) - set(labels))
                    if unknown:
                        raise ValueError(f"labels {unknown[:10]} are not classes of the model (its classes are "
                                         f"{labels[:50]}): predict without labels or with labels of those classes")
                probs = self._predict(model, inputs, int((run.training_config or {}).get("batch_size") or 64))
            del model
        except RunCancelled:
            return self._cancelled()
        except RunLost:
            return self._lost()
        check = None
        if inputs.labels is not None:
            index = {name: k for k, name in enumerate(labels)}
            check = check_labels(np.array([index[y] for y in inputs.labels], dtype=np.int64), probs, labels,
                                 filter_by=FLAG_RULE, quality=QUALITY, source="the model's probabilities")
        summary = summarise(labels, probs, inputs.labels, check)
        columns = prediction_columns(inputs, labels, probs, check)
        if check is not None:
            withhold_if_unreliable(summary, columns, model_summary, model_clear)

        def store_rows() -> bool:
            with self.factory() as session:
                return write_rows(session, self.id, self.number, columns, summary)

        if not retry_transient(store_rows):
            return self._lost()
        self._drop_input()
        return "succeeded"

    def _load_model(self, adapter_uri: str | None, tmp: Path):
        if not adapter_uri or not self.store.exists(adapter_uri):
            raise ValueError(f"the adapter of job {self.job.model_job_id} is not in the artifact store")
        archive, folder = tmp / "adapter.tar.gz", tmp / "adapter"
        self.store.get_file(adapter_uri, str(archive))
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
        return load_adapter(folder, model_path=self.settings.base_model_path(self.job.base_model),
                            device=pick_device(self.settings.worker_device))

    def _predict(self, model, inputs: PredictionInputs, batch_size: int) -> np.ndarray:
        n, parts = len(inputs.texts), []
        for start in range(0, n, CHUNK_ROWS):
            end = min(n, start + CHUNK_ROWS)
            pairs = inputs.text_pairs[start:end] if inputs.text_pairs is not None else None
            parts.append(predict_proba(model, inputs.texts[start:end], pairs, batch_size=batch_size))
            status = self.lease.renew(progress=0.99 * end / n, global_step=end, max_steps=n, phase="predict")
            if status is None:
                raise RunLost()
            if status == "cancelling":
                raise RunCancelled()
            if stop_requested() and end < n:  # no checkpoint: the next attempt predicts from the first row again
                raise WorkerStopping(end)
        return np.concatenate(parts)

    def _stopped(self, step: int) -> str:
        """A cancel that came before the worker stopped (see ``Attempt._requeue_stopped``)."""
        return self._cancelled()

    def _cancelled(self) -> str:
        done = retry_transient(lambda: self._end("cancelled", "stopped on request"))
        if done:
            self._drop_input()
        return "cancelled" if done else self._lost()

    def _fail(self, code: str, message: str) -> str:
        outcome = super()._fail(code, message)
        if outcome == "failed":
            self._drop_input()
        return outcome

    def _drop_input(self) -> None:
        """The uploaded input is needed no more once the run has ended (best effort)."""
        if self.job.input_uri:
            try:
                self.store.delete(self.job.input_uri)
            except OSError:
                logger.warning("could not delete the input of prediction run %s", self.id, exc_info=True)
