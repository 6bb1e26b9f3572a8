"""The wrk output parser of ``bench/service_api.py`` (no server, no wrk needed)."""

from __future__ import annotations

import pytest

from bench.service_api import parse_wrk, ratios, seconds

LOADED = """Running 30s test @ http://127.0.0.1:8000/v1/jobs?limit=20
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   486.20ms  120.42ms   1.02s    71.12%
    Req/Sec    65.02     30.01   150.00     70.50%
  Latency Distribution
     50%  486.20ms
     75%  540.11ms
     90%  800.54ms
     99%    1.02s
  3690 requests in 30.03s, 4.02MB read
  Socket errors: connect 0, read 2, write 0, timeout 12
  Non-2xx or 3xx responses: 10
Requests/sec:    122.88
Transfer/sec:    137.04KB
"""
IDLE = """Running 5s test @ http://127.0.0.1:8000/v1/jobs?limit=20
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     0.00      0.00     0.00      -nan%
  Latency Distribution
     50%    0.00us
     75%    0.00us
     90%    0.00us
     99%    0.00us
  0 requests in 5.09s, 0.00B read
Requests/sec:      0.00
Transfer/sec:       0.00B
"""


def test_wrk_numbers_errors_and_units_are_read():
    got = parse_wrk(LOADED)
    assert got["requests"] == 3690 and got["requests_per_s"] == pytest.approx(122.88)
    assert got["p50_s"] == pytest.approx(0.4862) and got["p99_s"] == pytest.approx(1.02)
    assert got["socket_errors"] == {"connect": 0, "read": 2, "write": 0, "timeout": 12}
    assert got["non_2xx_3xx"] == 10 and got["errors"] == 24
    assert seconds("950.00us") == pytest.approx(950e-6) and seconds("2.00m") == 120 and seconds("-nan") is None


def test_a_route_that_completed_nothing_has_no_latency_and_misses_the_target():
    idle = parse_wrk(IDLE)
    assert idle["requests"] == 0 and idle["p99_s"] is None and idle["errors"] == 0
    health = {**parse_wrk(LOADED), "route": "/healthz", "errors": 0}
    rows = [health, {**idle, "route": "GET /v1/jobs?limit=20"}]
    ratios(rows)
    assert rows[1]["rps_ratio"] == 0 and rows[1]["p99_ratio"] is None and rows[1]["meets_target"] is False
    with pytest.raises(ValueError):
        parse_wrk("wrk: connection refused")
