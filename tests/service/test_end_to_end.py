"""End to end with real processes: a Celery worker on Redis + Postgres runs a job submitted through
the API; and the embedded service (``python -m app.cli serve``: SQLite, kombu's SQLAlchemy broker,
local artifacts) does the same from one command."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import redis

from app.main import create_app
from tests.service.helpers import to_bytes, toy_frame

ROOT = Path(__file__).resolve().parents[2]
TRAINING = {"epochs": 2, "batch_size": 16, "max_length": 16}


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEAR_")}
    return dict(env, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **values)


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _wait_for_terminal(get_job, job_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get_job(job_id)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")


def _check_results(http, job_id: str, rows: int, tmp_path: Path, model_path: Path) -> None:
    from clear_core import load_adapter

    report = http.get(f"/v1/jobs/{job_id}/noise-report", params={"limit": 1000}).json()
    assert report["count"] == rows == len(report["data"]) == report["summary"]["rows"]
    archive = http.get(f"/v1/jobs/{job_id}/adapter")
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        tar.extractall(tmp_path / "adapter", filter="data")
    model = load_adapter(tmp_path / "adapter", model_path=model_path)
    assert model.predict_logits(["market stocks"]).shape == (1, 3)


def _submit(http, rows: int) -> str:
    files = {"file": ("train.csv", to_bytes(toy_frame(rows), "csv"))}
    dataset = http.post("/v1/datasets", files=files, data={"gold_label_column": "gold", "id_column": "id"})
    assert dataset.status_code == 201, dataset.text
    job = http.post("/v1/jobs", json={"dataset_id": dataset.json()["id"], "base_model": "tiny-bert",
                                      "training": TRAINING, "clear": {"warmup_epochs": 1}})
    assert job.status_code == 201, job.text
    return job.json()["id"]


def test_a_real_worker_runs_a_job_from_redis_on_postgres(settings, tmp_path, auth):
    from fastapi.testclient import TestClient

    redis.Redis.from_url(settings.broker_url).flushdb()
    env = _env(CLEAR_DATABASE_URL=settings.database_url, CLEAR_BROKER_URL=settings.broker_url,
               CLEAR_ARTIFACT_URL=settings.artifact_url, CLEAR_MODEL_DIR=str(settings.model_dir),
               CLEAR_DATA_DIR=str(tmp_path))
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--concurrency",
                               "1", "--queues", "jobs", "--without-gossip", "--without-mingle", "--loglevel",
                               "WARNING"], cwd=ROOT, env=env)
    try:
        with TestClient(create_app(settings), headers=auth) as http:  # the real Celery enqueuer
            job_id = _submit(http, 48)
            job = _wait_for_terminal(lambda j: http.get(f"/v1/jobs/{j}").json(), job_id)
            assert job["status"] == "succeeded", job
            assert job["attempt"] == 1
            _check_results(http, job_id, 48, tmp_path, settings.model_dir / "tiny-bert")
    finally:
        assert _stop(worker) is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_embedded_service_runs_a_job_from_one_command(model_dir, tmp_path):
    port = _free_port()
    env = _env(CLEAR_DATA_DIR=str(tmp_path / "var"), CLEAR_MODEL_DIR=str(model_dir))
    service = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], cwd=ROOT, env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
            assert http.get("/v1/jobs").status_code == 401  # no key, no answer
            key = (tmp_path / "var" / "api-key").read_text().strip()  # made and written at first start
            http.headers["Authorization"] = f"Bearer {key}"
            job_id = _submit(http, 36)
            job = _wait_for_terminal(lambda j: http.get(f"/v1/jobs/{j}").json(), job_id)
            assert job["status"] == "succeeded", job
            _check_results(http, job_id, 36, tmp_path, model_dir / "tiny-bert")
        assert (tmp_path / "var" / "clear.db").is_file() and (tmp_path / "var" / "broker.db").is_file()
    finally:
        code = _stop(service)
    assert code == 0  # stopped on request, children stopped with it
