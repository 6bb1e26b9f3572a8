"""The typed HTTP client: ``Client(url, key).datasets`` and ``.jobs``.

Every call raises ``ApiError`` (the service's error envelope) on a 4xx/5xx answer. The API key, if
any, is sent as ``Authorization: Bearer <key>``; it defaults to ``$CLEARFT_API_KEY``, the URL to
``$CLEARFT_URL`` or ``http://127.0.0.1:8000``.
"""

from __future__ import annotations

import os
from typing import IO, Any

import httpx

from clearft.datasets import DatasetsAPI
from clearft.errors import ApiError
from clearft.jobs import JobsAPI

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "clearft/0.1"


class Client:
    """A connection to the service.

    Args:
        url: base URL of the service (default ``$CLEARFT_URL`` or ``http://127.0.0.1:8000``).
        key: API key sent as a bearer token (default ``$CLEARFT_API_KEY``; none if unset).
        timeout: seconds for connecting and for each read (event streams read longer).
        http: an ``httpx.Client`` to use instead of making one (e.g. a test client); ``url`` is then ignored.
    """

    def __init__(self, url: str | None = None, key: str | None = None, *, timeout: float = 60.0,
                 http: httpx.Client | None = None) -> None:
        self.url = url or os.environ.get("CLEARFT_URL") or DEFAULT_URL
        key = key if key is not None else os.environ.get("CLEARFT_API_KEY")
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
