"""``bench/scale.py`` runs end to end on a few hundred rows against Postgres (a database it creates and drops),
so it cannot rot; the test checks the JSON and the tables, not the numbers."""

from __future__ import annotations

import json

import psycopg

from bench.postgres import PG_ADMIN


def test_scale_measures_every_stage_and_the_copy_baseline(tmp_path, capsys):
    from bench import scale

    out = tmp_path / "scale.json"
    assert scale.main(["--rows", "700", "--pass-rows", "300", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert [s["stage"] for s in payload["stages"]] == ["load", "tokenise", "pass", "estimate", "report", "write",
                                                       "label check", "predict write"]
    assert payload["stages"][-1]["rows"] == 700 and payload["predict_copy_bytes"] > 0
    assert payload["predict_copy_seconds"] > 0 and payload["predict_write_over_copy"] > 0
    assert payload["rows"] == 700 and payload["pass_rows"] == 300 and payload["stages"][0]["rows"] == 700
    assert payload["copy_seconds"] > 0 and payload["write_over_copy"] > 0 and payload["copy_bytes"] > 0
    assert 45 <= payload["stages"][1]["tokens"] / 700 <= 55  # about 50 tokens a row
    printed = capsys.readouterr().out
    assert "| stage |" in printed and "report write / plain COPY" in printed
    assert "prediction rows write / plain COPY" in printed
    with psycopg.connect(PG_ADMIN) as conn:  # its database is gone
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (payload["database"],)).fetchone()
    assert payload["database"].startswith("clear_bench_scale_") and left[0] == 0


def test_the_synthetic_rows_are_seeded_and_sliceable():
    from bench.scale import synthetic_rows

    whole = list(synthetic_rows(120_000, seed=3, start=49_990, end=50_010))
    again = list(synthetic_rows(120_000, seed=3, end=50_010))[49_990:]
    assert whole == again and [r[0] for r in whole] == list(range(49_990, 50_010))
    assert list(synthetic_rows(10, seed=3)) != list(synthetic_rows(10, seed=4))
