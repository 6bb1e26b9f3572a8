"""The Python client's prediction runs: against the live service (a run on a dataset and on a file, read back
as a DataFrame and saved as CSV), and against a fake transport (what it sends, the error envelope, refusals
before anything is sent)."""

from __future__ import annotations

import json

import httpx
import pandas as pd
import pytest

from clearft import ApiError, Client, UsageError
from clearft.cli import main
from tests.service.helpers import toy_frame


def test_a_finished_job_predicts_a_dataset_and_a_file(live_service, finished_job, tmp_path):
    with Client(live_service) as client:
        frame = toy_frame(30, noise=0.2, seed=11)
        path = tmp_path / "to-check.csv"
        frame.to_csv(path, index=False)
        dataset = client.datasets.upload(path, id_column="id", name="to check")
        run = client.predict(finished_job.id, dataset_id=dataset.id)
        assert run.id.startswith("pred_") and run.labelled and run.row_count == 30
        run = client.predictions.wait(run.id, timeout=240)
        assert run.status == "succeeded" and client.get_prediction(run.id).progress == 1.0
        rows = client.prediction_rows(run.id)
        assert len(rows) == 30 == rows.attrs["summary"]["rows"] and rows["row_index"].tolist() == list(range(30))
        assert rows["probabilities"].map(lambda p: abs(sum(p.values()) - 1) < 1e-5).all()
        assert int(rows["flagged"].sum()) == rows.attrs["summary"]["flagged"]
        flagged = client.prediction_rows(run.id, flagged=True)
        assert len(flagged) == rows.attrs["summary"]["flagged"]
        saved = client.download_prediction(run.id, tmp_path / "rows.csv")
        assert saved.read_text().splitlines()[0].startswith("row_index,id,text,text_pair,predicted_label")
        unlabelled = tmp_path / "new.jsonl"
        frame[["id", "text"]].to_json(unlabelled, orient="records", lines=True)
        other = client.predict(finished_job.id, file=unlabelled, id_column="id")
        assert not other.labelled and other.input_name == "new.jsonl"
        other = client.predictions.wait(other.id, timeout=240)
        assert other.status == "succeeded" and client.prediction_rows(other.id)["id"].tolist() == frame["id"].tolist()
        assert {p.id for p in client.predictions.list(finished_job.id)} >= {run.id, other.id}


def test_clearft_predict_waits_and_saves_the_rows(live_service, finished_job, tmp_path, capsys):
    new_rows = tmp_path / "new.csv"
    toy_frame(12, noise=0.0, seed=5)[["id", "text", "label"]].to_csv(new_rows, index=False)
    out_file = tmp_path / "out" / "predictions.csv"
    code = main(["--url", live_service, "predict", finished_job.id, "--file", str(new_rows), "--id-column", "id",
                 "-o", str(out_file), "--timeout", "240"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "succeeded" in out and "labelled" in out and "label check:" in out and f"saved to {out_file}" in out
    saved = pd.read_csv(out_file)
    assert len(saved) == 12 and saved["id"].tolist() == toy_frame(12, noise=0.0, seed=5)["id"].tolist()
    assert {"predicted_label", "flagged", "suggested_label"} <= set(saved.columns)
    run_id = out.split()[0]
    code = main(["--url", live_service, "--json", "predictions", "get", run_id])
    assert code == 0 and json.loads(capsys.readouterr().out)["status"] == "succeeded"
    code = main(["--url", live_service, "predictions", "list", finished_job.id])
    assert code == 0 and run_id in capsys.readouterr().out
    code = main(["--url", live_service, "--json", "predict", finished_job.id, "--file", str(new_rows),
                 "--no-label-check", "--timeout", "240"])
    unchecked = json.loads(capsys.readouterr().out)
    assert code == 0 and unchecked["status"] == "succeeded" and not unchecked["labelled"]
    code = main(["--url", live_service, "predict", finished_job.id, "--file", str(new_rows), "-o", "rows.txt"])
    assert code == 2 and ".csv or .jsonl" in capsys.readouterr().err
    code = main(["--url", live_service, "predict", finished_job.id, "--dataset", "ds_x", "--text-column", "t"])
    assert code == 2 and "describe a --file" in capsys.readouterr().err
    code = main(["--url", live_service, "predict", "job_nope", "--dataset", "ds_x"])
    assert code == 1 and "404" in capsys.readouterr().err


def _fake(handler) -> Client:
    return Client(key="sk-test", http=httpx.Client(base_url="http://service", transport=httpx.MockTransport(handler)))


RUN = {"id": "pred_1", "job_id": "job_1", "dataset_id": None, "input_name": "x.csv", "labelled": False,
       "row_count": 2, "status": "queued", "attempt": 0, "progress": 0.0, "summary": None}


def test_the_client_sends_json_or_multipart_and_reads_rows(tmp_path):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("rows.jsonl"):
            body = json.dumps({"summary": {"rows": 1, "labels": ["a", "b"]}}) + "\n" + json.dumps(
                {"row_index": 0, "predicted_label": "a", "probabilities": {"a": 0.9, "b": 0.1}}) + "\n"
            return httpx.Response(200, text=body)
        if request.url.path.endswith("rows.csv"):
            return httpx.Response(409, json={"error": {"code": "prediction_not_ready", "message": "queued"}})
        return httpx.Response(201 if request.method == "POST" else 200, json=RUN)

    client = _fake(handler)
    assert client.predict("job_1", dataset_id="ds_1", batch_size=8).id == "pred_1"
    assert json.loads(seen[-1].content) == {"dataset_id": "ds_1", "batch_size": 8}
    path = tmp_path / "x.csv"
    path.write_text("text\nhello\nworld\n")
    client.predict("job_1", file=path, label_column="y")
    sent = seen[-1]
    assert sent.url.path == "/v1/jobs/job_1/predictions" and sent.headers["content-type"].startswith("multipart/")
    assert b'name="label_column"' in sent.content and b'filename="x.csv"' in sent.content
    rows = client.prediction_rows("pred_1", flagged=True)
    assert rows["predicted_label"].tolist() == ["a"] and rows.attrs["summary"]["rows"] == 1
    assert seen[-1].url.params["flagged"] == "true"
    with pytest.raises(ApiError) as refused:
        client.download_prediction("pred_1", tmp_path / "rows.csv")
    assert refused.value.status == 409 and not (tmp_path / "rows.csv").exists()
    count = len(seen)
    with pytest.raises(UsageError):
        client.predict("job_1")
    with pytest.raises(UsageError):
        client.predict("job_1", dataset_id="ds_1", file=path)
    with pytest.raises(UsageError):
        client.predict("job_1", file=tmp_path / "x.xlsx")
    with pytest.raises(UsageError):
        client.download_prediction("pred_1", tmp_path / "rows.xlsx")
    assert len(seen) == count  # nothing was sent
