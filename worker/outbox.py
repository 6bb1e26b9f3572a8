"""What one job attempt has yet to write: its events (with checkpoint records) in the order they were made,
and its latest progress fields, buffered in memory so that a database outage delays them instead of losing
them. ``worker.lease.Lease`` drains it in one fenced transaction per write (``app.services.leases.renew``).

Events all arrive, in order, with the time they were made; of the progress fields only the latest value of
each matters, so they are merged. A checkpoint record is an event like the others, so it is never written
before the events made before it: a resume from a recorded checkpoint never skips an event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.services.leases import PendingEvent

BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 5.0


@dataclass
class Batch:
    """A snapshot of what is pending: ``events`` oldest first, the merged ``fields``, and what to call once
    they are committed (one entry per event, None where nothing is to be done)."""

    events: list[PendingEvent]
    fields: dict[str, Any]
    callbacks: list[Callable[[], None] | None]
    version: int = 0


@dataclass
class Outbox:
    """Thread-safe buffer of one attempt's writes, with the backoff between tries while the database is down
    (``BACKOFF_FIRST_S`` doubling up to ``BACKOFF_MAX_S`` seconds, by ``clock``)."""

    clock: Callable[[], float] = time.monotonic
    failing_since: float | None = None  # clock time of the first failed try of the current outage
    _events: list[tuple[PendingEvent, Callable[[], None] | None]] = field(default_factory=list)
    _fields: dict[str, Any] = field(default_factory=dict)
    _version: int = 0
    _retry_at: float = float("-inf")
    _delay: float = BACKOFF_FIRST_S
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, event: PendingEvent, on_applied: Callable[[], None] | None = None) -> None:
        """Append ``event``; ``on_applied`` is called once it is committed (never if the attempt lost the job)."""
        with self._lock:
            self._events.append((event, on_applied))

    def merge(self, **fields: Any) -> None:
        """Set progress ``fields`` to write with the next batch (a later value of a field replaces an earlier one)."""
        if fields:
            with self._lock:
                self._fields.update(fields)
                self._version += 1

    def take(self) -> Batch:
        """What is pending now (left in place until ``applied``)."""
        with self._lock:
            return Batch([e for e, _ in self._events], dict(self._fields), [c for _, c in self._events], self._version)

    def applied(self, batch: Batch) -> None:
        """``batch`` was committed: drop its events, and its fields unless newer ones were merged since."""
        with self._lock:
            del self._events[:len(batch.events)]
            if self._version == batch.version:
                self._fields.clear()
        self.recovered()

    def recovered(self) -> None:
        """A try succeeded: the next one may come at once."""
        with self._lock:
            self.failing_since, self._retry_at, self._delay = None, float("-inf"), BACKOFF_FIRST_S

    def discard(self) -> int:
        """Forget everything (the attempt lost the job: its writes must not land); returns how many events."""
        with self._lock:
            dropped = len(self._events)
            self._events.clear()
            self._fields.clear()
            return dropped

    def failed(self) -> bool:
        """A try failed (the database is unreachable): wait longer before the next; True on the first failure."""
        now = self.clock()
        with self._lock:
            first = self.failing_since is None
            if first:
                self.failing_since = now
            self._retry_at, self._delay = now + self._delay, min(self._delay * 2, BACKOFF_MAX_S)
            return first

    def due(self) -> bool:
        """Whether a try may be made now (always, unless a recent one failed)."""
        return self.clock() >= self._retry_at

    def pending(self) -> bool:
        """Whether anything (an event or a progress field) waits to be written."""
        with self._lock:
            return bool(self._events or self._fields)

    def __len__(self) -> int:
        """Events pending."""
        with self._lock:
            return len(self._events)
