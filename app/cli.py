"""Command line: ``python -m app.cli migrate`` (Alembic upgrade head) and ``python -m app.cli serve``
(the embedded service: migrations, then one API process and one worker process, stopped together)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parent.parent


def migrate(settings: Settings) -> None:
    """Bring the database named by ``settings`` to the newest schema."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", settings.database_url)
    config.attributes["configure_logger"] = False  # keep the caller's logging as it is
    command.upgrade(config, "head")


def _children(settings: Settings, host: str, port: int, worker: bool) -> list[subprocess.Popen]:
    env = dict(os.environ, CLEAR_DATA_DIR=str(settings.data_dir.resolve()), CLEAR_DATABASE_URL=settings.database_url,
               CLEAR_BROKER_URL=settings.broker_url, CLEAR_ARTIFACT_URL=settings.artifact_url)
    api = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", host, "--port", str(port),
           "--log-level", "warning"]
    procs = [subprocess.Popen(api, env=env, cwd=ROOT)]
    if worker:
        celery = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--concurrency", "1",
                  "--queues", "jobs", "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
        procs.append(subprocess.Popen(celery, env=env, cwd=ROOT))
    return procs


def _stop(procs: list[subprocess.Popen], timeout: float = 20.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve(settings: Settings, host: str, port: int, worker: bool = True) -> int:
    """Run the API (and a worker) until either exits or this process gets SIGINT/SIGTERM."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.is_embedded:
        migrate(settings)
    procs = _children(settings, host, port, worker)
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    print(f"CleaR service on http://{host}:{port} (docs at /docs); data in {settings.data_dir}", flush=True)
    try:
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.3)
    finally:
        _stop(procs)
    return 0 if stopping else 1


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the sub-command."""
    parser = argparse.ArgumentParser(prog="python -m app.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply the database migrations")
    run = sub.add_parser("serve", help="start the API and one worker")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--no-worker", action="store_true", help="start the API only")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.command == "migrate":
        migrate(settings)
        return 0
    return serve(settings, args.host, args.port, worker=not args.no_worker)


if __name__ == "__main__":
    sys.exit(main())
