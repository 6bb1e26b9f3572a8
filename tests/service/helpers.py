"""Builders for test datasets and uploads, and a real server of an app in a thread."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import numpy as np
import pandas as pd
import uvicorn

from clear_core import TrainerCallback

from tests.conftest import toy_texts
from tests.service.outages import free_port


def toy_frame(n: int = 60, *, num_classes: int = 3, noise: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """A separable topic task with a known fraction of flipped labels: columns id, text, label, gold."""
    texts, gold = toy_texts(n, num_classes=num_classes, seed=seed)
    rng = np.random.default_rng(seed + 1)
    label = gold.copy()
    flip = rng.choice(n, int(noise * n), replace=False)
    label[flip] = (gold[flip] + 1) % num_classes
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "text": texts, "label": label, "gold": gold})


def to_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    """The frame written as csv, jsonl or parquet."""
    if fmt == "csv":
        return frame.to_csv(index=False).encode()
    if fmt == "jsonl":
        return frame.to_json(orient="records", lines=True).encode()
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def upload(client, content: bytes, filename: str = "data.csv", **form: Any):
    """POST a dataset file with form fields; returns the response."""
    return client.post("/v1/datasets", files={"file": (filename, content)},
                       data={k: v for k, v in form.items() if v is not None})


def upload_frame(client, frame: pd.DataFrame, fmt: str = "csv", **form: Any) -> dict[str, Any]:
    """Upload ``frame`` (gold column mapped) and return the created dataset, asserting a 201."""
    form.setdefault("gold_label_column", "gold" if "gold" in frame else None)
    form.setdefault("id_column", "id" if "id" in frame else None)
    response = upload(client, to_bytes(frame, fmt), f"data.{fmt}", **form)
    assert response.status_code == 201, response.text
    return response.json()


def create_job(client, dataset_id: str, training: dict[str, Any], **body: Any) -> str:
    """POST a tiny-bert job (one warm-up epoch unless ``clear`` is given), assert 201, return its id."""
    body.setdefault("clear", {"warmup_epochs": 1})
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, "base_model": "tiny-bert",
                                             "training": training, **body})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def report_arrays(settings, job_id: str) -> dict[str, np.ndarray]:
    """A stored noise report as arrays in row order (p_clean NaN for held-out rows), for comparing two runs."""
    from sqlalchemy import select

    from app.db import session_factory
    from app.models import NoiseRow

    with session_factory(settings.database_url)() as session:
        rows = session.scalars(select(NoiseRow).where(NoiseRow.job_id == job_id).order_by(NoiseRow.row_index)).all()
    out = {k: np.array([getattr(r, k) for r in rows]) for k in
           ("label_quality", "flagged", "predicted_label", "suggested_label", "rank", "split", "flag_reason")}
    out["p_clean"] = np.array([np.nan if r.p_clean is None else r.p_clean for r in rows])
    return out


def all_decisions(client, job_id: str, *, limit: int | None = None, **params) -> tuple[list[dict], int]:
    """Every review decision of ``job_id``, read page by page (``limit`` per page): ``(decisions, count)``."""
    out, cursor = [], None
    while True:
        query = {**({"limit": limit} if limit else {}), **params, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/jobs/{job_id}/noise-report/decisions", params=query)
        assert page.status_code == 200, page.text
        body = page.json()
        out += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return out, body["count"]


class StepGate(TrainerCallback):
    """A trainer callback that holds training at the end of step ``at`` until ``release`` is set (to act between
    two steps: kill a worker, stop the database); ``reached`` is set when it holds. Fails the step if not
    released within ``wait_s`` seconds."""

    def __init__(self, at: int, *, wait_s: float = 60.0) -> None:
        self.at, self.wait_s = at, wait_s
        self.reached, self.release = threading.Event(), threading.Event()

    def on_step_end(self, state, control) -> None:
        """Hold at step ``at``."""
        if state.global_step == self.at:
            self.reached.set()
            assert self.release.wait(self.wait_s)


class ServerThread:
    """A real uvicorn server of ``app`` on 127.0.0.1 in a thread of this process (HTTP over a socket, uvicorn's
    own event loop and thread pool), for as long as the ``with`` block lasts."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
