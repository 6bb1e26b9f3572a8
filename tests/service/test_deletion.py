"""Deleting jobs and datasets: afterwards no table row and no artifact file names them (every table of the
schema is read), 404 from then on; 409 while a job concerned is queued or running; a dataset with versions or
jobs needs ``cascade=true``, which deletes them too; versions and retrains made from a deleted job stay."""

from __future__ import annotations

import io
import logging
import tarfile

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text, update

from app.db import get_engine, session_factory
from app.main import create_app
from app.models import Base, Job
from app.services.transitions import transition
from app.storage import ArtifactStore, adapter_key
from tests.service.conftest import create_key, table_counts
from tests.service.fake_results import make_finished_job
from tests.service.helpers import toy_frame, upload_frame

N = 30


def _artifacts(settings, job_id: str, tenant: str = "tenant-a") -> list[str]:
    """Store an adapter archive, a file beside it and a checkpoint for the job, and point the job at them."""
    store = ArtifactStore(settings.artifact_url)
    archive = settings.data_dir / f"{job_id}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("clear_config.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    adapter = store.put_file(str(archive), adapter_key(tenant, job_id))
    other = store.put_file(str(archive), f"tenants/{tenant}/jobs/{job_id}/extra/report.bin")
    checkpoint = store.put_file(str(archive), f"jobs/{job_id}/checkpoints/step-4.pt")
    archive.unlink()
    with session_factory(settings.database_url)() as session:
        session.execute(update(Job).where(Job.id == job_id).values(adapter_uri=adapter, checkpoint_uri=checkpoint,
                                                                   checkpoint_step=4))
        session.commit()
    return [adapter, other, checkpoint]


def _mentions(settings, ids: set[str]) -> list[str]:
    """Every table cell (of every table in the schema) and artifact path that contains one of ``ids``."""
    found = []
    with get_engine(settings.database_url).connect() as conn:
        for table in Base.metadata.tables:
            for row in conn.execute(text(f"SELECT * FROM {table}")):
                cells = " ".join(map(str, row))
                found += [f"{table}: {i}" for i in ids if i in cells]
    root = settings.data_dir / "artifacts"
    paths = [str(p.relative_to(root)) for p in root.rglob("*")] if root.exists() else []
    found += [f"artifact {p}" for p in paths for i in ids if i in p]
    return found


def _finish(settings, job_id: str, to: str = "succeeded") -> None:
    with session_factory(settings.database_url)() as session:
        assert transition(session, job_id, ("queued",), "running")
        assert transition(session, job_id, ("running",), to, report_summary={"rows": 0} if to == "succeeded" else None)


@pytest.fixture
def loop(client, settings):
    """A dataset D, a succeeded job J on it (report, events, decisions, adapter, checkpoint), a version V of D
    from J, a retrain R of J on V (succeeded, with its own adapter), and an unrelated dataset U."""
    job, _ = make_finished_job(client, settings, n=N)
    dataset = client.get(f"/v1/jobs/{job}").json()["dataset_id"]
    _artifacts(settings, job)
    decided = client.post(f"/v1/jobs/{job}/noise-report/decisions",
                          json={"decisions": [{"row_index": 0, "action": "drop"}]})
    assert decided.status_code == 200, decided.text
    version = client.post(f"/v1/datasets/{dataset}/versions", json={"from_job": job}).json()["id"]
    retrain = client.post("/v1/jobs", json={"dataset_id": version, "from_job": job}).json()["id"]
    _finish(settings, retrain)
    _artifacts(settings, retrain)
    unrelated = upload_frame(client, toy_frame(12, seed=5))["id"]
    return {"dataset": dataset, "job": job, "version": version, "retrain": retrain, "unrelated": unrelated}


def test_deleting_a_job_leaves_nothing_of_it_and_keeps_what_was_made_from_it(client, settings, loop):
    job = loop["job"]
    assert _mentions(settings, {job})  # it is everywhere before: jobs, events, report, decisions, files
    response = client.delete(f"/v1/jobs/{job}")
    assert response.status_code == 204 and response.content == b""
    assert _mentions(settings, {job}) == []
    assert client.get(f"/v1/jobs/{job}").status_code == 404
    assert client.delete(f"/v1/jobs/{job}").status_code == 404
    assert client.get(f"/v1/jobs/{job}/noise-report/decisions").status_code == 404
    version = client.get(f"/v1/datasets/{loop['version']}").json()
    assert version["from_job_id"] is None and version["parent_id"] == loop["dataset"]
    retrain = client.get(f"/v1/jobs/{loop['retrain']}").json()
    assert retrain["status"] == "succeeded" and retrain["from_job_id"] is None and retrain["comparison"] is None
    assert client.get(f"/v1/jobs/{loop['retrain']}/adapter").status_code == 200
    counts = table_counts(settings.database_url)
    assert counts["noise_rows"] == counts["review_decisions"] == 0 and counts["jobs"] == 1


def test_a_dataset_with_versions_or_jobs_needs_cascade_which_deletes_them_all(client, settings, loop):
    dataset = loop["dataset"]
    before = table_counts(settings.database_url)
    refused = client.delete(f"/v1/datasets/{dataset}")
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "dataset_in_use" and loop["version"] in error["message"] and loop["job"] in error["message"]
    assert "cascade=true" in error["message"] and table_counts(settings.database_url) == before
    assert client.delete(f"/v1/datasets/{loop['version']}").status_code == 409  # R trains on it
    response = client.delete(f"/v1/datasets/{dataset}", params={"cascade": "true"})
    assert response.status_code == 204, response.text
    gone = {dataset, loop["job"], loop["version"], loop["retrain"]}
    assert _mentions(settings, gone) == []
    for path in (f"/v1/datasets/{dataset}", f"/v1/datasets/{loop['version']}", f"/v1/jobs/{loop['job']}",
                 f"/v1/jobs/{loop['retrain']}", f"/v1/datasets/{dataset}/rows.csv"):
        assert client.get(path).status_code == 404, path
    counts = table_counts(settings.database_url)
    assert counts["datasets"] == 1 and counts["dataset_rows"] == 12 and counts["jobs"] == 0
    assert sum(counts[t] for t in ("noise_rows", "job_events", "review_decisions")) == 0
    assert client.get(f"/v1/datasets/{loop['unrelated']}").status_code == 200
    assert client.delete(f"/v1/datasets/{loop['unrelated']}").status_code == 204  # nothing depends on it
    assert table_counts(settings.database_url)["dataset_rows"] == 0


def test_nothing_is_deleted_while_a_job_concerned_is_queued_or_running(client, settings, loop):
    running = client.post("/v1/jobs", json={"dataset_id": loop["version"], "base_model": "tiny-bert"}).json()["id"]
    with session_factory(settings.database_url)() as session:
        assert transition(session, running, ("queued",), "running")
    before = table_counts(settings.database_url)
    refused = client.delete(f"/v1/jobs/{running}")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "job_active"
    cascade = client.delete(f"/v1/datasets/{loop['dataset']}", params={"cascade": "true"})
    assert cascade.status_code == 409 and running in cascade.json()["error"]["message"]
    queued = client.post("/v1/jobs", json={"dataset_id": loop["unrelated"], "base_model": "tiny-bert"}).json()["id"]
    assert client.delete(f"/v1/jobs/{queued}").status_code == 409
    assert client.delete(f"/v1/datasets/{loop['unrelated']}", params={"cascade": "true"}).status_code == 409
    assert table_counts(settings.database_url)["jobs"] == before["jobs"] + 1
    assert client.post(f"/v1/jobs/{queued}/cancel").json()["status"] == "cancelled"
    assert client.delete(f"/v1/jobs/{queued}").status_code == 204
    with session_factory(settings.database_url)() as session:
        assert transition(session, running, ("running",), "failed", error_code="x")
    assert client.delete(f"/v1/datasets/{loop['dataset']}", params={"cascade": "true"}).status_code == 204
    assert _mentions(settings, {loop["dataset"], running, loop["job"]}) == []


def test_another_tenant_cannot_delete_and_learns_nothing(client, settings, enqueued, loop):
    key = create_key(settings.database_url, "tenant-b")
    before = table_counts(settings.database_url)
    with TestClient(create_app(settings, enqueue=enqueued.append),
                    headers={"Authorization": f"Bearer {key}"}) as other:
        for path in (f"/v1/jobs/{loop['job']}", f"/v1/datasets/{loop['unrelated']}",
                     f"/v1/datasets/{loop['dataset']}?cascade=true"):
            response = other.delete(path)
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path
    assert table_counts(settings.database_url) == before
    assert client.get(f"/v1/jobs/{loop['job']}/adapter").status_code == 200


def test_an_artifact_that_cannot_be_removed_is_logged_not_failed(client, settings, loop, caplog, monkeypatch):
    def broken(_self, key):
        raise OSError(f"store down for {key}")

    monkeypatch.setattr(ArtifactStore, "delete_prefix", broken)
    with caplog.at_level(logging.WARNING, logger="app.services.deletion"):
        assert client.delete(f"/v1/jobs/{loop['retrain']}").status_code == 204
    assert client.get(f"/v1/jobs/{loop['retrain']}").status_code == 404
    assert any(loop["retrain"] in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    leftover = _mentions(settings, {loop["retrain"]})
    assert leftover and all(m.startswith("artifact ") for m in leftover)  # only orphan files, logged above


def test_the_store_removes_the_folders_its_last_file_leaves_empty(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    source = tmp_path / "f.bin"
    source.write_bytes(b"x")
    store.put_file(str(source), "jobs/job_1/checkpoints/step-4.pt")
    store.put_file(str(source), "tenants/t/jobs/job_1/adapter.tar.gz")
    store.put_file(str(source), "tenants/t/jobs/job_2/adapter.tar.gz")
    store.delete_prefix("jobs/job_1/checkpoints")
    store.delete("tenants/t/jobs/job_1/adapter.tar.gz")
    left = sorted(str(p.relative_to(tmp_path / "store")) for p in (tmp_path / "store").rglob("*"))
    assert left == ["tenants", "tenants/t", "tenants/t/jobs", "tenants/t/jobs/job_2",
                    "tenants/t/jobs/job_2/adapter.tar.gz"]  # no empty jobs/job_1 or tenants/t/jobs/job_1
    store.delete("tenants/t/jobs/job_2/adapter.tar.gz")
    assert (tmp_path / "store").is_dir() and not any((tmp_path / "store").iterdir())  # the root itself stays
