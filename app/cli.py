"""Command line: ``python -m app.cli migrate`` (Alembic upgrade head), ``python -m app.cli serve`` (the
embedded service: migrations, the local tenant's key at first start, then one API process and one worker
process, stopped together: SIGTERM or Ctrl-C is passed on to both, and the worker gets up to ``--stop-timeout``
seconds to checkpoint its running job and put it back in the queue), and the administration of keys and quotas:

    python -m app.cli create-key --tenant NAME --scopes read,write [--name LABEL]   # prints the key once
    python -m app.cli list-keys [--tenant NAME]
    python -m app.cli revoke-key PREFIX
    python -m app.cli set-quotas --tenant NAME [--concurrent-jobs N] [--stored-rows N] [--upload-bytes N]
                                 [--jobs-per-hour N]                               # 0: back to the default
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from app.db import session_factory
from app.errors import ServiceError
from app.models import Tenant
from app.ops.health import schema_problem
from app.services import api_keys
from app.settings import Settings, get_settings
from clearft import local

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 60.0
API_GRACE_S = 5  # whole seconds (uvicorn's --timeout-graceful-shutdown)


def migrate(settings: Settings) -> None:
    """Bring the database named by ``settings`` to the newest schema."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", settings.database_url)
    config.attributes["configure_logger"] = False  # keep the caller's logging as it is
    command.upgrade(config, "head")


def _children(settings: Settings, listening: socket.socket, worker: bool) -> list[subprocess.Popen]:
    env = dict(os.environ, CLEAR_DATA_DIR=str(settings.data_dir.resolve()), CLEAR_DATABASE_URL=settings.database_url,
               CLEAR_BROKER_URL=settings.broker_url, CLEAR_ARTIFACT_URL=settings.artifact_url)
    fd = listening.fileno()  # the API serves on serve's own bound socket
    # a stopping API waits at most API_GRACE_S for its open requests (a client stalled mid-upload held a stop for
    # the whole body idle timeout, 60 s), then cancels them: nothing half-stored, their spooled files removed
    api = [sys.executable, "-m", "uvicorn", "app.main:app", "--fd", str(fd), "--log-level", "warning",
           "--timeout-graceful-shutdown", str(API_GRACE_S)]
    procs = [subprocess.Popen(api, env=env, cwd=ROOT, pass_fds=(fd,))]
    if worker:
        celery = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--concurrency", "1",
                  "--queues", "jobs", "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
        procs.append(subprocess.Popen(celery, env=env, cwd=ROOT))
    return procs


def _stop(procs: list[subprocess.Popen], signals: list[int], timeout: float) -> None:
    """SIGTERM every child that still runs (the API stops at once; the worker's warm shutdown checkpoints its
    running job at the next step and queues it again, see ``worker.shutdown``) and wait for them, at most
    ``timeout`` seconds in all or until one more signal lands in ``signals``; then kill what still runs (a job
    then waits for the reaper, as after a crash)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    told, deadline = len(signals), time.monotonic() + timeout
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline and len(signals) == told:
        time.sleep(0.1)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def ensure_local_key(settings: Settings) -> tuple[str | None, Path]:
    """The embedded service's key: if ``settings.api_key_file`` holds an active key, None (nothing new);
    otherwise a new key of the tenant ``local`` with every scope, written to that file (mode 0600) and
    returned, so that it is printed once."""
    path = Path(settings.api_key_file)
    with session_factory(settings.database_url)() as session:
        if path.exists() and api_keys.find_key(session, path.read_text().strip()) is not None:
            return None, path
        new = api_keys.create_key(session, api_keys.LOCAL_TENANT, list(api_keys.SCOPES), name="embedded default")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the mode of os.open only applies to a new file: an old, readable one is narrowed too
    with os.fdopen(fd, "w") as fh:
        fh.write(new.key + "\n")
    return new.key, path


def listen_on(host: str, port: int) -> socket.socket | None:
    """A socket bound to ``host``:``port`` and listening (``SO_REUSEADDR``, as uvicorn binds), or None when the port
    is taken. ``serve`` binds it before it makes anything and hands it to the API process (``uvicorn --fd``), so
    no other server can take the port while the service starts and whatever answers on it is this service's API."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        return None
    sock.set_inheritable(True)
    return sock


def _answers(host: str, port: int) -> bool:
    """Whether the API on ``port`` answers ``/healthz`` (on 127.0.0.1 when it listens on every address)."""
    import httpx

    target = "127.0.0.1" if host in ("0.0.0.0", "") else local.url_host(host)
    try:
        return httpx.get(f"http://{target}:{port}/healthz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def serve(settings: Settings, host: str, port: int, worker: bool = True, stop_timeout: float = STOP_TIMEOUT_S
          ) -> int:
    """Run the API (and a worker) until either exits or this process gets SIGINT/SIGTERM, then stop both (the
    worker gets ``stop_timeout`` seconds to checkpoint and requeue its running job; a second SIGINT/SIGTERM stops
    at once); the embedded mode migrates first and makes the local tenant's key at first start. Returns the exit
    status: 0 when stopped by a signal, 1 when a child ended by itself or the port is taken (then nothing is started).
    The service is announced, and its key registered for ``clearft`` (embedded mode), once the API answers."""
    listening = listen_on(host, port)  # before anything is made (a data folder, a database, a key), and held
    if listening is None:
        print(f"port {port} on {host} is in use (another service?): stop it or start with another --port",
              file=sys.stderr, flush=True)
        return 1
    try:
        return _serve(settings, host, port, listening, worker, stop_timeout)
    finally:
        listening.close()


def _serve(settings: Settings, host: str, port: int, listening: socket.socket, worker: bool,
           stop_timeout: float) -> int:
    """``serve`` once its port is bound (``listening``)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.is_embedded:
        migrate(settings)
        key, path = ensure_local_key(settings)
        if key:
            print(f"API key of the local tenant (shown once; also in {path}):\n    {key}", flush=True)
        else:
            print(f"API key of the local tenant: in {path}", flush=True)
    procs = _children(settings, listening, worker)
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    announced = False
    try:
        while not stopping and all(p.poll() is None for p in procs):
            if not announced and _answers(host, port):  # listening: only now say so and register the key
                announced = True
                if settings.is_embedded:
                    # so that `clearft` finds this key from any folder, not only from the one holding var/
                    local.register(local.service_urls(host, port), path)
                print(f"CleaR service on http://{local.url_host(host)}:{port} (docs at /docs); data in "
                      f"{settings.data_dir}",
                      flush=True)
            time.sleep(0.3 if announced else 0.05)  # often until the API answers: clients wait on its /healthz
        for name, proc in zip(("the API", "the worker"), procs):
            if not stopping and proc.poll() is not None:  # say which one ended, and how, before stopping the rest
                print(f"{name} exited with status {proc.returncode} (its log is above): stopping the service",
                      file=sys.stderr, flush=True)
    finally:
        if worker:
            print(f"stopping: a running job is checkpointed and queued again (waiting up to {stop_timeout:g} s; "
                  "Ctrl-C again stops at once)", flush=True)
        _stop(procs, stopping, stop_timeout)
        if announced and settings.is_embedded:  # a stopped service's key file no longer answers for its URL
            local.unregister(local.service_urls(host, port), path)
    return 0 if stopping else 1


def _key_commands(sub: argparse._SubParsersAction) -> None:
    create = sub.add_parser("create-key", help="make an API key (printed once; only its hash is stored)")
    create.add_argument("--tenant", required=True, help="the tenant (made if new)")
    create.add_argument("--scopes", default="read,write", help="comma-separated: read, write, admin")
    create.add_argument("--name", help="a label for the key")
    sub.add_parser("list-keys", help="prefix, tenant, scopes and state of every key").add_argument("--tenant")
    sub.add_parser("revoke-key", help="revoke a key by its prefix").add_argument("prefix")
    quotas = sub.add_parser("set-quotas", help="a tenant's own quotas (0 resets one to the default)")
    quotas.add_argument("--tenant", required=True)
    for flag in ("concurrent-jobs", "stored-rows", "upload-bytes", "jobs-per-hour"):
        quotas.add_argument(f"--{flag}", type=int)


def run_key_command(settings: Settings, args: argparse.Namespace) -> int:
    """create-key, list-keys, revoke-key or set-quotas; prints the result, returns the exit status."""
    if settings.is_embedded:
        migrate(settings)
    with session_factory(settings.database_url)() as session:
        if args.command == "create-key":
            new = api_keys.create_key(session, args.tenant, args.scopes, name=args.name)
            print(f"API key for tenant {args.tenant} (scopes {','.join(new.record.scopes)}), shown only now:")
            print(new.key)
            print(f"prefix {new.record.prefix} (revoke with: python -m app.cli revoke-key {new.record.prefix})")
        elif args.command == "list-keys":
            for k in api_keys.list_keys(session, args.tenant):
                state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
                print(f"{k.prefix}  {k.tenant_id}  {','.join(k.scopes)}  {state}  {k.name or ''}".rstrip())
        elif args.command == "revoke-key":
            record = api_keys.revoke_key(session, args.prefix)
            print(f"revoked {record.prefix} (tenant {record.tenant_id})")
        else:
            new_tenant = session.get(Tenant, args.tenant) is None
            tenant = api_keys.set_quotas(session, args.tenant, **{f"max_{k}": getattr(args, k) for k in (
                "concurrent_jobs", "stored_rows", "upload_bytes", "jobs_per_hour")})
            if new_tenant:  # a typo makes a tenant: say so
                print(f"note: tenant {tenant.id} did not exist and was made; it has no API key yet (python -m "
                      f"app.cli create-key --tenant {tenant.id})", file=sys.stderr)
            print(f"tenant {tenant.id}: " + ", ".join(f"{c} {getattr(tenant, c) or 'default'}"
                                                      for c in api_keys.QUOTA_COLUMNS))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the sub-command (exit status 2 when a key command is refused)."""
    parser = argparse.ArgumentParser(prog="python -m app.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply the database migrations")
    run = sub.add_parser("serve", help="start the API and one worker")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--no-worker", action="store_true", help="start the API only")
    run.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT_S, metavar="SECONDS",
                     help="on SIGTERM/Ctrl-C, how long the worker may take to checkpoint and requeue its running "
                          f"job before it is killed (default {STOP_TIMEOUT_S:g})")
    _key_commands(sub)
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.command == "migrate":
        migrate(settings)
        return 0
    if args.command == "serve":
        if args.stop_timeout < 0:
            parser.error(f"--stop-timeout must be 0 or more seconds, not {args.stop_timeout:g}")
        return serve(settings, args.host, args.port, worker=not args.no_worker, stop_timeout=args.stop_timeout)
    try:
        return run_key_command(settings, args)
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:  # a raw traceback for a database nobody migrated: say what to run
        with session_factory(settings.database_url)() as session:
            problem = schema_problem(session)
        if problem is None:
            raise
        print(f"error: {problem} ({type(exc).__name__})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
