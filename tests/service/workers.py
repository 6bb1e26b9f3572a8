"""Real Celery worker processes for the chaos tests: started in their own process group (so SIGKILL
takes the whole worker, as a lost node would), with fast leases and one torch thread each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
FAST_LEASES = {"CLEAR_HEARTBEAT_INTERVAL_S": "0.5", "CLEAR_LEASE_TIMEOUT_S": "3", "CLEAR_REAPER_INTERVAL_S": "0.5",
               "CLEAR_PROGRESS_INTERVAL_S": "0", "CLEAR_WORKER_TORCH_THREADS": "1"}


def worker_env(settings: Settings, broker_url: str, **extra: str) -> dict[str, str]:
    """The environment of a worker on ``settings``' database and artifacts and ``broker_url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEAR_")}
    return dict(env, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
                CLEAR_DATABASE_URL=settings.database_url, CLEAR_BROKER_URL=broker_url,
                CLEAR_ARTIFACT_URL=settings.artifact_url, CLEAR_MODEL_DIR=str(settings.model_dir),
                CLEAR_DATA_DIR=str(settings.data_dir), **FAST_LEASES, **extra)


def start_worker(env: dict[str, str], log: Path, *, concurrency: int = 1) -> subprocess.Popen:
    """``celery worker`` on queue ``jobs``, logging to ``log``."""
    command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--concurrency", str(concurrency),
               "--queues", "jobs", "--without-gossip", "--without-mingle", "--without-heartbeat",
               "--loglevel", "INFO", "--logfile", str(log)]
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_worker(proc: subprocess.Popen) -> None:
    """SIGKILL the worker and its pool processes at once."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def stop_worker(proc: subprocess.Popen) -> None:
    """Stop the worker (SIGTERM to the group, SIGKILL after 20 s)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        kill_worker(proc)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll ``predicate()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
