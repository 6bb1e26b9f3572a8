"""Engine and session factory for the configured database (Postgres or a SQLite file), and the gate that
bounds how many requests of an API process hold a database session at once.

Why a gate: FastAPI runs sync dependencies and routes in anyio's thread pool, one hop at a time
(authentication, the route, the response's validation), and a request keeps its session's connection
between hops. If more requests held connections than the pool has, the threads waiting for a connection
could take every thread token while the requests holding the connections wait for a token to finish:
nothing moves until the pool's timeout. ``SessionGate`` lets at most ``db_pool_size`` requests hold a
session (a pool of that size serves them without waiting); the others wait in the event loop, holding no
thread and no connection, at most ``db_pool_timeout_s``, then get ``Overloaded`` (503 ``overloaded``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import anyio
from anyio.lowlevel import RunVar
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.errors import Overloaded


@dataclass(frozen=True)
class PoolOptions:
    """SQLAlchemy ``QueuePool`` sizes: ``size`` connections kept open, ``overflow`` more opened when they are
    all in use, ``timeout_s`` the longest a checkout waits (then ``sqlalchemy.exc.TimeoutError``). ``pre_ping``:
    test each connection with a round trip when it is checked out (``pool_pre_ping``), so that one the database
    dropped is replaced unseen; without it (the API's choice: the ping was a sixth of a job read's cost), the
    first statement on a dropped connection raises a ``DBAPIError`` with ``connection_invalidated`` set and the
    pool replaces every connection older than it ("optimistic" disconnect handling in SQLAlchemy's terms)."""

    size: int = 5
    overflow: int = 10
    timeout_s: float = 30.0
    pre_ping: bool = True


DEFAULT_POOL = PoolOptions()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets the API read while the worker writes; foreign keys are off by default in SQLite.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


@lru_cache(maxsize=16)
def get_engine(url: str, pool: PoolOptions = DEFAULT_POOL) -> Engine:
    """One pooled engine per database URL and pool sizes (SQLite files get WAL, foreign keys and a busy
    timeout; an in-memory SQLite database keeps SQLAlchemy's own single-connection pool)."""
    parsed = make_url(url)
    sizes = {"pool_size": pool.size, "max_overflow": pool.overflow, "pool_timeout": pool.timeout_s}
    if parsed.get_backend_name() == "sqlite":
        in_memory = not parsed.database or parsed.database == ":memory:"
        if not in_memory:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               **({} if in_memory else sizes))
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=pool.pre_ping, **sizes)


def session_factory(url: str, pool: PoolOptions = DEFAULT_POOL) -> sessionmaker[Session]:
    """A ``sessionmaker`` bound to the engine of ``url`` with ``pool`` (objects stay readable after commit)."""
    return sessionmaker(bind=get_engine(url, pool), expire_on_commit=False)


def read_session_factory(url: str, pool: PoolOptions = DEFAULT_POOL) -> sessionmaker[Session]:
    """Like ``session_factory`` but every statement runs in autocommit (same pool): no ``BEGIN`` and no
    ``ROLLBACK`` round trips, for requests that only read (GET, HEAD). Each statement sees the data committed
    when it starts, as in a READ COMMITTED transaction (Postgres' default), so reads see nothing less consistent."""
    engine = get_engine(url, pool).execution_options(isolation_level="AUTOCOMMIT")
    return sessionmaker(bind=engine, expire_on_commit=False)


def iter_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Yield one session and close it afterwards."""
    with factory() as session:
        yield session


class SessionGate:
    """At most ``slots`` holders at once per event loop; ``acquire`` waits at most ``timeout_s`` seconds.

    Args:
        slots: holders at once (>= 1), the API's ``db_pool_size``.
        timeout_s: longest wait (> 0), the API's ``db_pool_timeout_s``.
    """

    def __init__(self, slots: int, timeout_s: float) -> None:
        self.slots, self.timeout_s = slots, timeout_s
        # one semaphore per event loop: the app may be served by several loops in turn (test clients)
        self._semaphore: RunVar[anyio.Semaphore] = RunVar(f"clear_session_gate_{id(self)}")

    def _get(self) -> anyio.Semaphore:
        try:
            return self._semaphore.get()
        except LookupError:
            semaphore = anyio.Semaphore(self.slots)
            self._semaphore.set(semaphore)
            return semaphore

    async def acquire(self) -> None:
        """Take a slot, waiting (without a thread) up to ``timeout_s``.

        Raises:
            Overloaded: every slot stayed taken for ``timeout_s``.
        """
        semaphore = self._get()
        try:
            semaphore.acquire_nowait()  # a free slot: no timer to set up (a cancel scope costs more than the rest)
            return
        except anyio.WouldBlock:
            pass
        try:
            with anyio.fail_after(self.timeout_s):
                await semaphore.acquire()
        except TimeoutError:
            raise Overloaded(f"this API process has {self.slots} database sessions and they were all in use for "
                             f"{self.timeout_s:g} s; retry shortly") from None

    def release(self) -> None:
        """Give the slot back."""
        self._get().release()

    @property
    def in_use(self) -> int:
        """Slots taken right now in this event loop (0 to ``slots``)."""
        return self.slots - self._get().value
