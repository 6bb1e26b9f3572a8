"""``client.datasets``: upload a labelled file with its column mapping, list and get datasets, make a version
from a job's review decisions, download a dataset's rows, delete a dataset."""

from __future__ import annotations

import json
from pathlib import Path, PurePath
from typing import IO, TYPE_CHECKING, Any

from clearft.errors import UsageError
from clearft.models import Dataset

EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
ROW_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}

if TYPE_CHECKING:
    from clearft.client import Client


def collect_pages(client: "Client", path: str, limit: int, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Up to ``limit`` items of a cursor-paginated list route, following ``next_cursor``."""
    items: list[dict[str, Any]] = []
    cursor = None
    while len(items) < limit:
        query = {**params, "limit": min(1000, limit - len(items)), **({"cursor": cursor} if cursor else {})}
        page = client.request("GET", path, params={k: v for k, v in query.items() if v is not None}).json()
        items += page["data"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return items


def file_format(filename: str) -> str:
    """The format the service will read ``filename`` as, from its extension (``.gz`` looked through).

    Raises:
        UsageError: an extension the service does not read (e.g. ``.xlsx``), saying what to upload instead.
    """
    path = PurePath(filename)
    suffix = PurePath(path.stem).suffix if path.suffix.lower() == ".gz" else path.suffix
    if suffix.lower() not in EXTENSIONS:
        raise UsageError(f"cannot upload {path.name!r}: the service reads CSV (.csv), JSON lines (.jsonl, .ndjson) "
                         "or Parquet (.parquet, .pq), optionally gzipped (.gz); save it in one of those formats "
                         "(a spreadsheet: export it as CSV), or pass the format if the name is misleading")
    return EXTENSIONS[suffix.lower()]


class DatasetsAPI:
    """Datasets of the service."""

    def __init__(self, client: "Client") -> None:
        self.client = client

    def upload(self, file: str | Path | IO[bytes], *, text_column: str = "text", label_column: str = "label",
               text_pair_column: str | None = None, id_column: str | None = None,
               gold_label_column: str | None = None, labels: list[str] | None = None, name: str | None = None,
               format: str | None = None, filename: str | None = None) -> Dataset:
        """Upload a CSV, JSONL or Parquet file (a path or an open binary file); every row is validated
        by the service first (``ApiError`` 422 lists bad rows in ``details``).

        Raises:
            UsageError: ``file`` is a path that is not a file, or (without ``format``) its name does not
                end in an extension the service reads; nothing is sent.
            ApiError: the service refused the file.
        """
        form = {"text_column": text_column, "label_column": label_column, "text_pair_column": text_pair_column,
                "id_column": id_column, "gold_label_column": gold_label_column, "name": name, "format": format,
                "labels": json.dumps(labels) if labels is not None else None}
        form = {k: v for k, v in form.items() if v is not None}
        if isinstance(file, (str, Path)):
            path = Path(file).expanduser()
            if not path.is_file():
                raise UsageError(f"{str(path)!r} is not a file: check the path" if path.exists() else
                                 f"no such file: {str(path)!r}; check the path")
            if format is None:
                file_format(filename or path.name)
            with path.open("rb") as fh:
                return self._post(fh, filename or path.name, form)
        name = filename or str(getattr(file, "name", "upload"))
        if format is None:
            file_format(name)
        return self._post(file, name, form)

    def _post(self, fh: IO[bytes], filename: str, form: dict[str, str]) -> Dataset:
        response = self.client.request("POST", "/v1/datasets", files={"file": (Path(filename).name, fh)}, data=form)
        return Dataset.model_validate(response.json())

    def get(self, dataset_id: str) -> Dataset:
        """One dataset."""
        return Dataset.model_validate(self.client.request("GET", f"/v1/datasets/{dataset_id}").json())

    def list(self, *, limit: int = 50) -> list[Dataset]:
        """Up to ``limit`` datasets, newest first."""
        return [Dataset.model_validate(d) for d in collect_pages(self.client, "/v1/datasets", limit, {})]

    def create_version(self, dataset_id: str, from_job: str, *, name: str | None = None) -> Dataset:
        """A new dataset from ``dataset_id`` and the review decisions of ``from_job`` (a succeeded job trained on
        it): decided rows take the decision's label, dropped rows are left out. The answer's ``lineage`` counts
        the rows accepted, relabelled, kept, dropped, unchanged and with a changed label.

        Raises:
            ApiError: 422 when the version would not be a valid dataset (``details`` name the classes left too
                small) or the job is not one of this dataset's; 409 while the job has no report.
        """
        body = {"from_job": from_job, **({"name": name} if name is not None else {})}
        response = self.client.request("POST", f"/v1/datasets/{dataset_id}/versions", json=body)
        return Dataset.model_validate(response.json())

    def download_rows(self, dataset_id: str, path: str | Path) -> Path:
        """Save every row of the dataset (columns ``id, text, text_pair, label, gold_label``) to ``path``, as CSV,
        JSON lines or Parquet by its suffix (``.csv``, ``.jsonl``, ``.parquet``); returns the path. A refused
        download leaves an existing file as it was.

        Raises:
            UsageError: ``path`` has another suffix; nothing is sent.
        """
        from clearft.jobs import _save  # the shared write-then-rename helper

        path = Path(path).expanduser()
        kind = ROW_FORMATS.get(path.suffix.lower())
        if kind is None:
            raise UsageError(f"cannot save the rows as {path.name!r}: name the file .csv, .jsonl or .parquet")
        _save(path, lambda out: self.client.download(f"/v1/datasets/{dataset_id}/rows.{kind}", out))
        return path

    def delete(self, dataset_id: str, *, cascade: bool = False) -> None:
        """Delete the dataset and its rows; with ``cascade`` also its versions and the jobs using it or them.

        Raises:
            ApiError: 409 while a job using it is queued or running, or (without ``cascade``) while versions or
                jobs depend on it (the message names them); 404 for an unknown id.
        """
        params = {"cascade": "true"} if cascade else {}
        self.client.request("DELETE", f"/v1/datasets/{dataset_id}", params=params)
