"""Domain errors raised by the services; ``app.api.handlers`` maps each kind to one HTTP status."""

from __future__ import annotations

from typing import Any


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


class PayloadTooLarge(ServiceError):
    """The upload exceeds the configured size."""

    code = "payload_too_large"


class Unavailable(ServiceError):
    """A service the request depends on (database, broker) cannot be reached; retry later."""

    code = "unavailable"
