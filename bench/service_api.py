"""The API under 64 connections (issue 13): one real uvicorn process on a fresh Postgres database, loaded
with Debian's ``wrk`` route by route, each route compared with ``/healthz`` in the same run.

    python -m bench.service api                  # 30 s per route -> bench/results/service_api_full.json
    python -m bench.service api --quick          # 5 s per route  -> bench/results/service_api_quick.json
    python -m bench.service api --duration 15 --connections 64 --redis-url redis://127.0.0.1:6379/3

What it does: creates a database ``clear_bench_<hex>`` (migrated with Alembic, as the tests do), seeds a
tenant with a read key, a dataset and ``--jobs`` jobs (rows inserted directly: a mix of states, finished ones
with metrics and a report summary, some retrains so that ``comparison`` is computed) with ``--events`` events
each; starts ``python -m uvicorn app.main:app`` (one worker, broker Redis, no Celery worker: nothing is
enqueued); runs ``wrk -t<threads> -c<connections> -d<duration>s --latency --timeout <timeout>`` with the key's
``Authorization`` header on ``/healthz``, ``GET /v1/jobs/{id}``, ``GET /v1/jobs?limit=20`` and
``GET /v1/jobs/{id}/events?limit=50``; stops the server and drops the database.

The key's rate limit is raised (``CLEAR_RATE_LIMIT``, recorded in the JSON as ``rate_limit``) so that the
limiter never rejects the benchmark: it still runs (one Redis round trip per request, as in production).

Targets (issue 13), per route against ``/healthz`` of the same run: requests/s ratio >= 0.5, p99 ratio <= 2,
and no errors (non-2xx/3xx answers, socket errors of any kind).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.output import markdown_table, write_results
from bench.postgres import drop_database, free_port
from bench.postgres import create_database as _create_database

REPO_ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("CLEAR_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
WRK = os.environ.get("CLEAR_BENCH_WRK", "/usr/bin/wrk")
BENCH_RATE_LIMIT = "100000000/minute"
TENANT = "bench"
FULL_DURATION_S, QUICK_DURATION_S = 30, 5
TARGET_RPS_RATIO, TARGET_P99_RATIO = 0.5, 2.0
UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
EPOCHS = [{"epoch": e, "phase": "warmup" if e == 1 else "routed", "train_loss": 1.0 / e, "eval_loss": 0.9 / e,
           "eval_accuracy": 0.6 + 0.05 * e, "eval_macro_f1": 0.55 + 0.05 * e} for e in (1, 2, 3)]
SUMMARY = {"rows": 2000, "flagged": 310, "flags_withheld": False,
           "class_thresholds": {"0": 0.4, "1": 0.5, "2": 0.6, "3": 0.45}, "estimated_noise_rate": 0.16,
           "estimated_noise_rate_per_class": {"0": 0.1, "1": 0.2, "2": 0.15, "3": 0.19},
           "noise_matrix": {"labels": ["0", "1", "2", "3"], "rows": "given", "columns": "true",
                            "joint": [[0.22, 0.01, 0.01, 0.01], [0.02, 0.2, 0.02, 0.01],
                                      [0.01, 0.01, 0.21, 0.02], [0.01, 0.02, 0.01, 0.21]]},
           "reliability": {"reliable": True, "verdict": "reliable", "reasons": [], "advice": ""}}


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m bench.service api``."""
    parser = argparse.ArgumentParser(prog="python -m bench.service api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION_S} s per route (a check).")
    parser.add_argument("--duration", type=int, default=None,
                        help=f"seconds of load per route (default {FULL_DURATION_S}; {QUICK_DURATION_S} with --quick)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (-c).")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (-t).")
    parser.add_argument("--timeout", default="10s", help="wrk --timeout: a request slower than this is a socket "
                                                         "timeout error (wrk's default is 2s).")
    parser.add_argument("--jobs", type=int, default=50, help="jobs seeded for the tenant.")
    parser.add_argument("--events", type=int, default=20, help="events seeded per job.")
    parser.add_argument("--redis-url", default=REDIS_URL, help="broker (and rate-limit storage) of the API.")
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one).")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/service_api_<mode>.json).")
    parser.add_argument("--set", action="append", default=[], metavar="CLEAR_X=VALUE",
                        help="an environment variable (a setting) for the server; repeatable.")
    parser.add_argument("--keep-log", action="store_true", help="print the server's log path and keep it.")
    return parser


def create_database() -> tuple[str, str]:
    """A new Postgres database migrated to head with Alembic; returns ``(name, SQLAlchemy URL)``."""
    return _create_database("clear_bench_")


def seed(url: str, *, jobs: int, events: int) -> dict[str, Any]:
    """A tenant with a read key, a ready dataset and ``jobs`` jobs of it, each with ``events`` events.

    Every fifth job is queued, every fifth running, one in ten failed, the rest succeeded (metrics of the last
    epoch, a report summary); every third succeeded job after the first retrains from the first (``from_job_id``),
    so lists compute comparisons. Returns ``{"key", "job_id", "job_ids", "dataset_id"}``; ``job_id`` is a
    succeeded retrain (the heaviest answer of ``GET /v1/jobs/{id}``).
    """
    from sqlalchemy import insert, text

    from app.db import get_engine, session_factory
    from app.models import Dataset, Job, JobEvent, utcnow
    from app.services.api_keys import create_key
    from app.services.configs import resolve_configs

    clear, training = resolve_configs("lora", True, {}, {"epochs": 3})
    with session_factory(url)() as session:
        key = create_key(session, TENANT, "read", name="bench").key
        now = utcnow()
        dataset = Dataset(tenant_id=TENANT, name="bench.csv", status="ready", format="csv", sha256="0" * 64,
                          size_bytes=123_456, row_count=2000, label_names=["0", "1", "2", "3"],
                          class_histogram={"0": 500, "1": 500, "2": 500, "3": 500},
                          columns={"text": "text", "label": "label"}, created_at=now - timedelta(days=1))
        session.add(dataset)
        session.flush()
        first_succeeded, ids, retrain_id = None, [], None
        for i in range(jobs):
            status = ("queued" if i % 5 == 1 else "running" if i % 5 == 2 else "failed" if i % 10 == 3
                      else "succeeded")
            created = now - timedelta(minutes=jobs - i)
            finished = status in ("succeeded", "failed")
            job = Job(tenant_id=TENANT, dataset_id=dataset.id, validation_fraction=0.1, base_model="all-MiniLM-L6-v2",
                      method="lora", routed=True, clear_config=clear, training_config=training, status=status,
                      attempt=0 if status == "queued" else 1, progress=1.0 if finished else 0.4 if status == "running"
                      else 0.0, epoch=3 if finished else 1 if status == "running" else None,
                      global_step=240 if finished else 80 if status == "running" else 0, max_steps=240,
                      phase="routed" if status != "queued" else None, loss=0.31 if status != "queued" else None,
                      metrics=EPOCHS[-1] if status == "succeeded" else None,
                      report_summary=SUMMARY if status == "succeeded" else None,
                      error_code="training_failed" if status == "failed" else None,
                      error_message="CUDA out of memory" if status == "failed" else None,
                      created_at=created, enqueued_at=created,
                      started_at=created + timedelta(seconds=2) if status != "queued" else None,
                      finished_at=created + timedelta(seconds=50) if finished else None,
                      time_limit_s=86400, soft_time_limit_s=82080,
                      from_job_id=first_succeeded if status == "succeeded" and first_succeeded and i % 3 == 0
                      else None)
            session.add(job)
            session.flush()
            ids.append(job.id)
            if status == "succeeded":
                first_succeeded = first_succeeded or job.id
                if job.from_job_id:
                    retrain_id = job.id
            rows = [{"job_id": job.id, "tenant_id": TENANT, "seq": s + 1, "type": "epoch" if s % 4 == 1 else "state"
                     if s % 4 == 0 else "message", "message": f"event {s + 1} of job {i}",
                     "data": EPOCHS[s % 3] if s % 4 == 1 else {"status": status} if s % 4 == 0 else None,
                     "created_at": created + timedelta(seconds=s)} for s in range(events)]
            if rows:
                session.execute(insert(JobEvent), rows)
        session.commit()
    with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))  # the planner's statistics, as autovacuum would have them on a live database
    return {"key": key, "job_id": retrain_id or ids[-1], "job_ids": ids, "dataset_id": dataset.id}


def start_server(url: str, redis_url: str, port: int, data_dir: Path, log_path: Path,
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m uvicorn app.main:app`` (one process) on ``port``, logging to ``log_path``, with ``extra_env``
    added to its environment (settings such as ``CLEAR_DB_POOL_SIZE``); returns once ``/healthz`` answers 200.

    Raises:
        RuntimeError: the server exited or did not answer within 60 s (its log's tail in the message).
    """
    env = dict(os.environ, CLEAR_DATA_DIR=str(data_dir), CLEAR_DATABASE_URL=url, CLEAR_BROKER_URL=redis_url,
               CLEAR_RATE_LIMIT=BENCH_RATE_LIMIT, **(extra_env or {}))
    return serve_app("app.main:app", env, port, log_path, "the API")


def serve_app(app: str, env: dict[str, str], port: int, log_path: Path, name: str) -> subprocess.Popen:
    """``python -m uvicorn <app>`` (one process, ``PYTHONPATH`` this checkout) on 127.0.0.1:``port`` with ``env``,
    logging to ``log_path``; returns once its ``/healthz`` answers 200.

    Raises:
        RuntimeError: the server (``name`` in the message) exited or did not answer within 60 s (its log's tail).
    """
    import httpx

    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--log-level", "warning"]
    log = log_path.open("wb")
    proc = subprocess.Popen(command, env=dict(env, PYTHONPATH=str(REPO_ROOT)), cwd=REPO_ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"{name} did not answer /healthz within 60 s: {log_path.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def seconds(text: str) -> float | None:
    """wrk's duration text (``"486.20ms"``, ``"1.02s"``, ``"950.00us"``, ``"2.00m"``) in seconds; None for
    anything else (wrk prints ``-nan`` or nothing when no request completed)."""
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    return float(match.group(1)) * UNITS_S[match.group(2)] if match else None


def parse_wrk(output: str) -> dict[str, Any]:
    """The numbers of one ``wrk --latency`` run: ``requests``, ``duration_s``, ``requests_per_s``, ``p50_s``,
    ``p75_s``, ``p90_s``, ``p99_s`` (None when no request completed), ``non_2xx_3xx``, ``socket_errors``
    (``{"connect", "read", "write", "timeout"}``, zeros when wrk printed none) and ``errors`` (their sum).

    Raises:
        ValueError: the output holds no ``N requests in T`` line (wrk failed to run).
    """
    total = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+)", output, re.M)
    if total is None:
        raise ValueError(f"not wrk output: {output[-500:]!r}")
    rate = re.search(r"^Requests/sec:\s*([0-9.]+)", output, re.M)
    out: dict[str, Any] = {"requests": int(total.group(1)), "duration_s": seconds(total.group(2)),
                           "requests_per_s": float(rate.group(1)) if rate else 0.0}
    for pct in (50, 75, 90, 99):
        found = re.search(rf"^\s*{pct}(?:\.0+)?%\s+(\S+)", output, re.M)
        # with no request completed wrk still prints 0.00us: no latency was measured
        out[f"p{pct}_s"] = seconds(found.group(1)) if found and out["requests"] else None
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    out["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                    map(int, sockets.groups()) if sockets else (0, 0, 0, 0)))
    non_ok = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    out["non_2xx_3xx"] = int(non_ok.group(1)) if non_ok else 0
    out["errors"] = out["non_2xx_3xx"] + sum(out["socket_errors"].values())
    return out


def run_wrk(url: str, key: str | None, args: argparse.Namespace, duration: int) -> tuple[dict[str, Any], str]:
    """One wrk run on ``url`` (with the key's ``Authorization`` header when given); ``(numbers, raw output)``."""
    command = [WRK, f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--latency",
               "--timeout", args.timeout]
    if key:
        command += ["-H", f"Authorization: Bearer {key}"]
    done = subprocess.run(command + [url], capture_output=True, text=True, timeout=duration + 120)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {output[-1000:]}")
    return parse_wrk(output), output


def ratios(rows: list[dict[str, Any]]) -> None:
    """Add ``rps_ratio``, ``p99_ratio`` and ``meets_target`` to each row against the ``/healthz`` row (in place)."""
    base = rows[0]
    for row in rows:
        row["rps_ratio"] = row["requests_per_s"] / base["requests_per_s"] if base["requests_per_s"] else None
        row["p99_ratio"] = (row["p99_s"] / base["p99_s"] if row["p99_s"] is not None and base["p99_s"]
                            else None)
        row["meets_target"] = bool(row["errors"] == 0 and row["rps_ratio"] is not None and row["p99_ratio"] is not None
                                   and row["rps_ratio"] >= TARGET_RPS_RATIO and row["p99_ratio"] <= TARGET_P99_RATIO)


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of the runs (milliseconds, ratios to /healthz)."""
    def ms(value: float | None) -> float | None:
        return None if value is None else value * 1000

    headers = ["route", "requests/s", "p50 ms", "p99 ms", "non-2xx/3xx", "socket errors", "req/s ÷ healthz",
               "p99 ÷ healthz", "target met"]
    body = [[r["route"], r["requests_per_s"], ms(r["p50_s"]), ms(r["p99_s"]), r["non_2xx_3xx"],
             sum(r["socket_errors"].values()), r["rps_ratio"], r["p99_ratio"],
             "—" if r["route"] == "/healthz" else "yes" if r["meets_target"] else "no"] for r in rows]
    return markdown_table(headers, body)


def environment() -> dict[str, Any]:
    """Machine, load and versions of this run (JSON-serialisable; no torch import)."""
    import fastapi
    import sqlalchemy
    import uvicorn

    git = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "app", "bench"],
                           capture_output=True, text=True)
    wrk = subprocess.run([WRK, "--version"], capture_output=True, text=True)
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "fastapi": fastapi.__version__, "sqlalchemy": sqlalchemy.__version__, "uvicorn": uvicorn.__version__,
            "wrk": (wrk.stdout + wrk.stderr).splitlines()[0] if (wrk.stdout + wrk.stderr) else None,
            "git_commit": git.stdout.strip() or None, "git_dirty": bool(dirty.stdout.strip()),
            "load_average_at_start": list(os.getloadavg())}


def main(argv: list[str]) -> int:
    """Run the benchmark (see the module's docstring); print the table (met or missed per route), write the JSON.
    Returns 0 once the run completed (whether or not the targets were met: see ``all_targets_met`` in the JSON),
    2 when wrk is missing."""
    args = build_parser().parse_args(argv)
    duration = args.duration or (QUICK_DURATION_S if args.quick else FULL_DURATION_S)
    if not Path(WRK).is_file():
        print(f"{WRK} not found: install Debian's wrk package (apt-get install wrk)", file=sys.stderr)
        return 2
    start, env = time.perf_counter(), environment()
    name, url = create_database()
    workdir = Path(tempfile.mkdtemp(prefix="clear-bench-api-"))
    log_path = workdir / "api.log"
    proc = None
    try:
        seeded = seed(url, jobs=args.jobs, events=args.events)
        port = args.port or free_port()
        extra = dict(item.split("=", 1) for item in args.set)
        proc = start_server(url, args.redis_url, port, workdir / "data", log_path, extra)
        base = f"http://127.0.0.1:{port}"
        job = seeded["job_id"]
        routes = [("/healthz", "/healthz"), ("GET /v1/jobs/{id}", f"/v1/jobs/{job}"),
                  ("GET /v1/jobs?limit=20", "/v1/jobs?limit=20"),
                  ("GET /v1/jobs/{id}/events?limit=50", f"/v1/jobs/{job}/events?limit=50")]
        rows, raw = [], {}
        for route, path in routes:
            numbers, output = run_wrk(base + path, None if route == "/healthz" else seeded["key"], args, duration)
            rows.append({"route": route, "path": path, **numbers})
            raw[route] = output
            print(f"{route}: {numbers['requests_per_s']:.1f} requests/s, {numbers['errors']} errors", flush=True)
    finally:
        if proc is not None:
            stop_server(proc)
        drop_database(name, url)
    ratios(rows)
    env["load_average_at_end"] = list(os.getloadavg())
    text = table(rows)
    mode = "quick" if args.quick else "full"
    print(f"\n## API under {args.connections} connections ({mode}; wrk -t{args.threads} -c{args.connections} "
          f"-d{duration}s --latency --timeout {args.timeout}; one uvicorn process; {args.jobs} jobs x "
          f"{args.events} events; {os.cpu_count()} CPUs, load {env['load_average_at_start'][0]:.1f})\n")
    print(text)
    payload = {"script": "service_api", "mode": mode, "settings": {**vars(args), "duration": duration},
               "wrk_command": f"wrk -t{args.threads} -c{args.connections} -d{duration}s --latency --timeout "
                              f"{args.timeout} -H 'Authorization: Bearer <read key>' URL",
               "server": "python -m uvicorn app.main:app --workers 1 --log-level warning (Postgres, broker Redis, "
                         "no Celery worker)",
               "rate_limit": {"setting": f"CLEAR_RATE_LIMIT={BENCH_RATE_LIMIT}",
                              "why": "raised so that the key's rate limit never rejects the benchmark; the limiter "
                                     "still counts every request in Redis"},
               "targets": {"rps_ratio_min": TARGET_RPS_RATIO, "p99_ratio_max": TARGET_P99_RATIO, "errors": 0},
               "environment": env, "routes": rows, "table": text, "wrk_output": raw,
               "all_targets_met": all(r["meets_target"] for r in rows[1:]),
               "wall_time_s": time.perf_counter() - start}
    path = write_results(payload, script="service_api", quick=args.quick, out=args.out)
    if args.keep_log:
        print(f"server log: {log_path}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nwrote {path} in {payload['wall_time_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
