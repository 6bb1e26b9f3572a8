"""A live service for the client, CLI and browser tests: uvicorn serving the API and a real Celery
worker (tiny BERT) on a fresh Postgres database and a Redis broker database of their own; one job run
to its end through the Python client, shared by the tests that only read results; and one job whose
(not reliable) report is written straight to that database, for the pages that show such a report."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from clearft import Client
from tests.service.conftest import (  # noqa: F401
    create_key, create_pg_database, drop_pg_database, model_dir, run_alembic)
from tests.service.helpers import toy_frame

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("CLEAR_TEST_CLIENTS_REDIS_URL", "redis://127.0.0.1:6379/11")
# a learning rate the tiny BERT learns the toy task with in 3 epochs, so that the report is reliable and flags rows
TRAINING = {"epochs": 3, "batch_size": 8, "max_length": 16, "learning_rate": 3e-2}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, procs: list[subprocess.Popen], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("the API or the worker exited while starting")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url}/readyz did not answer 200 within {timeout}s")


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def service_logs(tmp_path_factory) -> Path:
    """The folder where the live service's processes write their (JSON) logs: api.log, worker.log."""
    return tmp_path_factory.mktemp("live-logs")


@pytest.fixture(scope="session")
def live_database():
    """The SQLAlchemy URL of the live service's own migrated Postgres database (dropped after it stopped)."""
    name, db_url = create_pg_database()
    run_alembic(db_url, "upgrade", "head")
    yield db_url
    drop_pg_database(name, db_url)


@pytest.fixture(scope="session")
def live_service(tmp_path_factory, model_dir, service_logs, live_database):  # noqa: F811
    """The URL of a running API + worker pair. A key of tenant ``clients`` (every scope) is in
    ``$CLEARFT_API_KEY`` while the session lasts, where the Python client and the CLI find it."""
    db_url = live_database
    saved_key = os.environ.get("CLEARFT_API_KEY")
    os.environ["CLEARFT_API_KEY"] = create_key(db_url, "clients")
    redis.Redis.from_url(REDIS_URL).flushdb()
    data = tmp_path_factory.mktemp("live-service")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEAR_", "CLEARFT_"))}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", CLEAR_DATABASE_URL=db_url,
               CLEAR_BROKER_URL=REDIS_URL, CLEAR_ARTIFACT_URL=str(data / "artifacts"), CLEAR_DATA_DIR=str(data),
               CLEAR_MODEL_DIR=str(model_dir), CLEAR_LOG_LEVEL="INFO")
    port = free_port()
    api = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--log-level", "warning"]
    worker = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--concurrency", "1",
              "--queues", "jobs", "--without-gossip", "--without-mingle"]
    logs = [(service_logs / "api.log").open("w"), (service_logs / "worker.log").open("w")]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
             for cmd, log in zip((api, worker), logs)]
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, procs)
        yield url
    finally:
        _stop(procs)
        for log in logs:
            log.close()
        if saved_key is None:
            os.environ.pop("CLEARFT_API_KEY", None)
        else:
            os.environ["CLEARFT_API_KEY"] = saved_key


@pytest.fixture(scope="session")
def finished_job(live_service, tmp_path_factory):
    """A job on 60 toy rows (20 % flipped, 20 % held out), run to success through the Python client."""
    path = tmp_path_factory.mktemp("upload") / "toy.csv"
    toy_frame(60).to_csv(path, index=False)
    with Client(live_service) as client:
        dataset = client.datasets.upload(path, id_column="id", gold_label_column="gold", name="toy topics")
        job = client.jobs.create(dataset.id, base_model="tiny-bert", validation_fraction=0.2,
                                 clear={"warmup_epochs": 1}, training=TRAINING).wait(timeout=240, check=True)
    return job


def unqueued_job(url: str, database_url: str, model_dir: Path, folder: Path, frame) -> str:
    """A ``queued`` job of tenant ``clients`` on ``frame`` (uploaded through the API) that was never handed to
    the worker, so that a test can write its events and results itself; returns its id."""
    from app.db import session_factory
    from app.services.jobs import create_job
    from app.settings import Settings

    path = folder / "toy.csv"
    frame.to_csv(path, index=False)
    with Client(url) as client:
        dataset = client.datasets.upload(path, id_column="id", gold_label_column="gold", name="toy, written by hand")
    settings = Settings(data_dir=folder, database_url=database_url, model_dir=model_dir)
    with session_factory(database_url)() as session:
        job = create_job(session, {"dataset_id": dataset.id, "method": "lora", "routed": True,
                                   "base_model": "tiny-bert", "training": {"epochs": 2}},
                         tenant_id="clients", settings=settings, enqueue=lambda _: None)
        return job.id


@pytest.fixture(scope="session")
def unreliable_job(live_service, live_database, model_dir, tmp_path_factory):  # noqa: F811
    """A job on 60 toy rows whose results are written straight to the live database: a report that is not
    reliable, its flags withheld, two warning events."""
    from tests.clients import fake_report

    frame = toy_frame(60)
    job_id = unqueued_job(live_service, live_database, model_dir, tmp_path_factory.mktemp("unreliable"), frame)
    fake_report.finish_job(live_database, job_id, "clients", [str(v) for v in frame["label"]], reliable=False)
    return job_id
