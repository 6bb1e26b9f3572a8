"""Domain errors raised by the services; ``app.api.handlers`` maps each kind to one HTTP status."""

from __future__ import annotations

import sys
from typing import Any


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters with its length said, so that an error message never echoes
    a huge input whole (a 300 KB id in a 404)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def too_many_digits(exc: BaseException | None) -> str | None:
    """What to tell a caller whose JSON held an integer past Python's int-string limit
    (``sys.get_int_max_str_digits()``, 4,300 digits by default: ``json.loads`` raises a bare ``ValueError``,
    which was a 500), as words to follow "the body" / "line 3"; None for any other exception."""
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        return (f"holds an integer of more than {sys.get_int_max_str_digits()} digits, which is not read: every "
                "number the service takes has a range; send one within it")
    return None


def until_succeeded(status: str, again: str = "train it again (POST /v1/jobs with from_job)") -> str:
    """The end of a 409 for a result that exists once a job (or run) has succeeded, given its ``status``: wait
    while it is queued or running; for one that ended failed or cancelled, that it never will, and ``again``."""
    if status in ("failed", "cancelled"):
        return f"it ended {status} and never will have it: {again}"
    return "wait until it has succeeded (poll its status)"


class ServiceError(Exception):
    """Base of every error a caller can act on: a stable ``code``, a message saying what to fix, a ``param``."""

    code = "error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = details
        if code:
            self.code = code


class NotFound(ServiceError):
    """The named resource does not exist (or is not visible to the caller)."""

    code = "not_found"


class Conflict(ServiceError):
    """The resource is in a state that does not allow the request (e.g. a dataset not ready)."""

    code = "conflict"


class InvalidInput(ServiceError):
    """The request is well-formed but its content is wrong: a bad setting, a bad file, bad rows."""

    code = "invalid_input"


class BadRequest(ServiceError):
    """The body cannot be read as what the route takes (400): a multipart body cut off, a part without a name, a
    boundary that does not match, JSON that cannot be decoded. The message says what to send instead."""

    code = "bad_request"


class UnsupportedMediaType(ServiceError):
    """The body's ``Content-Type`` is not one the route accepts (415); ``param`` is ``"Content-Type"`` and the
    message names the accepted types."""

    code = "unsupported_media_type"


def unsupported_media_type(media: str, accepted: str) -> UnsupportedMediaType:
    """The 415 for a body of Content-Type ``media`` (its media type only, lower-cased; ``""`` when absent) on a
    route that takes ``accepted`` (words for the message)."""
    given = f"Content-Type {media!r}" if media else "a body without a Content-Type"
    return UnsupportedMediaType(f"{given} is not accepted here: send {accepted}", param="Content-Type")


class PayloadTooLarge(ServiceError):
    """The upload exceeds the configured size."""

    code = "payload_too_large"


class Unavailable(ServiceError):
    """A service the request depends on (database, broker) cannot be reached; retry later."""

    code = "unavailable"


class Overloaded(ServiceError):
    """The API is too busy to take the request now (every database session of this process was in use for
    longer than ``db_pool_timeout_s``): 503 with code ``overloaded`` and ``Retry-After`` of ``retry_after_s``
    whole seconds (>= 1). Not an outage: the database answers, this process has more requests than sessions."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, int(retry_after_s))


class Unauthorized(ServiceError):
    """No API key, or one that is unknown or revoked (401 with ``WWW-Authenticate: Bearer``)."""

    code = "unauthorized"


class Forbidden(ServiceError):
    """The API key is valid but lacks the scope the request needs (403); ``scope`` names it."""

    code = "forbidden"

    def __init__(self, message: str, *, scope: str) -> None:
        super().__init__(message, code="insufficient_scope")
        self.scope = scope


class TooManyRequests(ServiceError):
    """Base of the 429 answers: ``retry_after_s`` (whole seconds, >= 1) goes to ``Retry-After`` and
    ``extra`` (e.g. ``{"quota": "concurrent_jobs", "limit": 2}``) into the error body."""

    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = max(1, int(retry_after_s))
        self.extra = extra or {}


class QuotaExceeded(TooManyRequests):
    """A tenant quota (``concurrent_jobs``, ``stored_rows``, ``upload_bytes``, ``jobs_per_hour``) is used up."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, quota: str, limit: int, retry_after_s: int) -> None:
        super().__init__(message, retry_after_s=retry_after_s, extra={"quota": quota, "limit": limit})
        self.quota = quota


class RateLimited(TooManyRequests):
    """The API key sent more requests than its rate limit allows in the current window."""

    code = "rate_limited"
