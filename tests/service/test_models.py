"""``GET /v1/models``: the server's base models with their architecture, size and supported methods, and the
422 at job creation for a method the model cannot run (not a failure on the worker)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services import models as catalogue_module
from clear_core.testing import build_tiny_backbone
from tests.service.conftest import create_key
from tests.service.helpers import toy_frame, upload_frame


@pytest.fixture
def decoder_settings(settings, tmp_path):
    """The service settings with a second model folder: ``tiny-bert`` plus a headless tiny Llama."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "tiny-bert").symlink_to((settings.model_dir / "tiny-bert").resolve(), target_is_directory=True)
    build_tiny_backbone(folder / "tiny-llama", "llama")
    (folder / "not-a-model").mkdir()
    return settings.model_copy(update={"model_dir": folder})


def test_the_catalogue_lists_each_model_with_its_methods(decoder_settings, enqueued):
    key = create_key(decoder_settings.database_url, "tenant-a")
    with TestClient(create_app(decoder_settings, enqueue=enqueued.append),
                    headers={"Authorization": f"Bearer {key}"}) as client:
        answer = client.get("/v1/models")
        assert answer.status_code == 200, answer.text
        models = {m["id"]: m for m in answer.json()["data"]}
        assert answer.json()["count"] == 4 and set(models) == {"all-MiniLM-L6-v2", "tiny-bert", "tiny-llama", "not-a-model"}
        assert models["all-MiniLM-L6-v2"]["default"] and models["all-MiniLM-L6-v2"]["architecture"] == "bert"
        assert models["all-MiniLM-L6-v2"]["max_length"] == 512 and models["all-MiniLM-L6-v2"]["parameters"] > 20_000_000
        assert models["tiny-bert"]["methods"] == ["lora", "adapter", "prefix", "bitfit", "full"]
        assert "attention.self.query" in models["tiny-bert"]["lora_modules"]  # what lora_target_modules may name
        assert models["tiny-bert"]["layer_stack"] == "bert.encoder.layer"
        llama = models["tiny-llama"]
        assert llama["architecture"] == "llama" and llama["decoder"] and llama["methods"] == ["lora", "adapter", "full"]
        assert set(llama["refused"]) == {"prefix", "bitfit"} and "bias" in llama["refused"]["bitfit"]
        assert models["not-a-model"]["methods"] == [] and "config.json" in models["not-a-model"]["error"]
        stored = json.loads((decoder_settings.data_dir / "model-catalogue.json").read_text())
        assert len(stored) == 4  # kept on disk: a restarted API does not inspect the folders again

        dataset = upload_frame(client, toy_frame(40))
        refused = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-llama",
                                                "method": "bitfit"})
        assert refused.status_code == 422 and refused.json()["error"]["param"] == "method"
        message = refused.json()["error"]["message"]
        assert "no bias terms" in message and "lora, adapter, full" in message
        unusable = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "not-a-model"})
        assert unusable.status_code == 422 and unusable.json()["error"]["param"] == "base_model"
        unknown = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "no-such-model"})
        assert unknown.status_code == 422 and "tiny-llama" in unknown.json()["error"]["message"]
        assert client.get("/v1/jobs").json()["count"] == 0  # nothing was stored for the refused jobs
        accepted = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-llama",
                                                 "method": "lora"})
        assert accepted.status_code == 201, accepted.text

        from clearft import Client
        from clearft.cli import main

        ft = Client(key=key, http=client)
        assert [m["id"] for m in ft.models()] == [m["id"] for m in answer.json()["data"]]
        assert main(["models"], client=ft) == 0


def test_every_refused_cell_of_the_matrix_is_a_422_naming_the_methods_that_fit(settings, enqueued, tmp_path):
    from clear_core.testing import ARCHITECTURES

    folder = tmp_path / "models"
    for arch in ARCHITECTURES:
        build_tiny_backbone(folder / arch, arch)
    every = settings.model_copy(update={"model_dir": folder})
    key = create_key(every.database_url, "tenant-a")
    with TestClient(create_app(every, enqueue=enqueued.append), headers={"Authorization": f"Bearer {key}"}) as client:
        dataset = upload_frame(client, toy_frame(40))
        refused_cells = 0
        for model in client.get("/v1/models").json()["data"]:
            if model["id"] not in ARCHITECTURES:
                continue
            for method, reason in model["refused"].items():
                answer = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": model["id"],
                                                       "method": method})
                assert answer.status_code == 422 and answer.json()["error"]["param"] == "method", answer.text
                assert reason in answer.json()["error"]["message"]
                assert ", ".join(model["methods"]) in answer.json()["error"]["message"]
                refused_cells += 1
        assert refused_cells == 7  # as the README table: prefix on 5 architectures, bitfit on 2
        assert client.get("/v1/jobs").json()["count"] == 0


def test_a_changed_model_folder_is_described_again(decoder_settings, monkeypatch):
    calls = []
    real = catalogue_module._describe
    monkeypatch.setattr(catalogue_module, "_describe", lambda folders: calls.append(folders) or real(folders))
    catalogue_module._memory.clear()
    first = {m["id"]: m for m in catalogue_module.catalogue(decoder_settings)}
    again = {m["id"]: m for m in catalogue_module.catalogue(decoder_settings)}
    assert first == again and len(calls) == 1  # the second answer is the kept one
    build_tiny_backbone(decoder_settings.model_dir / "not-a-model", "qwen2")  # the folder becomes a model
    changed = {m["id"]: m for m in catalogue_module.catalogue(decoder_settings)}
    assert len(calls) == 2 and [str(f) for f in calls[1]] == [str(decoder_settings.model_dir / "not-a-model")]
    assert changed["not-a-model"]["architecture"] == "qwen2" and "bitfit" in changed["not-a-model"]["methods"]


def test_a_failed_inspection_is_not_kept(decoder_settings, monkeypatch):
    """An inspection killed or timed out (not a property of the folder) answers an error once; the next
    call inspects again, and nothing of it is left in memory or in the catalogue file (helper-18's find:
    a killed first inspection made the default model unusable until the file was deleted by hand)."""
    import subprocess

    real_run = subprocess.run
    calls = []

    def killed_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise subprocess.TimeoutExpired(args[0], 1.0)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(catalogue_module.subprocess, "run", killed_once)
    catalogue_module._memory.clear()
    first = {m["id"]: m for m in catalogue_module.catalogue(decoder_settings)}
    assert all("could not inspect" in m["error"] for m in first.values())
    assert "could not inspect" not in catalogue_module._disk_path(decoder_settings).read_text()
    again = {m["id"]: m for m in catalogue_module.catalogue(decoder_settings)}
    assert len(calls) == 2 and "error" not in again["tiny-llama"], again
