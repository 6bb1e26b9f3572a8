"""What the API target asks of any Python process on this machine (issue 13): a bare FastAPI app, no
middleware, no ORM, no dependency injection, served and loaded exactly as ``bench/service.py api`` loads the
service, with an authenticated job read written three lean ways, each against the same app's ``/healthz``.

    python -m bench.api_floor                      # 30 s per route -> bench/results/api_floor_full.json
    python -m bench.api_floor --quick              # 5 s per route  -> bench/results/api_floor_quick.json

The routes (the database is the service's own schema, seeded by ``bench.service_api.seed``):

- ``/healthz``: ``{"status": "ok"}``.
- ``/async-pg/{job_id}``: one prepared statement (the key's row by its hash joined to the job, the job's row
  as JSON text built by Postgres) on an ``asyncio`` psycopg connection taken from a queue: the least a job
  read can do, with no rate limit.
- ``/async-pg-redis/{job_id}``: the same plus one Redis ``INCR``/``EXPIRE`` script per request (a fixed-window
  rate limit; the service's moving window costs about the same, ``bench/results`` notes).
- ``/thread-pg-redis/{job_id}``: the same two round trips with the blocking drivers, in one thread-pool call
  (the shape of the service's hot reads since issue 13's one-call change).

If even these stay under the target's ½ of ``/healthz``'s requests/s, the target measures the machine (two
cores shared by wrk, Postgres, Redis and the API) more than the service's code. Nothing here is used by the
service.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import queue
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Request, Response  # at module level: the routes' annotations are strings resolved here

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.output import markdown_table, write_results
from bench.postgres import drop_database, free_port
from bench.service_api import (FULL_DURATION_S, QUICK_DURATION_S, REDIS_URL, WRK, create_database, environment,
                               ratios, run_wrk, seed, serve_app, stop_server)

DSN_ENV, REDIS_ENV, POOL = "CLEAR_FLOOR_DSN", "CLEAR_FLOOR_REDIS", 20
QUERY = ("SELECT row_to_json(j)::text FROM api_keys k JOIN jobs j ON j.tenant_id = k.tenant_id AND j.id = %s "
         "WHERE k.key_hash = %s AND k.revoked_at IS NULL")
INCR = "local c = redis.call('INCR', KEYS[1]) if c == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end return c"
ROUTES = ["/healthz", "/async-pg/{job}", "/async-pg-redis/{job}", "/thread-pg-redis/{job}"]


def key_hash(authorization: str) -> str:
    """The service's key hash (sha256 hex, as ``app.services.api_keys.hash_key``) of the Bearer token in
    ``authorization``."""
    return hashlib.sha256(authorization.partition(" ")[2].encode()).hexdigest()


def build_app():
    """The bare FastAPI app of the module's docstring, reading ``CLEAR_FLOOR_DSN`` (libpq) and ``CLEAR_FLOOR_REDIS``."""
    import psycopg
    import redis
    import redis.asyncio as aredis
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool

    dsn, redis_url = os.environ[DSN_ENV], os.environ[REDIS_ENV]
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app):
        state["async"] = asyncio.Queue()
        for _ in range(POOL):
            state["async"].put_nowait(await psycopg.AsyncConnection.connect(dsn, autocommit=True))
        state["sync"] = queue.Queue()
        for _ in range(POOL):
            state["sync"].put(psycopg.connect(dsn, autocommit=True))
        state["aredis"] = aredis.Redis.from_url(redis_url)
        state["redis"] = redis.Redis.from_url(redis_url)
        state["sha"] = state["redis"].script_load(INCR)
        yield
        await state["aredis"].aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def async_read(job_id: str, hashed: str) -> Response:
        conn = await state["async"].get()
        try:
            row = await (await conn.execute(QUERY, (job_id, hashed), prepare=True)).fetchone()
        finally:
            state["async"].put_nowait(conn)
        return Response(row[0] if row else b'{"error": "not found"}', status_code=200 if row else 404,
                        media_type="application/json")

    @app.get("/async-pg/{job_id}")
    async def async_pg(job_id: str, request: Request) -> Response:
        return await async_read(job_id, key_hash(request.headers.get("authorization", "")))

    @app.get("/async-pg-redis/{job_id}")
    async def async_pg_redis(job_id: str, request: Request) -> Response:
        hashed = key_hash(request.headers.get("authorization", ""))
        await state["aredis"].evalsha(state["sha"], 1, f"floor:{hashed}", 60)
        return await async_read(job_id, hashed)

    def thread_read(job_id: str, hashed: str) -> tuple[Any, ...] | None:
        state["redis"].evalsha(state["sha"], 1, f"floor:{hashed}", 60)
        conn = state["sync"].get()
        try:
            return conn.execute(QUERY, (job_id, hashed), prepare=True).fetchone()
        finally:
            state["sync"].put(conn)

    @app.get("/thread-pg-redis/{job_id}")
    async def thread_pg_redis(job_id: str, request: Request) -> Response:
        row = await run_in_threadpool(thread_read, job_id, key_hash(request.headers.get("authorization", "")))
        return Response(row[0] if row else b'{"error": "not found"}', status_code=200 if row else 404,
                        media_type="application/json")

    return app


def __getattr__(name: str):
    # ``uvicorn bench.api_floor:app`` builds the app on first access only (importing the module reads no env)
    if name == "app":
        return build_app()
    raise AttributeError(name)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench.api_floor``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION_S} s per route (a check).")
    parser.add_argument("--duration", type=int, default=None, help="seconds per route (default 30, quick 5).")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (-c).")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (-t).")
    parser.add_argument("--timeout", default="10s", help="wrk --timeout.")
    parser.add_argument("--redis-url", default=REDIS_URL, help="Redis for the INCR route.")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/api_floor_<mode>.json).")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the four routes (see the module's docstring); print the table, write the JSON; 2 when wrk is missing."""
    from sqlalchemy.engine import make_url

    args = build_parser().parse_args(argv)
    duration = args.duration or (QUICK_DURATION_S if args.quick else FULL_DURATION_S)
    if not Path(WRK).is_file():
        print(f"{WRK} not found: install Debian's wrk package (apt-get install wrk)", file=sys.stderr)
        return 2
    started, env = time.perf_counter(), environment()
    name, url = create_database()
    workdir = Path(tempfile.mkdtemp(prefix="clear-bench-floor-"))
    proc = None
    try:
        seeded = seed(url, jobs=50, events=0)
        parsed = make_url(url)
        dsn = f"host={parsed.host} port={parsed.port or 5432} user={parsed.username} dbname={parsed.database}"
        port = free_port()
        proc = serve_app("bench.api_floor:app", dict(os.environ, **{DSN_ENV: dsn, REDIS_ENV: args.redis_url}), port,
                         workdir / "floor.log", "the floor app")
        rows = []
        for route in ROUTES:
            path = route.format(job=seeded["job_id"])
            numbers, _ = run_wrk(f"http://127.0.0.1:{port}{path}", seeded["key"], args, duration)
            rows.append({"route": route, **numbers})
            print(f"{route}: {numbers['requests_per_s']:.1f} requests/s, {numbers['errors']} errors", flush=True)
        ratios(rows)
    finally:
        if proc is not None:
            stop_server(proc)
        drop_database(name, url)
    headers = ["route", "requests/s", "p50 ms", "p99 ms", "errors", "req/s ÷ healthz", "p99 ÷ healthz"]
    body = [[r["route"], r["requests_per_s"], r["p50_s"] and r["p50_s"] * 1000, r["p99_s"] and r["p99_s"] * 1000,
             r["errors"], r["rps_ratio"], r["p99_ratio"]] for r in rows]
    print(f"\n## A bare FastAPI app on this machine (wrk -t{args.threads} -c{args.connections} -d{duration}s; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})\n")
    print(markdown_table(headers, body))
    path = write_results({"environment": env, "duration_s": duration, "connections": args.connections,
                          "rows": rows}, script="api_floor", quick=args.quick, out=args.out)
    print(f"\nwrote {path} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
