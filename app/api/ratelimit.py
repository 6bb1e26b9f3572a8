"""Rate limits per API key with the ``limits`` package: a moving window in Redis (shared by every API
process) when the broker is Redis, in memory in the embedded mode. Over the limit: ``RateLimited``
(429 with ``Retry-After``). If the storage cannot be reached, requests pass (and a warning is
logged): losing Redis must not take the read API down with it.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from app.errors import RateLimited

logger = logging.getLogger(__name__)
NAMESPACE = "clear-api-key"
REDIS_OPTIONS = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}


class KeyRateLimiter:
    """``hit(key_id)`` counts one request of a key against every limit in ``spec`` (e.g. ``"1200/minute"``).

    Args:
        spec: rates in the limits notation, several separated by ``;``.
        storage_url: ``redis://...`` or ``memory://``.
    """

    def __init__(self, spec: str, storage_url: str) -> None:
        self.items: list[RateLimitItem] = parse_many(spec)
        options = REDIS_OPTIONS if storage_url.startswith(("redis://", "rediss://")) else {}
        self.storage = storage_from_string(storage_url, wrap_exceptions=True, **options)
        self.limiter = MovingWindowRateLimiter(self.storage)

    def hit(self, key_id: str) -> None:
        """Count a request; raises ``RateLimited`` with the seconds until the window lets one more through."""
        for item in self.items:
            try:
                allowed = self.limiter.hit(item, NAMESPACE, key_id)
                if allowed:
                    continue
                stats = self.limiter.get_window_stats(item, NAMESPACE, key_id)
            except StorageError as exc:
                logger.warning("rate-limit storage unavailable, request let through: %s", exc)
                return
            wait = max(1, math.ceil(stats.reset_time - time.time()))
            raise RateLimited(f"this API key sent more than {item} requests; retry after {wait} s",
                              retry_after_s=wait, extra={"limit": str(item)})
