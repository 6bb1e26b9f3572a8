"""Which errors are transient (the database or the broker is briefly unreachable) and may be retried.

Bad input, out-of-memory and bugs are never transient: retrying them only repeats the failure.
"""

from __future__ import annotations

import sqlalchemy.exc as sa_exc

_TRANSIENT_SQLALCHEMY = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
                         sa_exc.TimeoutError)


def _broker_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    try:
        import kombu.exceptions

        errors.append(kombu.exceptions.OperationalError)
    except ImportError:  # pragma: no cover - kombu ships with celery
        pass
    try:
        import redis.exceptions

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def is_transient(exc: BaseException) -> bool:
    """True for a lost or refused connection to the database or the broker (retry later), else False.

    SQLite's "database is locked" counts as transient; "out of memory" never does.
    """
    if "out of memory" in str(exc).lower():
        return False
    if isinstance(exc, _TRANSIENT_SQLALCHEMY) and not isinstance(exc, sa_exc.ProgrammingError):
        return True
    if isinstance(exc, _broker_errors()):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


class TransientJobError(RuntimeError):
    """A job stopped by a transient fault; it was (or will be, by the reaper) put back in the queue."""


def retry_transient(fn, *, max_delay_s: float = 60.0):
    """Call ``fn()``, retrying with exponential backoff (0.5 s doubling, at most 10 s apart, for
    ``max_delay_s`` in all) while it raises a transient error; any other error is raised at once."""
    from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

    retrying = Retrying(retry=retry_if_exception(is_transient), wait=wait_exponential(multiplier=0.5, max=10),
                        stop=stop_after_delay(max_delay_s), reraise=True)
    return retrying(fn)
