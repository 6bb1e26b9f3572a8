"""Ingest on Postgres: rows go in through COPY (no per-row INSERT into dataset_rows), every malformed input
keeps today's answer on that path, the Arrow fast path stores exactly what the pandas reference parse
would, a fast path that gives up halfway leaves nothing behind, and spooled uploads never outlive their
request or their process (a SIGKILLed API's spool is removed when the next one starts)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from app.db import get_engine
from app.main import create_app
from app.services import uploads
from app.services.parsing import iter_chunks, iter_tables
from app.services.validation import WHITESPACE, RowValidator
from tests.service.conftest import table_counts
from tests.service.helpers import upload
from tests.service.malformed_inputs import STRICT, cases
from tests.service.outages import free_port

ROOT = Path(__file__).resolve().parents[2]
CASES = cases()
TRICKY = ["tab\there", "back\\slash \\N", "line\r\nbreak", 'quote "inside"', "comma, too", "  spaced  ",
          "naïve café ☃", "\x1funit separator", "\u3000ideographic space"]


@pytest.fixture
def statements(settings):
    """Every SQL statement the API's engine executes, every COPY statement psycopg runs, and everything run
    on a psycopg cursor in order (``driver``: COPY statements and plain executes), while the test runs:
    ``{"sql": [...], "copy": [...], "driver": [...]}``."""
    seen: dict[str, list[str]] = {"sql": [], "copy": [], "driver": []}
    engine = get_engine(settings.database_url)

    def record(_conn, _cursor, statement, *_args):
        seen["sql"].append(statement)

    original, original_execute = psycopg.Cursor.copy, psycopg.Cursor.execute

    def copy(self, statement, *args, **kwargs):
        seen["copy"].append(str(statement))
        seen["driver"].append(str(statement))
        return original(self, statement, *args, **kwargs)

    def execute(self, statement, *args, **kwargs):
        seen["driver"].append(str(statement))
        return original_execute(self, statement, *args, **kwargs)

    event.listen(engine, "before_cursor_execute", record)
    psycopg.Cursor.copy, psycopg.Cursor.execute = copy, execute
    try:
        yield seen
    finally:
        psycopg.Cursor.copy, psycopg.Cursor.execute = original, original_execute
        event.remove(engine, "before_cursor_execute", record)


def _row_inserts(seen) -> list[str]:
    return [s for s in seen["sql"] if "dataset_rows" in s.lower() and s.lstrip().upper().startswith("INSERT")]


def _spooled(settings) -> list[Path]:
    root = settings.scratch("uploads")
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")] if root.exists() else []


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)],
                         "text": [f"{TRICKY[i % len(TRICKY)]} {i}" for i in range(n)],
                         "label": [["a", " b ", "c"][i % 3] for i in range(n)], "gold": ["a"] * n})


def _content(frame: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "csv":
        return frame.to_csv(index=False).encode()
    if fmt == "jsonl":
        return frame.to_json(orient="records", lines=True, force_ascii=False).encode()
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_an_upload_on_postgres_is_stored_by_copy_with_no_row_insert(client, settings, statements, fmt):
    frame = _frame(45)
    response = upload(client, _content(frame, fmt), f"data.{fmt}", id_column="id", gold_label_column="gold")
    assert response.status_code == 201, response.text
    assert [c for c in statements["copy"] if c.startswith("COPY dataset_rows")], statements["copy"]
    assert _row_inserts(statements) == []
    # the dataset is checked and locked once, just before its COPY (0009: its rows are not checked one by one)
    driver = statements["driver"]
    first_copy = next(i for i, s in enumerate(driver) if s.startswith("COPY dataset_rows"))
    assert driver[first_copy - 1] == "SELECT dataset_rows_trust(%(dataset_id)s)", driver[first_copy - 3:first_copy + 1]
    with get_engine(settings.database_url).connect() as conn:
        stored = conn.execute(text("SELECT row_index, row_id, text, text_pair, label, gold_label FROM dataset_rows "
                                   "ORDER BY row_index")).all()
    assert [tuple(r) for r in stored] == [(i, f"r{i}", t, None, y.strip(), "a") for i, (t, y) in
                                         enumerate(zip(frame["text"], frame["label"]))]
    assert _spooled(settings) == []


@pytest.fixture
def strict_client(settings, auth):
    """An API client with the small limits of the malformed-input suite."""
    with TestClient(create_app(settings.model_copy(update=STRICT), enqueue=lambda _id: None), headers=auth) as client:
        yield client


@pytest.mark.parametrize("name", [n for n in CASES if "bomb" not in n])  # bombs never reach storing
def test_every_malformed_case_keeps_its_answer_on_the_copy_path(strict_client, settings, statements, name):
    case = CASES[name]
    response = upload(strict_client, case.content, case.filename, **case.form)
    assert response.status_code == case.status, (name, response.text[:500])
    error = response.json()["error"]
    assert error["code"] == case.code and case.message in error["message"], (name, error)
    found = [(d.get("row"), d["code"]) for d in error.get("details") or []]
    assert all(expected in found for expected in case.rows), (name, found[:10])
    if case.exact:
        assert sorted(found, key=str) == sorted(case.rows, key=str), (name, found)
    assert _row_inserts(statements) == [], name
    assert set(table_counts(settings.database_url).values()) == {0}, name
    assert _spooled(settings) == [], name


def _csv_tricky() -> bytes:
    body = io.StringIO()
    texts = TRICKY + ["  ", "", "\u2003", "plain"]
    frame = pd.DataFrame({"text": texts, "label": ["a", "b", " b"] * 4 + ["\xa0a\t"], "note": ["x"] * len(texts)})
    frame.to_csv(body, index=False, lineterminator="\r\n")
    return b"\xef\xbb\xbf" + body.getvalue().encode()


@pytest.mark.parametrize("declared", [None, ["a", "b"]])
def test_the_arrow_path_finds_and_stores_what_the_pandas_reference_does(tmp_path, declared):
    path = tmp_path / "tricky.csv"
    path.write_bytes(_csv_tricky())
    mapping = {"text": "text", "text_pair": None, "label": "label", "id": None, "gold_label": None}
    results = []
    for chunks in (iter_tables(path, "csv", max_uncompressed=1 << 20, chunk_rows=4),
                   iter_chunks(path, "csv", max_uncompressed=1 << 20, chunk_rows=4)):
        validator = RowValidator(mapping, declared, 1, 100, 50, max_errors=3)
        tables = [validator.add(chunk) for chunk in chunks]
        results.append((validator.rows, validator.errors, validator.error_count, validator.histogram,
                        [t.to_pylist() if t is not None else None for t in tables]))
    assert results[0] == results[1]
    assert results[0][2] == 3 and [e["row"] for e in results[0][1]] == [9, 10, 11]  # the blank texts


def test_whitespace_is_pythons():
    assert WHITESPACE == "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())


def test_a_fast_path_that_gives_up_halfway_leaves_no_rows_behind(client, settings, statements):
    # Arrow refuses a row with a field missing (in its second 4 MiB block, after a first chunk was stored);
    # pandas fills the unmapped column with nothing: valid
    filler = "w" * 180
    lines = ["text,label,note"] + [f"text {i} {filler},{'ab'[i % 2]},n" for i in range(40_000)]
    lines[30_001] = "text short,a"
    response = upload(client, ("\n".join(lines) + "\n").encode(), "data.csv")
    assert response.status_code == 201, response.text
    assert response.json()["row_count"] == 40_000
    assert table_counts(settings.database_url)["dataset_rows"] == 40_000
    assert len([c for c in statements["copy"] if c.startswith("COPY dataset_rows")]) == 2  # fast, then reference


def test_start_up_cleanup_keeps_a_live_process_folder_and_removes_a_dead_ones(tmp_path):
    root = tmp_path / "uploads"
    mine = uploads.process_folder(root)
    (mine / "upload-live").write_bytes(b"x")
    dead = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                           "from app.services.uploads import process_folder; "
                           "f = process_folder(Path(sys.argv[1])); (f / 'upload-dead').write_bytes(b'x'); "
                           "print(f.name)", str(root)], cwd=ROOT, capture_output=True, text=True, check=True)
    dead_name = dead.stdout.strip()
    assert (root / dead_name / "upload-dead").exists()
    other = subprocess.run([sys.executable, "-c", "import sys; from app.services.uploads import remove_stale; "
                            "print(remove_stale(sys.argv[1]))", str(root)], cwd=ROOT, capture_output=True,
                           text=True, check=True)
    assert dead_name in other.stdout and not (root / dead_name).exists()
    assert (mine / "upload-live").exists()  # this process is alive: its lock is held
    assert uploads.hold_folder(root) == mine == uploads.hold_folder(root)  # two apps started in this process
    uploads.release_folder(root)
    assert (mine / "upload-live").exists()  # the other app still runs
    uploads.release_folder(root)
    assert not mine.exists() and not list(root.iterdir())


def _start_api(settings, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEAR_")}
    env.update(CLEAR_DATABASE_URL=settings.database_url, CLEAR_DATA_DIR=str(settings.data_dir),
               CLEAR_BROKER_URL=settings.broker_url, CLEAR_MAX_UPLOAD_BYTES=str(64 << 20), PYTHONPATH=str(ROOT))
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
                                 "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("the API did not start: " + log.read_text()[-2000:])


def test_an_api_killed_during_an_upload_leaves_no_spool_once_restarted(settings, api_key, tmp_path):
    port, log = free_port(), tmp_path / "api.log"
    body = b"text,label\n" + b"".join(b"some words of a longer text, row %d,%s\n" % (i, b"ab"[i % 2:i % 2 + 1])
                                      for i in range(400_000))
    proc = _start_api(settings, port, log)
    try:
        def post():
            try:
                httpx.post(f"http://127.0.0.1:{port}/v1/datasets", files={"file": ("big.csv", body)},
                           headers={"Authorization": f"Bearer {api_key}"}, timeout=120)
            except httpx.HTTPError:
                pass  # the server dies under it

        sender = threading.Thread(target=post, daemon=True)
        sender.start()
        deadline = time.monotonic() + 60
        while not _spooled(settings):
            assert time.monotonic() < deadline and proc.poll() is None, "no spool file appeared"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        sender.join(30)
        assert _spooled(settings), "the killed API's spool file should still be there before a restart"
        proc = _start_api(settings, port, log)
        assert _spooled(settings) == []
        live = [p for p in settings.scratch("uploads").iterdir() if p.is_dir()]
        assert len(live) == 1 and live[0].name.startswith(f"{proc.pid}-")  # the new process's own folder
        assert table_counts(settings.database_url)["dataset_rows"] == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)


def _dataset_sql(dataset_id: str) -> str:
    return ("INSERT INTO datasets (id, tenant_id, name, status, format, sha256, size_bytes, row_count, label_names, "
            f"class_histogram, columns, created_at) VALUES ('{dataset_id}', 't', 'n', 'ready', 'csv', 'x', 1, 1, "
            "'[]', '{}', '{}', CURRENT_TIMESTAMP)")


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_dataset_rows_still_need_their_dataset_and_go_with_it(settings, tmp_path, dialect):
    from sqlalchemy.exc import IntegrityError

    from tests.service.conftest import run_alembic

    url = settings.database_url
    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'clear.db'}"
        run_alembic(url, "upgrade", "head")
    engine = get_engine(url)
    row = "INSERT INTO dataset_rows (dataset_id, row_index, text, label) VALUES ('{}', {}, 'x', 'a')"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, created_at) VALUES ('t', CURRENT_TIMESTAMP)"))
        conn.execute(text(_dataset_sql("ds_kept")))
        conn.execute(text(_dataset_sql("ds_gone")))
        for i in range(3):
            conn.execute(text(row.format("ds_kept", i)))
            conn.execute(text(row.format("ds_gone", i)))
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(text(row.format("ds_missing", 0)))
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(text("UPDATE dataset_rows SET dataset_id = 'ds_missing' WHERE dataset_id = 'ds_kept'"))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM datasets WHERE id = 'ds_gone'"))
        counts = dict(conn.execute(text("SELECT dataset_id, count(*) FROM dataset_rows GROUP BY dataset_id")).all())
    assert counts == {"ds_kept": 3}
    # a dataset checked once in a transaction is not trusted after that transaction deletes it ...
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(text(_dataset_sql("ds_brief")))
            conn.execute(text(row.format("ds_brief", 0)))
            conn.execute(text("DELETE FROM datasets WHERE id = 'ds_brief'"))
            conn.execute(text(row.format("ds_brief", 1)))
    # ... nor after the savepoint that checked it (and created it) is rolled back
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            nested = conn.begin_nested()
            conn.execute(text(_dataset_sql("ds_undone")))
            conn.execute(text(row.format("ds_undone", 0)))
            nested.rollback()
            conn.execute(text(row.format("ds_undone", 1)))
    with pytest.raises(IntegrityError):  # a dataset's id cannot change under its rows (0009, as a foreign key)
        with engine.begin() as conn:
            conn.execute(text("UPDATE datasets SET id = 'ds_moved' WHERE id = 'ds_kept'"))
    with engine.begin() as conn:  # rows of two datasets interleaved: each checked, all stored
        conn.execute(text(_dataset_sql("ds_other")))
        for i in range(3, 6):
            conn.execute(text(row.format("ds_kept", i)))
            conn.execute(text(row.format("ds_other", i)))
        counts = dict(conn.execute(text("SELECT dataset_id, count(*) FROM dataset_rows GROUP BY dataset_id")).all())
    assert counts == {"ds_kept": 6, "ds_other": 3}
    if dialect == "sqlite":
        engine.dispose()


def test_a_trusted_dataset_is_checked_and_locked_once_and_trust_ends_with_it(settings):
    # migration 0009: dataset_rows_trust(id) checks and locks a dataset once per transaction, so its rows skip
    # their own check; rows of any other dataset are still checked; deleting the dataset or rolling back the
    # savepoint that trusted it ends the trust; a concurrent delete of a trusted dataset waits for the commit
    from sqlalchemy.exc import IntegrityError, OperationalError

    from app.services.datasets import trust_dataset_rows
    from app.db import session_factory

    engine = get_engine(settings.database_url)
    row = "INSERT INTO dataset_rows (dataset_id, row_index, text, label) VALUES ('{}', {}, 'x', 'a')"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, created_at) VALUES ('t', CURRENT_TIMESTAMP)"))
        for name in ("ds_a", "ds_b"):
            conn.execute(text(_dataset_sql(name)))
    sessions = session_factory(settings.database_url)
    with sessions() as session, pytest.raises(IntegrityError, match="ds_nowhere"):
        trust_dataset_rows(session, "ds_nowhere")
    with sessions() as session:  # trusted: its rows go in; another dataset's missing one is still refused
        trust_dataset_rows(session, "ds_a")
        session.execute(text(row.format("ds_a", 0)))
        with pytest.raises(IntegrityError, match="ds_missing"), session.begin_nested():
            session.execute(text(row.format("ds_missing", 0)))
        session.commit()
    with sessions() as session, pytest.raises(IntegrityError):
        trust_dataset_rows(session, "ds_b")
        session.execute(text("DELETE FROM datasets WHERE id = 'ds_b'"))
        session.execute(text(row.format("ds_b", 0)))
    with sessions() as session, pytest.raises(IntegrityError):
        savepoint = session.begin_nested()
        session.execute(text(_dataset_sql("ds_undone")))
        trust_dataset_rows(session, "ds_undone")
        savepoint.rollback()
        session.execute(text(row.format("ds_undone", 0)))
    with sessions() as session, pytest.raises(IntegrityError):  # renaming a trusted dataset ends the trust
        session.execute(text(_dataset_sql("ds_renamed")))
        trust_dataset_rows(session, "ds_renamed")
        session.execute(text("UPDATE datasets SET id = 'ds_elsewhere' WHERE id = 'ds_renamed'"))
        session.execute(text(row.format("ds_renamed", 0)))
    with sessions() as session:  # the lock: a delete of a dataset whose rows are being stored waits
        trust_dataset_rows(session, "ds_a")
        with engine.connect() as other:
            other.execute(text("SET lock_timeout = '300ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                other.execute(text("DELETE FROM datasets WHERE id = 'ds_a'"))
        session.rollback()
    with engine.connect() as conn:
        counts = dict(conn.execute(text("SELECT dataset_id, count(*) FROM dataset_rows GROUP BY dataset_id")).all())
    assert counts == {"ds_a": 1}


def test_a_duplicate_id_names_the_row_that_first_used_it(tmp_path):
    # r1 first at row 1 (first chunk), again at row 2 (same chunk) and row 5 (a later chunk); r4 at rows 4 and 6
    ids = ["r0", "r1", "r1", "r3", "r4", "r1", "r4", "r7"]
    path = tmp_path / "ids.csv"
    path.write_text("id,text,label\n" + "".join(f"{i},text {n},{'ab'[n % 2]}\n" for n, i in enumerate(ids)))
    mapping = {"text": "text", "text_pair": None, "label": "label", "id": "id", "gold_label": None}
    for chunks in (iter_tables(path, "csv", max_uncompressed=1 << 20, chunk_rows=4),
                   iter_chunks(path, "csv", max_uncompressed=1 << 20, chunk_rows=4)):
        validator = RowValidator(mapping, None, 1, 100, 50)
        for chunk in chunks:
            validator.add(chunk)
        found = [(e["row"], e["first_row"], e["message"]) for e in validator.errors if e["code"] == "duplicate_id"]
        assert found == [(2, 1, "id 'r1' already used by row 1"), (5, 1, "id 'r1' already used by row 1"),
                         (6, 4, "id 'r4' already used by row 4")]


def test_an_upload_is_written_once_into_the_scratch_folder_and_removed_after(client, settings, monkeypatch):
    import hashlib

    from app.api import multipart
    from app.services import datasets

    seen, parsed = [], []
    original, create = multipart.ScratchFile.append, datasets.create_dataset

    def append(self, data):  # where the received pieces go while the body arrives
        seen.append((self.path.parent.parent, self.path))
        return original(self, data)

    def create_dataset(session, upload, *args, **kwargs):  # the file the rows are parsed from
        parsed.append(upload.file.path)
        return create(session, upload, *args, **kwargs)

    monkeypatch.setattr(multipart.ScratchFile, "append", append)
    monkeypatch.setattr(datasets, "create_dataset", create_dataset)
    content = _frame(3000).to_csv(index=False).encode()
    response = upload(client, content, "data.csv", id_column="id", gold_label_column="gold")
    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == hashlib.sha256(content).hexdigest()
    assert response.json()["size_bytes"] == len(content)
    assert seen and {root for root, _ in seen} == {settings.scratch("uploads")}
    assert parsed == [seen[0][1]] and {path for _, path in seen} == set(parsed)  # parsed where it arrived: no copy
    assert _spooled(settings) == []
    # refused before the route reads it (unknown key): parsed, then removed all the same
    bad = client.post("/v1/datasets", files={"file": ("data.csv", content)},
                      headers={"Authorization": "Bearer clear_sk_" + "x" * 40})
    assert bad.status_code == 401
    assert _spooled(settings) == []


def test_a_caller_without_a_good_key_or_over_its_quota_costs_no_spooled_byte(client, settings, monkeypatch):
    """The key and the tenant's upload quota are checked before the multipart body is read: an unknown key, a
    read-only key or a body declared larger than the quota is refused without one byte written to the scratch
    folder; a good upload is then checked and counted once (one rate-limit hit)."""
    from app.api import multipart
    from app.services.api_keys import set_quotas
    from app.db import session_factory
    from tests.service.conftest import TENANT_A, create_key

    written = []
    original = multipart.ScratchFile.append
    monkeypatch.setattr(multipart.ScratchFile, "append", lambda self, data: (written.append(len(data)),
                                                                            original(self, data))[1])
    content = _frame(8000).to_csv(index=False).encode()  # past the quota by more than the multipart slack
    reader = create_key(settings.database_url, TENANT_A, "read")
    for headers, status in (({"Authorization": "Bearer clr_00000000_" + "x" * 43}, 401),
                            ({"Authorization": f"Bearer {reader}"}, 403)):
        response = client.post("/v1/datasets", files={"file": ("data.csv", content)}, headers=headers)
        assert response.status_code == status, response.text
        assert written == [], (status, written)
    with session_factory(settings.database_url)() as session:
        set_quotas(session, TENANT_A, max_upload_bytes=1000)
        session.commit()
    over = client.post("/v1/datasets", files={"file": ("data.csv", content)})
    assert over.status_code == 429 and over.json()["error"]["quota"] == "upload_bytes", over.text
    assert written == [] and _spooled(settings) == []
    # the media type in any case (the parser lower-cases it): still checked before the body
    body = _multipart([("file", "data.csv", content)])
    for headers, status in (({"Authorization": "Bearer clr_00000000_" + "x" * 43}, 401),
                            ({"Authorization": f"Bearer {reader}"}, 403), ({}, 429)):  # ({}: the client's key)
        mixed = client.post("/v1/datasets", content=body,
                            headers={"Content-Type": "Multipart/Form-Data; boundary=BOUND", **headers})
        assert mixed.status_code == status, mixed.text
    assert written == []

    def chunked():  # no Content-Length: cut off once the file passes the quota, as it streams
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]

    streamed = client.post("/v1/datasets", content=chunked(),
                           headers={"Content-Type": "multipart/form-data; boundary=BOUND"})
    assert streamed.status_code == 429 and streamed.json()["error"]["quota"] == "upload_bytes", streamed.text
    assert sum(written) <= 1000 and _spooled(settings) == []
    written.clear()
    hits = []
    monkeypatch.setattr(client.app.state.rate_limiter, "hit", hits.append)
    small = _frame(12).to_csv(index=False).encode()
    assert len(small) < 1000
    assert upload(client, small, "small.csv", id_column="id", gold_label_column="gold").status_code == 201
    assert len(hits) == 1 and sum(written) == len(small)


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "BOUND", close: bool = True) -> bytes:
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + (f"--{boundary}--\r\n".encode() if close else b"")


def test_a_body_that_ends_inside_a_file_leaves_no_file(client, settings):
    truncated = _multipart([("name", None, b"cut"), ("file", "a.csv", b"text,label\nx,a\n")], close=False)
    truncated = truncated[:-2]  # no boundary after the file's bytes: the part never ends
    for headers in ({}, {"Authorization": "Bearer clear_sk_" + "x" * 40}):
        response = client.post("/v1/datasets", content=truncated,
                               headers={"Content-Type": "multipart/form-data; boundary=BOUND", **headers})
        assert response.status_code == (400 if not headers else 401), response.text
        if not headers:  # says the upload was cut off (it used to be "file: Field required")
            error = response.json()["error"]
            assert error["code"] == "bad_request" and error["param"] == "file" and "cut off" in error["message"]
        assert _spooled(settings) == []
    assert table_counts(settings.database_url)["datasets"] == 0


def test_a_malformed_multipart_body_is_a_400_that_names_what_to_fix(client, settings):
    """Starlette's own messages ("Invalid multipart data.", a bare 400 without a param) said nothing a caller could
    act on: a nameless part names the body, a boundary that does not match names the Content-Type."""
    content = b"text,label\nx,a\n"
    nameless = (b'--BOUND\r\nContent-Disposition: form-data; filename="a.csv"\r\n\r\n' + content +
                b"\r\n--BOUND--\r\n")
    cases = [(nameless, "multipart/form-data; boundary=BOUND", "body", "no name"),
             (_multipart([("file", "a.csv", content)]), "multipart/form-data; boundary=OTHER", "Content-Type",
              "'OTHER'"),
             (_multipart([("file", "a.csv", content)]), "multipart/form-data", "Content-Type", "no boundary"),
             (_multipart([("file", "a.csv", content)]), "multipart/form-data; boundary=", "Content-Type",
              "no boundary")]
    for body, content_type, param, said in cases:
        response = client.post("/v1/datasets", content=body, headers={"Content-Type": content_type})
        error = response.json()["error"]
        assert response.status_code == 400 and error["param"] == param and said in error["message"], response.text
        assert _spooled(settings) == []
    assert table_counts(settings.database_url)["datasets"] == 0


def test_a_body_cut_off_anywhere_before_its_closing_boundary_is_a_400(client, settings):
    """python-multipart does not check that the body reached its closing boundary: a cut inside the file part's
    headers was "file: Field required" (a 422 saying no file was sent), and one right after a boundary was taken as
    a whole body."""
    whole = _multipart([("file", "a.csv", b"text,label\nx,a\ny,b\n")])
    head = whole.index(b"\r\n\r\n")
    for cut in (whole[:head - 10], whole[:head + 2], b"--BO", whole[:-len(b"BOUND--\r\n")] + b"BOUND\r\n", b""):
        response = client.post("/v1/datasets", content=cut, headers={"Content-Type": "multipart/form-data; boundary=BOUND"})
        error = response.json()["error"]
        assert response.status_code == 400 and "cut off" in error["message"], (cut[-30:], response.text)
        assert _spooled(settings) == []
    assert table_counts(settings.database_url)["datasets"] == 0


def test_an_unknown_part_is_refused_as_it_arrives(client, settings):
    """A misspelt mapping field (gold_label_colum) was dropped without a word, and the gold labels with it."""
    response = client.post("/v1/datasets", files={"file": ("a.csv", _frame(12).to_csv(index=False).encode())},
                           data={"gold_label_colum": "gold"})
    error = response.json()["error"]
    assert response.status_code == 422 and error["param"] == "gold_label_colum", response.text
    assert "gold_label_column" in error["message"]  # the accepted names are listed
    assert _spooled(settings) == [] and table_counts(settings.database_url)["datasets"] == 0


def test_an_integer_past_the_int_string_limit_is_a_422_not_a_500(client, settings):
    """``json.loads`` raises a bare ValueError for an integer of more than 4,300 digits: a JSONL cell anywhere on a
    line, or the declared ``labels`` list, was a 500."""
    big = b"1" * 5000
    jsonl = b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y", "n": ' + big + b"}\n"
    response = client.post("/v1/datasets", files={"file": ("a.jsonl", jsonl)})
    error = response.json()["error"]
    assert response.status_code == 422 and error["code"] == "parse_error", response.text
    assert error["details"][0]["line"] == 2 and "4300 digits" in error["message"]
    csv_bytes = _frame(12).to_csv(index=False).encode()
    labels = client.post("/v1/datasets", files={"file": ("a.csv", csv_bytes)}, data={"labels": "[" + "1" * 5000 + "]"})
    assert labels.status_code == 422 and labels.json()["error"]["param"] == "labels", labels.text
    assert _spooled(settings) == [] and table_counts(settings.database_url)["datasets"] == 0


def test_an_upload_that_is_not_multipart_is_a_415_after_the_key(client, settings):
    for kwargs in ({"data": {"name": "x"}}, {"json": {"file": "a.csv"}}, {"content": b"text,label\nx,a\n"}):
        response = client.post("/v1/datasets", **kwargs)
        error = response.json()["error"]
        assert response.status_code == 415 and error["code"] == "unsupported_media_type", response.text
        assert error["param"] == "Content-Type" and "multipart/form-data" in error["message"]
    # the key is checked first: a caller without one learns that, not the media type
    bad_key = client.post("/v1/datasets", data={"name": "x"}, headers={"Authorization": "Bearer clr_00000000_" + "x" * 43})
    assert bad_key.status_code == 401, bad_key.text
    assert table_counts(settings.database_url)["datasets"] == 0


def test_a_json_body_the_parser_refuses_says_why(client, settings):
    """FastAPI answers "There was an error parsing the body" for any error of the JSON decoder but a syntax error:
    a number past Python's 4,300-digit int-string limit, a body that is not UTF-8."""
    huge = b'{"dataset_id": "ds_x", "training": {"epochs": ' + b"9" * 5000 + b"}}"
    for body, said in ((huge, "more than 4300 digits"), (b'{"dataset_id": "\xe9"}', "not UTF-8"),
                       (b'{"dataset_id":', "not valid JSON")):  # its position was the param: "14"
        response = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
        error = response.json()["error"]
        assert response.status_code == 400 and error["param"] == "body" and said in error["message"], response.text
    # a body that is not a JSON object, or none: the body is named, not nothing
    for kwargs, status, param in (({"data": {"dataset_id": "ds_x"}}, 415, "Content-Type"),
                                  ({"content": b"dataset_id=ds_x", "headers": {"Content-Type": "text/plain"}}, 415,
                                   "Content-Type"),
                                  ({"headers": {"Content-Type": "application/json"}}, 422, "body"),
                                  ({"json": ["ds_x"]}, 422, "body")):
        response = client.post("/v1/jobs", **kwargs)
        assert response.status_code == status and response.json()["error"]["param"] == param, response.text
    assert table_counts(settings.database_url)["jobs"] == 0


def test_an_upload_that_stalls_mid_file_is_408_and_leaves_no_file(settings, auth):
    """A client that stops sending in the middle of the file: after body_idle_timeout_s the API answers 408 and
    closes, the spooled part is removed and nothing is stored (it used to wait for the client for ever)."""
    import socket

    from tests.service.test_api_load import ServerThread

    quick = settings.model_copy(update={"body_idle_timeout_s": 1.0})
    body = _multipart([("name", None, b"stall"), ("file", "a.csv", b"text,label\n" + b"some row,a\n" * 2000)])
    sent = body[:len(body) // 2]  # into the file's bytes, then nothing more
    head = (f"POST /v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth['Authorization']}\r\n"
            f"Content-Type: multipart/form-data; boundary=BOUND\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with ServerThread(create_app(quick, enqueue=lambda _id: None)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.sendall(head + sent)
            started, answer = time.monotonic(), b""
            while chunk := sock.recv(65536):  # the server answers, then closes
                answer += chunk
            waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
        assert b'"request_timeout"' in answer and 0.8 <= waited < 10
        assert _spooled(settings) == []
    assert table_counts(settings.database_url)["datasets"] == 0


def test_many_file_parts_hold_one_descriptor_at_a_time(tmp_path):
    import asyncio

    from starlette.datastructures import Headers

    from app.api.multipart import ScratchMultiPartParser

    body = _multipart([(f"f{i}", f"f{i}.csv", b"x" * (i % 3)) for i in range(200)])

    async def stream():
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def parse():
        before = descriptors()
        parser = ScratchMultiPartParser(Headers({"content-type": "multipart/form-data; boundary=BOUND"}), stream(),
                                        directory=tmp_path)
        form = await parser.parse()
        held = descriptors() - before
        files = [v for _, v in form.multi_items()]
        contents = [await f.read() for f in files[:5]]
        await form.close()
        return held, len(files), contents

    held, count, contents = asyncio.run(parse())
    assert count == 200 and contents == [b"", b"x", b"xx", b"", b"x"]
    assert held <= 1  # not one per part
    assert list(tmp_path.iterdir()) == []  # every part's file went with the form
