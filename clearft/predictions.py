"""``client.predictions``: use a trained job's adapter on a dataset or a file (a prediction run on a worker),
follow the run, and read its rows (predicted label, class probabilities and, for labelled rows, the label
check) as a DataFrame or save them as CSV/JSONL."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from clearft.datasets import collect_pages, file_format
from clearft.errors import UsageError, WaitTimeout
from clearft.models import FINAL_STATUSES, JobError

if TYPE_CHECKING:
    import pandas as pd

    from clearft.client import Client


class Prediction(BaseModel):
    """A prediction run: ``status``, ``progress`` (0-1), its input (``dataset_id`` or ``input_name``), ``row_count``,
    whether the rows are ``labelled``, and once succeeded its ``summary`` (``labels``, ``predicted_histogram``,
    and with labels ``flagged``, ``noise_matrix``, ``estimated_noise_rate`` ...)."""

    model_config = ConfigDict(extra="allow")
    id: str
    job_id: str
    dataset_id: str | None = None
    input_name: str | None = None
    labelled: bool = False
    row_count: int | None = None
    status: str
    attempt: int = 0
    progress: float = 0.0
    summary: dict[str, Any] | None = None
    error: JobError | None = None

    @property
    def is_final(self) -> bool:
        """Whether the run has ended (succeeded, failed or cancelled)."""
        return self.status in FINAL_STATUSES


def _query(filters: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in filters.items() if v is not None}


class PredictionsAPI:
    """Prediction runs of the service."""

    def __init__(self, client: "Client") -> None:
        self.client = client

    def predict(self, job_id: str, *, dataset_id: str | None = None, file: str | Path | IO[bytes] | None = None,
                text_column: str | None = None, text_pair_column: str | None = None, label_column: str | None = None,
                id_column: str | None = None, format: str | None = None, filename: str | None = None,
                batch_size: int | None = None, label_check: bool = True) -> Prediction:
        """Queue a run of job ``job_id``'s model on one of your datasets (``dataset_id``: its labels are checked)
        or on a CSV/JSONL/Parquet ``file`` (a path or an open binary file; ``label_column`` optional: without it
        a column ``label`` is checked if the file has one; ``label_check=False`` predicts only). Give exactly one of
        ``dataset_id`` and ``file``.

        Raises:
            UsageError: both or neither input given, a path that is not a file, a file name the service cannot
                read (without ``format``); nothing is sent.
            ApiError: the service refused (409 job not succeeded, 422 bad rows or unknown labels, 429 quota).
        """
        if (dataset_id is None) == (file is None):
            raise UsageError("give either dataset_id= (one of your datasets) or file= (a CSV, JSONL or Parquet file)")
        path = f"/v1/jobs/{job_id}/predictions"
        if dataset_id is not None:
            body = {"dataset_id": dataset_id, **({"batch_size": batch_size} if batch_size is not None else {}),
                    **({} if label_check else {"label_check": False})}
            return Prediction.model_validate(self.client.request("POST", path, json=body).json())
        form = {"text_column": text_column, "text_pair_column": text_pair_column, "label_column": label_column,
                "id_column": id_column, "format": format,
                "batch_size": str(batch_size) if batch_size is not None else None,
                "label_check": None if label_check else "false"}
        form = {k: v for k, v in form.items() if v is not None}
        if isinstance(file, (str, Path)):
            local = Path(file).expanduser()
            if not local.is_file():
                raise UsageError(f"no such file: {str(local)!r}; check the path")
            name = filename or local.name
            if format is None:
                file_format(name)
            with local.open("rb") as fh:
                response = self.client.request("POST", path, files={"file": (Path(name).name, fh)}, data=form)
        else:
            name = filename or str(getattr(file, "name", "upload"))
            if format is None:
                file_format(name)
            response = self.client.request("POST", path, files={"file": (Path(name).name, file)}, data=form)
        return Prediction.model_validate(response.json())

    def get(self, prediction_id: str) -> Prediction:
        """One run as it stands now."""
        return Prediction.model_validate(self.client.request("GET", f"/v1/predictions/{prediction_id}").json())

    def list(self, job_id: str, *, limit: int = 50) -> list[Prediction]:
        """Up to ``limit`` runs of job ``job_id``, newest first."""
        return [Prediction.model_validate(p)
                for p in collect_pages(self.client, f"/v1/jobs/{job_id}/predictions", limit, {})]

    def cancel(self, prediction_id: str) -> Prediction:
        """Cancel a run (a queued one at once, a running one between two batches)."""
        return Prediction.model_validate(self.client.request("POST", f"/v1/predictions/{prediction_id}/cancel").json())

    def wait(self, prediction_id: str, *, timeout: float | None = None, interval: float = 1.0) -> Prediction:
        """Poll until the run has ended; raises ``WaitTimeout`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.get(prediction_id)
            if run.is_final:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"prediction run {prediction_id} was not final after {timeout} s")
            time.sleep(interval)

    def rows(self, prediction_id: str, **filters: Any) -> "pd.DataFrame":
        """The run's rows as a DataFrame in ``row_index`` order: ``predicted_label``, ``confidence``,
        ``probabilities`` (a dict per row) and, for labelled rows, ``given_label``, ``flagged``,
        ``suggested_label``, ``suggested_confidence``, ``label_quality``, ``flag_reason``; the summary is in
        ``df.attrs["summary"]``. Filters: ``flagged``, ``predicted_label``, ``given_label``."""
        import pandas as pd

        buffer = io.BytesIO()
        self.client.download(f"/v1/predictions/{prediction_id}/rows.jsonl", buffer, **_query(filters))
        lines = buffer.getvalue().decode().splitlines()
        frame = pd.DataFrame([json.loads(line) for line in lines[1:]])
        frame.attrs["summary"] = json.loads(lines[0])["summary"] if lines else {}
        return frame

    def download(self, prediction_id: str, path: str | Path, **filters: Any) -> Path:
        """Stream every row to ``path``: CSV (``.csv``, one ``p_<class>`` column per class) or JSON lines
        (``.jsonl``); filters as in ``rows``. A refused download leaves no file behind.

        Raises:
            UsageError: ``path`` ends in anything else.
        """
        path = Path(path).expanduser()
        kind = path.suffix.lower().lstrip(".")
        if kind not in ("csv", "jsonl"):
            raise UsageError(f"cannot save prediction rows as {path.name!r}: name the file .csv or .jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.part")
        try:
            with part.open("wb") as out:
                self.client.download(f"/v1/predictions/{prediction_id}/rows.{kind}", out, **_query(filters))
            part.replace(path)
        finally:
            part.unlink(missing_ok=True)
        return path
