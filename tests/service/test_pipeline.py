"""The worker's plain pipeline on the tiny model against Postgres: success with a full report and a
verified adapter, held-out splits, cancellation mid-training, failures recorded, no double runs."""

from __future__ import annotations

import shutil
import tarfile
import threading
import time

import numpy as np
from sqlalchemy import func, select

from app.db import session_factory
from app.models import Job, NoiseRow
from tests.service.helpers import create_job, toy_frame, upload_frame
from worker.pipeline import execute_job

FAST = {"epochs": 3, "batch_size": 16, "max_length": 16, "eval_batch_size": 64}


def _job(client, dataset_id, **body):
    return create_job(client, dataset_id, body.pop("training", FAST), **body)


def _noise_rows(settings, job_id):
    with session_factory(settings.database_url)() as session:
        return session.scalar(select(func.count()).select_from(NoiseRow).where(NoiseRow.job_id == job_id))


def test_job_succeeds_with_one_report_row_per_training_row_and_a_loading_adapter(client, settings, tmp_path):
    from clear_core import load_adapter

    train = upload_frame(client, toy_frame(90, noise=0.2))
    held = upload_frame(client, toy_frame(30, noise=0.0, seed=7))
    job_id = _job(client, train["id"], validation_dataset_id=held["id"])
    assert execute_job(job_id, settings=settings, progress_interval_s=0) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["attempt"], job["progress"], job["epoch"]) == ("succeeded", 1, 1.0, 3)
    assert 0.0 <= job["metrics"]["eval_accuracy"] <= 1.0 and "noise_precision" in job["metrics"]
    events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
    assert [e["data"]["status"] for e in events if e["type"] == "state"] == ["queued", "running", "succeeded"]
    assert [e["data"]["epoch"] for e in events if e["type"] == "epoch"] == [1, 2, 3]
    assert _noise_rows(settings, job_id) == 90 == job["report_summary"]["rows"]
    flagged = client.get(f"/v1/jobs/{job_id}/noise-report", params={"flagged": "true"}).json()["count"]
    assert flagged == job["report_summary"]["flagged"]
    archive = tmp_path / "adapter.tar.gz"
    archive.write_bytes(client.get(f"/v1/jobs/{job_id}/adapter").content)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "adapter", filter="data")
    model = load_adapter(tmp_path / "adapter", model_path=settings.model_dir / "tiny-bert")
    logits = model.predict_logits(["market stocks bank", "team match goal"])
    assert logits.shape == (2, 3) and np.isfinite(logits).all() and model.label_names == ["0", "1", "2"]
    card = (tmp_path / "adapter" / "README.md").read_text()  # the model card, with the job's own numbers
    assert "- Rows: 90 (" in card and "CleaR routing: on" in card
    assert f"Estimated label noise: {job['report_summary']['estimated_noise_rate']:.1%}" in card


def test_validation_rows_are_held_out_of_training_but_in_the_report(client, settings):
    dataset = upload_frame(client, toy_frame(60))
    job_id = _job(client, dataset["id"], validation_fraction=0.25, method="bitfit", routed=False,
                  training={**FAST, "epochs": 1}, clear={})
    assert execute_job(job_id, settings=settings) == "succeeded"
    assert _noise_rows(settings, job_id) == 60  # every uploaded row has a report row
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["validation_fraction"] == 0.25 and job["training"]["validation_fraction"] == 0.25
    assert "validation_agreement" in job["metrics"] and job["report_summary"]["validation_rows"] == 15
    held = client.get(f"/v1/jobs/{job_id}/noise-report", params={"split": "validation", "limit": 100}).json()
    assert held["count"] == 15 and all(r["split"] == "validation" and r["p_clean"] is None for r in held["data"])
    counts = toy_frame(60)["label"].astype(str).value_counts()  # stratified by given label
    held_counts = {k: sum(r["given_label"] == k for r in held["data"]) for k in counts.index}
    assert held_counts == {k: round(0.25 * n) for k, n in counts.items()}
    assert all(r["flag_reason"] for r in held["data"])


def test_cancel_stops_a_running_job_within_steps(client, settings):
    dataset = upload_frame(client, toy_frame(60))
    job_id = _job(client, dataset["id"], training={**FAST, "epochs": 500})
    outcome = []
    runner = threading.Thread(target=lambda: outcome.append(
        execute_job(job_id, settings=settings, progress_interval_s=0)))
    runner.start()
    factory = session_factory(settings.database_url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with factory() as session:
            if session.get(Job, job_id).global_step > 0:
                break
        time.sleep(0.2)
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelling"
    runner.join(120)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert outcome == ["cancelled"] and job["status"] == "cancelled" and job["progress"] < 0.5
    states = [e["data"]["status"] for e in client.get(f"/v1/jobs/{job_id}/events").json()["data"]
              if e["type"] == "state"]
    assert states == ["queued", "running", "cancelling", "cancelled"]
    assert _noise_rows(settings, job_id) == 0


def test_a_failing_job_ends_failed_with_its_error(client, settings):
    # a model folder that is fine when the job is created (an unusable one is a 422 then) and broken by the
    # time a worker runs it
    folder = settings.model_dir / "not-a-model"
    shutil.copytree(settings.model_dir / "tiny-bert", folder, dirs_exist_ok=True)
    dataset = upload_frame(client, toy_frame(30))
    job_id = _job(client, dataset["id"], base_model="not-a-model")
    (folder / "config.json").unlink()
    try:
        assert execute_job(job_id, settings=settings) == "failed"
    finally:
        shutil.rmtree(folder)  # the model folder is the session's: leave it as it was
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["error"]["code"] == "invalid_input"
    assert "config.json" in job["error"]["message"] and _noise_rows(settings, job_id) == 0


def test_a_job_that_is_not_queued_is_not_run_again(client, settings):
    dataset = upload_frame(client, toy_frame(30))
    job_id = _job(client, dataset["id"])
    client.post(f"/v1/jobs/{job_id}/cancel")
    assert execute_job(job_id, settings=settings) == "skipped"
    assert client.get(f"/v1/jobs/{job_id}").json()["attempt"] == 0


def test_a_job_that_cannot_learn_warns_and_withholds_its_flags(client, settings):
    frame = toy_frame(240)
    frame["label"] = np.random.default_rng(3).permutation(frame["label"].to_numpy())  # labels carry no signal
    dataset = upload_frame(client, frame)
    job_id = _job(client, dataset["id"], training={**FAST, "epochs": 4, "learning_rate": 3e-2},
                  clear={"warmup_epochs": 2})
    assert execute_job(job_id, settings=settings) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    summary = job["report_summary"]
    assert summary["reliability"]["verdict"] == "not reliable" and summary["flags_withheld"]
    assert summary["flagged"] == 0 and job["metrics"]["warnings"]
    warnings = [e for e in client.get(f"/v1/jobs/{job_id}/events").json()["data"] if e["type"] == "warning"]
    assert [w["data"]["stage"] for w in warnings] == ["after_warmup", "end"]
    assert "majority-class rate" in warnings[0]["message"] and "learning_rate" in warnings[0]["message"]
    report = client.get(f"/v1/jobs/{job_id}/noise-report", params={"limit": 500}).json()
    assert report["count"] == 240 and not any(r["flagged"] for r in report["data"])
    assert all(0 <= r["label_quality"] <= 1 for r in report["data"])  # rows keep their scores


def test_a_resumed_attempt_does_not_post_a_warning_the_job_already_has(client, settings):
    """An attempt that resumes from a checkpoint older than an earlier attempt's warning redoes that stage: the job's
    log keeps the one warning; a stage it has not warned about yet is posted."""
    from types import SimpleNamespace

    from app.db import session_factory
    from app.services.transitions import add_event
    from worker.progress import JobProgress

    dataset = upload_frame(client, toy_frame(30))
    job_id = _job(client, dataset["id"])
    factory = session_factory(settings.database_url)
    with factory() as session:
        add_event(session, job_id, "warning", message="not learned after warm-up", data={"stage": "after_warmup"})
        session.commit()
    posted = []
    lease = SimpleNamespace(factory=factory, job_id=job_id, attempt=2, renew=lambda **_fields: "running",
                            post=lambda type_, message, data=None, **_kw: posted.append((type_, data)))
    progress = JobProgress(lease)
    state = SimpleNamespace(global_step=12, epoch=1, max_steps=40, progress=0.3, phase="warmup", loss=1.0,
                            num_epochs=4)
    control = SimpleNamespace(should_training_stop=False)
    progress.on_train_begin(state, control)
    for stage in ("after_warmup", "end", "end"):
        progress.on_warning(state, control, {"stage": stage, "message": f"not learned ({stage})", "reliability": {}})
    assert [t for t, _ in posted] == ["resumed", "warning"] and posted[1][1]["stage"] == "end"


def test_progress_is_written_at_a_checkpoint_once_per_step():
    """A checkpoint writes the job's progress (a stopping worker hands the job back at it), but the epoch-end one
    follows ``on_evaluate``, which already wrote that step: no second UPDATE of the same progress."""
    from types import SimpleNamespace

    from worker.progress import JobProgress

    renewed = []
    lease = SimpleNamespace(attempt=1, renew=lambda **fields: renewed.append(fields["global_step"]) or "running",
                            check=lambda: "running", post=lambda *_a, **_kw: None)
    progress = JobProgress(lease, min_interval_s=3600.0)
    state = SimpleNamespace(global_step=0, epoch=0, max_steps=40, progress=0.0, phase="warmup", loss=1.0,
                            num_epochs=2)
    control = SimpleNamespace(should_training_stop=False)
    progress.on_train_begin(state, control)
    for step in (1, 2, 3):
        state.global_step = step
        progress.on_step_end(state, control)  # throttled: nothing written
    progress.on_save(state, control, checkpoint_path=None)  # a mid-epoch checkpoint: written
    state.global_step = 4
    progress.on_step_end(state, control)
    progress.on_evaluate(state, control, metrics={"eval_accuracy": 0.5})
    progress.on_save(state, control, checkpoint_path=None)  # the epoch-end checkpoint: already written
    assert renewed == [0, 3, 4], renewed
