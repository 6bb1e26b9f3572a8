"""The embedded service's key is found from any folder: ``python -m app.cli serve`` records its key file per
URL (``clearft.local``), and ``clearft`` run elsewhere, with no key in its environment, uses it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from clearft import local

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEAR_", "CLEARFT_"))}
    env.update(HF_HUB_OFFLINE="1", **extra)
    return env


def test_the_cli_finds_the_embedded_key_from_any_folder(tmp_path):
    state, data, elsewhere = tmp_path / "state", tmp_path / "service-data", tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    service = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--no-worker"],
                               cwd=ROOT, env=_clean_env(CLEAR_DATA_DIR=str(data), CLEARFT_STATE_DIR=str(state)),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert service.poll() is None, service.stdout.read()
            time.sleep(0.25)
        for _ in range(100):  # serve registers the key once it sees the API answer, a moment after we did
            if (state / "services.json").exists():
                break
            time.sleep(0.05)
        recorded = json.loads((state / "services.json").read_text())
        assert recorded[url] == str((data / "api-key").resolve())  # a path, never the key itself
        assert (state / "services.json").stat().st_mode & 0o777 == 0o600

        def clearft(state_dir: Path) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "clearft", "--url", url, "datasets", "list"], cwd=elsewhere,
                                  env=_clean_env(CLEARFT_STATE_DIR=str(state_dir), PYTHONPATH=str(ROOT)),
                                  capture_output=True, text=True, timeout=60)

        found = clearft(state)
        assert found.returncode == 0, found.stderr
        assert "ID" in found.stdout  # the (empty) table's header: the service accepted the key
        lost = clearft(tmp_path / "no-state")  # the old behaviour: no key from this folder, a 401
        assert lost.returncode == 1 and "401" in lost.stderr
    finally:
        service.terminate()
        service.wait(30)
    assert service.returncode == 0
    assert url not in json.loads((state / "services.json").read_text())  # a stopped service leaves no entry


def test_the_registry_is_per_url_and_skips_a_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CLEARFT_STATE_DIR", str(tmp_path / "state"))
    key = tmp_path / "api-key"
    key.write_text("sk-local\n")
    assert local.register(local.service_urls("0.0.0.0", 9001), key) == tmp_path / "state" / "services.json"
    assert local.key_file_for("http://localhost:9001/") == key  # any local spelling, a trailing slash
    assert local.key_file_for("http://127.0.0.1:9002") is None  # another service
    key.unlink()
    assert local.key_file_for("http://127.0.0.1:9001") is None  # a data folder since removed
    (tmp_path / "state" / "services.json").write_text("not json")
    assert local.key_file_for("http://127.0.0.1:9001") is None  # a damaged file is ignored, then rewritten
    assert local.register(["http://127.0.0.1:9001"], key) is not None
    monkeypatch.setenv("CLEARFT_STATE_DIR", str(key.with_name("a-file") / "below"))
    key.with_name("a-file").write_text("")
    assert local.register(["http://127.0.0.1:9001"], key) is None  # cannot write there: not an error


def test_an_ipv6_bind_is_registered_under_urls_a_client_can_use():
    assert local.service_urls("::1", 9001) == ["http://[::1]:9001"]  # not 127.0.0.1: another socket
    assert local.service_urls("::", 9001)[0] == "http://[::]:9001"
    assert local.service_urls("10.0.0.5", 9001) == ["http://10.0.0.5:9001"]


def test_unregister_removes_only_the_entries_that_still_name_its_key_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CLEARFT_STATE_DIR", str(tmp_path / "state"))
    ours, theirs = tmp_path / "ours" / "api-key", tmp_path / "theirs" / "api-key"
    for key in (ours, theirs):
        key.parent.mkdir()
        key.write_text("sk\n")
    local.register(local.service_urls("127.0.0.1", 9001), ours)
    local.register(["http://127.0.0.1:9002"], ours)
    local.register(["http://localhost:9001"], theirs)  # another service took this spelling of the URL since
    local.unregister(local.service_urls("127.0.0.1", 9001), ours)
    assert json.loads(local.registry_path().read_text()) == {"http://localhost:9001": str(theirs.resolve()),
                                                              "http://127.0.0.1:9002": str(ours.resolve())}
