"""Retrain in one call: ``POST /v1/jobs`` with ``from_job`` takes the earlier job's settings (fields given
override them, clear/training merged key by key), refuses a dataset with labels the earlier one lacked, stores
``from_job_id``, and once both jobs succeeded shows their ``comparison``. Results are written directly."""

from __future__ import annotations

import pytest

from app.db import session_factory
from app.services.transitions import transition
from tests.service.fake_results import make_finished_job
from tests.service.helpers import toy_frame, upload_frame

N = 30


@pytest.fixture
def old(client, settings):
    """A succeeded tiny-bert job (routed LoRA, 2 epochs, routing_cap 0.9, 20 % held out, 1 h limit) and a
    version of its dataset made from it."""
    dataset = upload_frame(client, toy_frame(N))
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert",
                                           "validation_fraction": 0.2, "clear": {"routing_cap": 0.9},
                                           "training": {"epochs": 2, "learning_rate": 0.02},
                                           "time_limit_s": 3600}).json()["id"]
    _finish(settings, job_id, {"eval_accuracy": 0.7, "validation_agreement": 0.6, "eval_loss": 0.9},
            {"rows": N, "estimated_noise_rate": 0.2})
    version = client.post(f"/v1/datasets/{dataset['id']}/versions", json={"from_job": job_id}).json()
    return client.get(f"/v1/jobs/{job_id}").json(), version


def _finish(settings, job_id, metrics, summary):
    with session_factory(settings.database_url)() as session:
        assert transition(session, job_id, ("queued",), "running")
        assert transition(session, job_id, ("running",), "succeeded", metrics=metrics, report_summary=summary,
                          progress=1.0)


SETTINGS = ("method", "routed", "base_model", "clear", "training", "validation_fraction", "validation_dataset_id",
            "time_limit_s", "soft_time_limit_s")


def test_a_retrain_takes_every_setting_of_the_earlier_job(client, old):
    before, version = old
    response = client.post("/v1/jobs", json={"dataset_id": version["id"], "from_job": before["id"]})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["from_job_id"] == before["id"] and job["dataset_id"] == version["id"]
    assert {k: job[k] for k in SETTINGS} == {k: before[k] for k in SETTINGS}
    assert job["training"]["learning_rate"] == 0.02 and job["clear"]["routing_cap"] == 0.9
    assert job["comparison"] is None  # the new one has not run yet
    assert client.get(f"/v1/jobs/{job['id']}").json()["from_job_id"] == before["id"]


def test_fields_given_override_the_inherited_ones_key_by_key(client, old):
    before, version = old
    body = {"dataset_id": version["id"], "from_job": before["id"], "routed": False, "validation_fraction": 0.1,
            "clear": {"warmup_epochs": 1}, "training": {"epochs": 3}, "soft_time_limit_s": 100}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["routed"] is False and job["method"] == before["method"] and job["base_model"] == "tiny-bert"
    assert job["training"]["epochs"] == 3 and job["training"]["learning_rate"] == 0.02
    assert job["clear"]["warmup_epochs"] == 1 and job["clear"]["routing_cap"] == 0.9
    assert job["validation_fraction"] == job["training"]["validation_fraction"] == 0.1
    assert job["time_limit_s"] == 3600 and job["soft_time_limit_s"] == 100
    inner = client.post("/v1/jobs", json={"dataset_id": version["id"], "from_job": before["id"],
                                          "training": {"validation_fraction": 0.3}})
    assert inner.status_code == 201 and inner.json()["validation_fraction"] == 0.3


def test_labels_must_be_the_earlier_ones_or_a_subset(client, old):
    before, _ = old
    frame = toy_frame(N)
    extra = upload_frame(client, frame.assign(label=frame["label"].replace(2, 5)), gold_label_column=None)
    response = client.post("/v1/jobs", json={"dataset_id": extra["id"], "from_job": before["id"]})
    assert response.status_code == 422 and response.json()["error"]["code"] == "incompatible_labels"
    assert "'5'" in response.json()["error"]["message"]
    subset = upload_frame(client, frame[frame["label"] != 2], gold_label_column=None)
    assert client.post("/v1/jobs", json={"dataset_id": subset["id"], "from_job": before["id"]}).status_code == 201
    unknown = client.post("/v1/jobs", json={"dataset_id": subset["id"], "from_job": "job_nope"})
    assert unknown.status_code == 422 and unknown.json()["error"]["param"] == "from_job"
    assert client.post("/v1/jobs", json={"dataset_id": "ds_nope", "from_job": before["id"]}).status_code == 404


def test_a_succeeded_retrain_is_compared_with_its_earlier_job(client, settings, old):
    before, version = old
    job_id = client.post("/v1/jobs", json={"dataset_id": version["id"], "from_job": before["id"]}).json()["id"]
    _finish(settings, job_id, {"eval_accuracy": 0.8, "validation_agreement": 0.75, "eval_loss": 0.5},
            {"rows": N, "estimated_noise_rate": 0.05})
    comparison = client.get(f"/v1/jobs/{job_id}").json()["comparison"]
    assert comparison["from_job_id"] == before["id"]
    assert comparison["before"] == {"eval_accuracy": 0.7, "validation_agreement": 0.6, "eval_loss": 0.9,
                                    "estimated_noise_rate": 0.2}
    assert comparison["after"]["eval_accuracy"] == 0.8
    assert comparison["difference"] == pytest.approx({"eval_accuracy": 0.1, "validation_agreement": 0.15,
                                                      "eval_loss": -0.4, "estimated_noise_rate": -0.15})
    listed = {j["id"]: j for j in client.get("/v1/jobs").json()["data"]}
    assert listed[job_id]["comparison"] == comparison and listed[before["id"]]["comparison"] is None


def test_a_retrain_of_a_job_from_the_fake_results_compares_its_metrics(client, settings):
    job_id, _ = make_finished_job(client, settings, n=N)  # metrics: the last epoch's (eval_accuracy 0.7)
    dataset_id = client.get(f"/v1/jobs/{job_id}").json()["dataset_id"]
    again = client.post("/v1/jobs", json={"dataset_id": dataset_id, "from_job": job_id}).json()["id"]
    _finish(settings, again, {"eval_accuracy": 0.65}, {"estimated_noise_rate": 0.1})
    comparison = client.get(f"/v1/jobs/{again}").json()["comparison"]
    assert comparison["difference"] == pytest.approx({"eval_accuracy": -0.05, "estimated_noise_rate": 0.0})
    assert comparison["before"]["eval_loss"] == 0.8 and "eval_loss" not in comparison["after"]


def test_a_derived_warmup_is_derived_again_when_the_epochs_change(client, settings):
    """A job of 3 epochs resolves warmup_epochs=2 (the default); a retrain with epochs 2 inherited that 2 and was
    refused ("warmup_epochs=2 is not below epochs=2"), though the caller never chose a warm-up. One chosen stays."""
    dataset = upload_frame(client, toy_frame(N))

    def job(body):
        response = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert", **body})
        assert response.status_code == 201, response.text
        return response.json()

    derived = job({"training": {"epochs": 3}})
    assert derived["clear"]["warmup_epochs"] == 2
    retrain = job({"from_job": derived["id"], "training": {"epochs": 2}})
    assert retrain["clear"]["warmup_epochs"] == 1 and retrain["training"]["epochs"] == 2
    chosen = job({"training": {"epochs": 4}, "clear": {"warmup_epochs": 2}})  # 3 would be the default
    kept = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "from_job": chosen["id"],
                                         "training": {"epochs": 2}})
    assert kept.status_code == 422 and kept.json()["error"]["param"] == "clear.warmup_epochs", kept.text
