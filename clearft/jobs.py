"""``client.jobs``: create, list, get, cancel, follow (event log, live stream, ``wait``) and download
a job's results (adapter archive, noise report as a DataFrame or a CSV/JSONL file)."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from clearft.datasets import collect_pages
from clearft.errors import ApiError, JobFailed, UsageError, WaitTimeout
from clearft.models import Event, Job, StreamEvent
from clearft.progress import ProgressBar
from clearft.sse import KEEPALIVE, parse_sse

if TYPE_CHECKING:
    import pandas as pd

    from clearft.client import Client

STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)  # the server sends a heartbeat every 15 s
RECONNECTS = 5


class JobsAPI:
    """Jobs of the service."""

    def __init__(self, client: "Client") -> None:
        self.client = client

    def _job(self, body: dict[str, Any]) -> Job:
        return Job.model_validate(body).bind(self)

    def create(self, dataset_id: str, *, method: str | None = None, routed: bool | None = None,
               base_model: str | None = None, validation_dataset_id: str | None = None,
               validation_fraction: float | None = None, clear: dict[str, Any] | None = None,
               training: dict[str, Any] | None = None, from_job: str | None = None) -> Job:
        """Submit a job; the returned ``Job`` echoes every resolved setting. ``clear`` and ``training``
        take ``ClearConfig`` / ``TrainingConfig`` fields (e.g. ``{"routing_cap": 0.85}``, ``{"epochs": 3}``).
        ``method`` and ``routed`` left out are the service's defaults (``lora``, routed). With ``from_job`` (a
        retrain, e.g. on a version made from that job's decisions) every setting not given here is that job's,
        and once both jobs succeeded ``job.comparison`` compares them."""
        body = {"dataset_id": dataset_id, "method": method, "routed": routed, "base_model": base_model,
                "validation_dataset_id": validation_dataset_id, "validation_fraction": validation_fraction,
                "clear": clear or None, "training": training or None, "from_job": from_job}
        body = {k: v for k, v in body.items() if v is not None}
        return self._job(self.client.request("POST", "/v1/jobs", json=body).json())

    def delete(self, job_id: str) -> None:
        """Delete a finished job with its events, noise report, decisions and adapter (versions and retrains
        made from it stay). Raises ``ApiError`` 409 while it is queued or running."""
        self.client.request("DELETE", f"/v1/jobs/{job_id}")

    def decide(self, job_id: str, decisions: list[dict[str, Any]] | None = None, *,
               rule: dict[str, Any] | None = None, action: str | None = None) -> dict[str, Any]:
        """Record review decisions on the job's noise report and return ``{"recorded", "by_action"}``: either
        ``decisions``, a list of ``{"row_index": 3, "action": "accept" | "keep" | "drop"}`` or ``{"row_index": 5,
        "action": "relabel", "label": "2"}``, or a bulk ``rule`` (``flagged``, ``min_suggested_confidence``,
        ``given_label``, ``suggested_label``, ``split``) with an ``action`` (accept, keep or drop). The latest
        decision per row wins; a request with an unknown row stores nothing.

        Raises:
            UsageError: neither or both forms given; nothing is sent.
            ApiError: 422 naming an unknown row or label, 409 while the job has no report.
        """
        if (decisions is None) == (rule is None) or (rule is not None and action is None):
            raise UsageError("give either decisions, or rule with action")
        body = {"decisions": decisions} if decisions is not None else {"rule": rule, "action": action}
        return self.client.request("POST", f"/v1/jobs/{job_id}/noise-report/decisions", json=body).json()

    def list_decisions(self, job_id: str, *, action: str | None = None, limit: int = 100_000
                       ) -> list[dict[str, Any]]:
        """Up to ``limit`` of the job's decisions in ``row_index`` order (``row_index``, ``action``, ``label``,
        ``api_key_id``, ``decided_at``), optionally only those with ``action``."""
        return collect_pages(self.client, f"/v1/jobs/{job_id}/noise-report/decisions", limit, {"action": action})

    def get(self, job_id: str) -> Job:
        """One job as it stands now."""
        return self._job(self.client.request("GET", f"/v1/jobs/{job_id}").json())

    def list(self, *, status: str | None = None, limit: int = 50) -> list[Job]:
        """Up to ``limit`` jobs, newest first, optionally only those in ``status``."""
        return [self._job(j) for j in collect_pages(self.client, "/v1/jobs", limit, {"status": status})]

    def cancel(self, job_id: str) -> Job:
        """Cancel: a queued job stops at once, a running one within a training step."""
        return self._job(self.client.request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def events(self, job_id: str, *, limit: int | None = None) -> Iterator[Event]:
        """The job's event log, oldest first, every page (or the first ``limit`` events)."""
        cursor, seen = None, 0
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = self.client.request("GET", f"/v1/jobs/{job_id}/events", params=params).json()
            for item in page["data"]:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield Event.model_validate(item)
            cursor = page["next_cursor"]
            if not page["has_more"]:
                return

    def stream(self, job_id: str, *, last_event_id: int | None = None, keepalives: bool = False
               ) -> Iterator[StreamEvent]:
        """Follow ``/events/stream`` until its ``end`` event, reconnecting (with ``Last-Event-ID``) when
        the connection drops; raises the last transport error after ``RECONNECTS`` failures in a row."""
        failures = 0
        while True:
            headers = {"Last-Event-ID": str(last_event_id)} if last_event_id else {}
            try:
                with self.client.http.stream("GET", f"/v1/jobs/{job_id}/events/stream", headers=headers,
                                             timeout=STREAM_TIMEOUT) as response:
                    if response.is_error:
                        response.read()
                        raise ApiError.from_response(response)
                    for event in parse_sse(response.iter_lines()):
                        if event.event == KEEPALIVE and not keepalives:
                            continue
                        failures = 0
                        last_event_id = event.id if event.id is not None else last_event_id
                        yield event
                        if event.event == "end":
                            return
                raise httpx.RemoteProtocolError("the event stream closed before the job ended")
            except httpx.TransportError:
                failures += 1
                if failures > RECONNECTS:
                    raise
                time.sleep(min(0.5 * 2 ** failures, 8.0))

    def wait(self, job_id: str, *, progress: bool = False, timeout: float | None = None,
             check: bool = False) -> Job:
        """Block until the job is final, following its event stream; with ``progress`` draw a bar
        (epoch, step, loss, ETA) on stderr, with a line per epoch and per learning warning. Raises ``WaitTimeout`` after ``timeout`` seconds, and with
        ``check`` ``JobFailed`` unless the job succeeded."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = ProgressBar(job_id) if progress else None
        try:
            for event in self.stream(job_id, keepalives=True):
                if bar is not None:
                    bar.feed(event)
                if event.event == "end":
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise WaitTimeout(f"job {job_id} was not final after {timeout} s")
        finally:
            if bar is not None:
                bar.close()
        job = self.get(job_id)
        if check and job.status != "succeeded":
            raise JobFailed(job)
        return job

    def download_adapter(self, job_id: str, directory: str | Path, *, extract: bool = True) -> Path:
        """Save the adapter: unpacked into ``directory`` (peft files, label map, CleaR config, tokenizer),
        or with ``extract=False`` as an archive: to ``directory`` itself when it is a file name ending in
        ``.tar.gz`` or ``.tgz`` (and not an existing folder), else as
        ``directory/<job>-adapter.tar.gz``; returns the folder or the archive's path."""
        directory = Path(directory).expanduser()
        if not extract:
            archive = _archive_path(directory, job_id)
            _save(archive, lambda out: self.client.download(f"/v1/jobs/{job_id}/adapter", out))
            return archive
        with tempfile.TemporaryFile() as tmp:
            self.client.download(f"/v1/jobs/{job_id}/adapter", tmp)  # first: a refusal leaves no empty folder
            tmp.seek(0)
            directory.mkdir(parents=True, exist_ok=True)
            with tarfile.open(fileobj=tmp, mode="r:gz") as tar:
                tar.extractall(directory, filter="data")
        return directory

    def save_noise_report(self, job_id: str, path: str | Path, **filters: Any) -> Path:
        """Stream the whole report to ``path``: CSV (``.csv``) or JSON lines (``.jsonl``); filters:
        ``flagged``, ``given_label``, ``predicted_label``, ``split`` (``"train"`` or ``"validation"``), ``decided``
        (rows with or without a review decision; every row has ``decision`` and ``decision_label``).

        Raises:
            UsageError: ``path`` ends in anything else (an ``.xlsx`` would get CSV bytes).
        """
        path = Path(path).expanduser()
        if path.suffix.lower() not in (".csv", ".jsonl"):
            raise UsageError(f"cannot save the noise report as {path.name!r}: name the file .csv or .jsonl")
        kind = "jsonl" if path.suffix.lower() == ".jsonl" else "csv"
        _save(path, lambda out: self.client.download(f"/v1/jobs/{job_id}/noise-report.{kind}", out,
                                                     **_query(filters)))
        return path

    def noise_report(self, job_id: str, **filters: Any) -> "pd.DataFrame":
        """The report as a DataFrame in ``rank`` order (flagged rows first, then ascending ``label_quality``),
        one row per dataset row (``split`` says which were held out of training), with ``flag_reason``; its
        summary (rows, flagged, estimated noise matrix and rates, class thresholds, reliability verdict) is in
        ``df.attrs["summary"]``. Filters as in ``save_noise_report``."""
        import pandas as pd

        buffer = io.BytesIO()
        self.client.download(f"/v1/jobs/{job_id}/noise-report.jsonl", buffer, **_query(filters))
        lines = buffer.getvalue().decode().splitlines()
        head = json.loads(lines[0]) if lines else {}
        # the head line names the columns (servers since issue 13): a filter matching no row keeps them
        frame = pd.DataFrame([json.loads(line) for line in lines[1:]], columns=head.get("columns"))
        frame.attrs["summary"] = head.get("summary", {})
        return frame

    def report_stats(self, job_id: str, *, bins: int = 20) -> dict[str, Any]:
        """What the dashboard plots: the label_quality histogram with the class thresholds, the estimated
        noise matrix and rates (overall and per class), the reliability verdict and the confusion matrix."""
        return self.client.request("GET", f"/v1/jobs/{job_id}/noise-report/stats", params={"bins": bins}).json()

    def epochs(self, job_id: str) -> "pd.DataFrame":
        """One row of metrics per finished epoch (losses, held-out accuracy and agreement, and the
        ``last_pass_*`` statistics of the clean-probability pass run before the epoch)."""
        import pandas as pd

        return pd.DataFrame([e.data for e in self.events(job_id) if e.type == "epoch" and e.data])


def _save(path: Path, write) -> None:
    """Run ``write(file)`` on a temporary file next to ``path`` and rename it to ``path`` once it succeeded:
    a refused or broken download leaves an existing ``path`` as it was, and no empty file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", suffix=".part",
                                     delete=False) as out:
        try:
            write(out)
        except BaseException:
            out.close()
            Path(out.name).unlink(missing_ok=True)
            raise
    Path(out.name).replace(path)


def _archive_path(target: Path, job_id: str) -> Path:
    """``target`` itself if it names an archive file, else ``target/<job>-adapter.tar.gz``."""
    if not target.is_dir() and target.name.lower().endswith((".tar.gz", ".tgz")):
        return target
    return target / f"{job_id}-adapter.tar.gz"


REPORT_FILTERS = ("flagged", "given_label", "predicted_label", "split", "decided")
SPLITS = ("train", "validation")


def _query(filters: dict[str, Any]) -> dict[str, Any]:
    """The noise-report filters as query parameters (booleans as ``true``/``false``, None left out).

    Raises:
        TypeError: a filter the service does not know.
        ValueError: ``split`` is neither ``"train"`` nor ``"validation"``.
    """
    unknown = set(filters) - set(REPORT_FILTERS)
    if unknown:
        raise TypeError(f"unknown noise-report filters {sorted(unknown)}: use {', '.join(REPORT_FILTERS)}")
    if filters.get("split") is not None and filters["split"] not in SPLITS:
        raise ValueError(f"split={filters['split']!r}: use 'train' or 'validation'")
    return {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in filters.items() if v is not None}
