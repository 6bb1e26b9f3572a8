"""The typed HTTP client: ``Client(url, key).datasets``, ``.jobs`` and ``.predictions``.

Every call raises ``ApiError`` (the service's error envelope) on a 4xx/5xx answer. The API key is
sent as ``Authorization: Bearer <key>``; it defaults to ``$CLEARFT_API_KEY``, else the first line of
the file ``$CLEARFT_API_KEY_FILE`` (which must exist when it is set), else the key the embedded service
wrote at first start (``$CLEAR_DATA_DIR/api-key``, ``var/api-key`` in the current folder, or from any folder the
key file the embedded service recorded for the URL at its start: ``clearft.local``). The URL defaults to
``$CLEARFT_URL`` or ``http://127.0.0.1:8000``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import httpx

from clearft.datasets import DatasetsAPI
from clearft.errors import ApiError, UsageError
from clearft.jobs import JobsAPI
from clearft.local import key_file_for
from clearft.predictions import Prediction, PredictionsAPI

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "clearft/0.1"


def default_key(url: str | None = None) -> str | None:
    """The API key from the environment or the embedded service's key file; None if there is none.

    Order: ``$CLEARFT_API_KEY``; the file ``$CLEARFT_API_KEY_FILE``; ``$CLEAR_DATA_DIR/api-key``;
    ``./var/api-key``; the key file that the embedded service serving ``url`` recorded at its start
    (``clearft.local.key_file_for``), so that the CLI finds the key from any folder.

    Raises:
        UsageError: ``$CLEARFT_API_KEY_FILE`` names a file that cannot be read (rather than falling back
            to another key and getting a confusing 401).
    """
    if os.environ.get("CLEARFT_API_KEY", "").strip():
        return os.environ["CLEARFT_API_KEY"].strip()
    named = os.environ.get("CLEARFT_API_KEY_FILE")
    if named and not Path(named).is_file():
        raise UsageError(f"CLEARFT_API_KEY_FILE={named!r} is not a file: point it at the file holding the key")
    candidates = [named, str(Path(os.environ["CLEAR_DATA_DIR"]) / "api-key") if os.environ.get("CLEAR_DATA_DIR")
                  else None, "var/api-key", key_file_for(url) if url else None]
    for name in filter(None, candidates):
        path = Path(name)
        if path.is_file():
            try:
                lines = path.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read the API key file {name!r}: {exc}") from None
            return (lines[0].strip() if lines else "") or None  # the first line: a note may follow it
    return None


def check_key(key: str) -> str:
    """``key`` without surrounding blanks; ``UsageError`` if it holds a character no HTTP header (and no key of
    the service) can carry: a space, a line break, a non-ASCII letter."""
    key = key.strip()
    if not all("!" <= ch <= "~" for ch in key):
        raise UsageError("the API key has a space, a line break or a non-ASCII character, which no key has: check "
                         "--api-key, $CLEARFT_API_KEY or the key file")
    return key


def check_url(url: str) -> str:
    """``url`` if it starts with ``http://`` or ``https://``.

    Raises:
        UsageError: any other scheme, or none (``localhost:8000``: httpx said "unsupported protocol
            'localhost://'"); the message gives the URL with ``http://``.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else None
    if scheme in ("http", "https"):
        return url
    if scheme is None:
        raise UsageError(f"the service URL {url!r} has no scheme: give http://{url} (or https://)")
    raise UsageError(f"the service URL {url!r} is not http:// or https://: give the API's address, e.g. "
                     "http://127.0.0.1:8000")


class Client:
    """A connection to the service.

    Args:
        url: base URL of the service (default ``$CLEARFT_URL`` or ``http://127.0.0.1:8000``); ``UsageError``
            without ``http://`` or ``https://``.
        key: API key sent as a bearer token (default: ``default_key()``; none if it finds none).
        timeout: seconds for connecting and for each read (event streams read longer).
        http: an ``httpx.Client`` to use instead of making one (e.g. a test client); ``url`` is then ignored.
    """

    def __init__(self, url: str | None = None, key: str | None = None, *, timeout: float = 60.0,
                 http: httpx.Client | None = None) -> None:
        self.url = check_url(url or os.environ.get("CLEARFT_URL") or DEFAULT_URL)
        key = key if key is not None else default_key(self.url)
        key = check_key(key) or None if key else None
        headers = {"User-Agent": USER_AGENT, **({"Authorization": f"Bearer {key}"} if key else {})}
        if http is None:
            http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)
        else:
            http.headers.update(headers)
        self.http = http
        self.datasets = DatasetsAPI(self)
        self.jobs = JobsAPI(self)
        self.predictions = PredictionsAPI(self)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; raises ``ApiError`` unless the answer is 2xx/3xx."""
        response = self.http.request(method, path, **kwargs)
        if response.is_error:
            raise ApiError.from_response(response)
        return response

    def download(self, path: str, out: IO[bytes], **params: Any) -> int:
        """Stream the body of ``GET path`` into ``out``; returns the bytes written."""
        written = 0
        with self.http.stream("GET", path, params={k: v for k, v in params.items() if v is not None}) as response:
            if response.is_error:
                response.read()
                raise ApiError.from_response(response)
            for chunk in response.iter_bytes():
                out.write(chunk)
                written += len(chunk)
        return written

    def predict(self, job_id: str, **kwargs: Any) -> Prediction:
        """Queue a prediction run of job ``job_id``'s model (``dataset_id=`` or ``file=``; see
        ``PredictionsAPI.predict``)."""
        return self.predictions.predict(job_id, **kwargs)

    def get_prediction(self, prediction_id: str) -> Prediction:
        """A prediction run as it stands now."""
        return self.predictions.get(prediction_id)

    def prediction_rows(self, prediction_id: str, **filters: Any):
        """A run's rows as a DataFrame (see ``PredictionsAPI.rows``)."""
        return self.predictions.rows(prediction_id, **filters)

    def download_prediction(self, prediction_id: str, path: str | Path, **filters: Any) -> Path:
        """Save a run's rows as ``.csv`` or ``.jsonl`` (see ``PredictionsAPI.download``)."""
        return self.predictions.download(prediction_id, path, **filters)

    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``: the server's base models, each with ``id``, ``default``, ``architecture``,
        ``parameters``, ``max_length``, ``methods`` (those a job may use) and ``refused`` (method -> reason)."""
        return self.request("GET", "/v1/models").json()["data"]

    def health(self) -> dict[str, Any]:
        """``/healthz``: the service answers."""
        return self.request("GET", "/healthz").json()

    def ready(self) -> dict[str, Any]:
        """``/readyz``: the database and broker checks (raises ``ApiError`` 503 when not ready)."""
        return self.request("GET", "/readyz").json()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
