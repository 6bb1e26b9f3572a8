"""The typed HTTP client: ``Client(url, key).datasets`` and ``.jobs``.

Every call raises ``ApiError`` (the service's error envelope) on a 4xx/5xx answer. The API key is
sent as ``Authorization: Bearer <key>``; it defaults to ``$CLEARFT_API_KEY``, else the first line of
the file ``$CLEARFT_API_KEY_FILE``, else the key the embedded service wrote at first start
(``$CLEAR_DATA_DIR/api-key``, or ``var/api-key`` in the current folder). The URL defaults to
``$CLEARFT_URL`` or ``http://127.0.0.1:8000``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import httpx

from clearft.datasets import DatasetsAPI
from clearft.errors import ApiError
from clearft.jobs import JobsAPI

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "clearft/0.1"


def default_key() -> str | None:
    """The API key from the environment or the embedded service's key file; None if there is none."""
    if os.environ.get("CLEARFT_API_KEY"):
        return os.environ["CLEARFT_API_KEY"]
    candidates = [os.environ.get("CLEARFT_API_KEY_FILE"),
                  str(Path(os.environ["CLEAR_DATA_DIR"]) / "api-key") if os.environ.get("CLEAR_DATA_DIR") else None,
                  "var/api-key"]
    for name in filter(None, candidates):
        path = Path(name)
        if path.is_file():
            return path.read_text().strip() or None
    return None


class Client:
    """A connection to the service.

    Args:
        url: base URL of the service (default ``$CLEARFT_URL`` or ``http://127.0.0.1:8000``).
        key: API key sent as a bearer token (default: ``default_key()``; none if it finds none).
        timeout: seconds for connecting and for each read (event streams read longer).
        http: an ``httpx.Client`` to use instead of making one (e.g. a test client); ``url`` is then ignored.
    """

    def __init__(self, url: str | None = None, key: str | None = None, *, timeout: float = 60.0,
                 http: httpx.Client | None = None) -> None:
        self.url = url or os.environ.get("CLEARFT_URL") or DEFAULT_URL
        key = key if key is not None else default_key()
        headers = {"User-Agent": USER_AGENT, **({"Authorization": f"Bearer {key}"} if key else {})}
        if http is None:
            http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)
        else:
            http.headers.update(headers)
        self.http = http
        self.datasets = DatasetsAPI(self)
        self.jobs = JobsAPI(self)

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
