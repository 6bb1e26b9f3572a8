"""``clearft`` end to end against a live service (API + a real worker): upload, create --wait with its
progress bar, list/get/events, download the adapter and the noise report, and the refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from clearft.cli import main
from tests.service.helpers import toy_frame


def run(capsys, url: str, *argv: str) -> tuple[int, str, str]:
    """Run one command in this process; returns (status, stdout, stderr)."""
    code = main(["--url", url, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _table_rows(out: str) -> list[list[str]]:
    """The printed report table (header first), each line split on blanks."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("rank "))
    return [line.split() for line in lines[start:]]


def test_upload_create_wait_and_download(live_service, tmp_path, capsys, tiny_model_dir):
    from clear_core import load_adapter

    toy_frame(40, seed=3).to_csv(tmp_path / "train.csv", index=False)
    code, out, _ = run(capsys, live_service, "--json", "datasets", "upload", str(tmp_path / "train.csv"),
                       "--text-column", "text", "--label-column", "label", "--gold-label-column", "gold")
    assert code == 0
    dataset = json.loads(out)
    assert dataset["row_count"] == 40 and dataset["status"] == "ready"

    code, out, err = run(capsys, live_service, "--json", "jobs", "create", "--dataset", dataset["id"],
                         "--base-model", "tiny-bert", "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "16",
                         "--max-length", "16", "--set", "training.seed=1", "--wait", "--timeout", "240")
    assert code == 0, err
    job = json.loads(out)
    assert job["status"] == "succeeded" and job["training"]["seed"] == 1
    for part in ("step", "ETA", "epoch 2/2", "loss", "succeeded"):  # the progress bar, from the stream
        assert part in err, err

    code, out, _ = run(capsys, live_service, "jobs", "list")
    assert code == 0 and job["id"] in out and "succeeded" in out
    code, out, _ = run(capsys, live_service, "jobs", "get", job["id"])
    assert code == 0 and "noise report:" in out and "estimated noise rate" in out and "verdict: " in out
    code, out, _ = run(capsys, live_service, "jobs", "events", job["id"], "-f")
    assert code == 0 and "state queued" in out and "epoch 2" in out and out.rstrip().endswith("job ended succeeded")

    code, out, _ = run(capsys, live_service, "jobs", "adapter", job["id"], "-o", str(tmp_path / "adapter"))
    assert code == 0 and (tmp_path / "adapter" / "clear_config.json").is_file()
    model = load_adapter(tmp_path / "adapter", model_path=tiny_model_dir)
    assert model.predict_logits(["market stocks"]).shape == (1, 3)

    code, _, _ = run(capsys, live_service, "jobs", "noise-report", job["id"], "-o", str(tmp_path / "report.csv"))
    report = pd.read_csv(tmp_path / "report.csv")
    assert code == 0 and len(report) == 40 and report["rank"].is_monotonic_increasing  # every row, held out too
    assert set(report["split"]) == {"train", "validation"} and report["flag_reason"].notna().all()
    code, out, _ = run(capsys, live_service, "jobs", "noise-report", job["id"], "--top", "3")
    assert code == 0 and "likeliest wrong" in out and "estimated noise rate" in out and "verdict: " in out
    assert _table_rows(out)[0][-1] == "flag_reason"
    code, out, _ = run(capsys, live_service, "jobs", "noise-report", job["id"], "--split", "validation")
    rows = _table_rows(out)[1:]
    assert code == 0 and rows and all(row[2] == "validation" for row in rows)


def test_refusals_exit_1_with_the_service_message(live_service, finished_job, capsys):
    code, _, err = run(capsys, live_service, "jobs", "cancel", finished_job.id)
    assert code == 1 and "already succeeded" in err
    code, _, err = run(capsys, live_service, "jobs", "get", "job_nope")
    assert code == 1 and "404 not_found" in err
    code, _, err = run(capsys, "http://127.0.0.1:9", "jobs", "list")
    assert code == 1 and "cannot reach the service" in err


def test_the_installed_command(live_service, finished_job):
    done = subprocess.run([sys.executable, "-m", "clearft", "--url", live_service, "jobs", "list", "--status",
                           "succeeded"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and finished_job.id in done.stdout
