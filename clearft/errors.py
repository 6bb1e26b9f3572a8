"""Errors the client raises: the service's error envelope as ``ApiError``, and waiting outcomes."""

from __future__ import annotations

from typing import Any


class ClearFTError(Exception):
    """Base of every error this client raises."""


class ApiError(ClearFTError):
    """The service answered 4xx/5xx; carries its envelope ``{"error": {"code", "message", "param"}}``."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (param: {param})" if param else ""))
        self.status, self.code, self.message, self.param, self.details = status, code, message, param, details

    @classmethod
    def from_response(cls, response: Any) -> "ApiError":
        """Build from an httpx response, whether or not its body is the service's envelope."""
        try:
            body = response.json()["error"]
            return cls(response.status_code, body.get("code", "error"), body.get("message", ""), body.get("param"),
                       body.get("details"))
        except (ValueError, KeyError, TypeError):
            return cls(response.status_code, "http_error", response.text[:500] or response.reason_phrase)


class UsageError(ClearFTError, ValueError):
    """A request the client refuses before sending it (a missing file, a format the service does not read)."""


class JobFailed(ClearFTError):
    """``wait(check=True)`` saw the job end ``failed`` or ``cancelled``."""

    def __init__(self, job: Any) -> None:
        reason = f": {job.error.code}: {job.error.message}" if job.error else ""
        super().__init__(f"job {job.id} ended {job.status}{reason}")
        self.job = job


class WaitTimeout(ClearFTError):
    """The job was not final within the time ``wait`` was given."""
