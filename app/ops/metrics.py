"""Prometheus metrics of one API process: jobs by state, queue depth and job durations read from the
database at scrape time (workers run elsewhere, the database knows every job), and the latency of
this process's own requests, measured by ``RequestMetrics``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.models import JOB_STATUSES, TERMINAL_STATUSES, Job
from app.ops.logs import job_context

access_log = logging.getLogger("clear.access")
JOB_DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class JobCollector(Collector):
    """Reads the jobs table on each scrape: ``clear_jobs{status}``, ``clear_queue_depth`` (jobs queued,
    waiting for a worker) and ``clear_job_duration_seconds{status}`` (start to end of finished jobs)."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    def collect(self) -> Iterator:
        """The three job metric families."""
        with self.factory() as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            spans = session.execute(select(Job.status, Job.started_at, Job.finished_at).where(
                Job.status.in_(TERMINAL_STATUSES), Job.started_at.is_not(None), Job.finished_at.is_not(None))).all()
        jobs = GaugeMetricFamily("clear_jobs", "Jobs in each state.", labels=["status"])
        for status in JOB_STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        yield GaugeMetricFamily("clear_queue_depth", "Jobs queued and waiting for a worker.",
                                value=counts.get("queued", 0))
        yield _durations(spans)


def _durations(spans) -> HistogramMetricFamily:
    family = HistogramMetricFamily("clear_job_duration_seconds", "Run time of finished jobs, start to end.",
                                   labels=["status"])
    for status in TERMINAL_STATUSES:
        seconds = [(end - start).total_seconds() for s, start, end in spans if s == status]
        buckets = [(floatToGoString(b), sum(x <= b for x in seconds)) for b in JOB_DURATION_BUCKETS]
        family.add_metric([status], buckets + [("+Inf", len(seconds))], sum_value=sum(seconds))
    return family


def make_registry(factory: sessionmaker[Session]) -> tuple[CollectorRegistry, Histogram]:
    """A registry of the job metrics and the request-latency histogram (one per app, so that tests can
    build many apps in one process)."""
    registry = CollectorRegistry()
    registry.register(JobCollector(factory))
    latency = Histogram("clear_http_request_duration_seconds", "API request latency, by route template.",
                        ["method", "route", "status"], registry=registry, buckets=LATENCY_BUCKETS)
    return registry, latency


CANCELLED_STATUS = 499


class RequestMetrics:
    """ASGI middleware: times every HTTP request into ``latency`` (labelled by the route's template, not
    the raw path) and writes one JSON access-log line with the job id taken from the path. A request cancelled
    before it answered (uvicorn cancels what is still open past ``--timeout-graceful-shutdown``) is recorded with
    status 499 (``CANCELLED_STATUS``, nginx's "client closed request"), not as a 500."""

    def __init__(self, app: ASGIApp, latency: Histogram) -> None:
        self.app = app
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, recording its status and duration."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, sent = time.perf_counter(), [500], [False]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0], sent[0] = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except asyncio.CancelledError:
            if not sent[0]:  # no answer went out: a request cancelled (at shutdown, past the grace), not a 500
                status[0] = CANCELLED_STATUS
            raise
        finally:
            self._record(scope, status[0], time.perf_counter() - start)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None)
        if route is None:  # a mounted app (static files) or no match at all
            route = f"{scope['root_path']}/{{path}}" if scope.get("root_path") else "unmatched"
        self.latency.labels(scope["method"], route, str(status)).observe(seconds)
        with job_context(scope.get("path_params", {}).get("job_id")):
            access_log.info("%s %s %s", scope["method"], scope["path"], status,
                            extra={"method": scope["method"], "path": scope["path"], "route": route,
                                   "status": status, "duration_ms": round(seconds * 1000, 2)})
