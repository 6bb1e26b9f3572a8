"""JSON log lines, one object per line, each with the id of the job being worked on (if any).

The job id comes from ``job_context`` (a context variable, so it follows threads' and asyncio
tasks' own contexts) or from a ``job_id`` passed in ``extra``. Entry points (the API served by
uvicorn, the Celery worker) call ``configure_logging``; library code only logs.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

current_job_id: ContextVar[str | None] = ContextVar("clear_job_id", default=None)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_HANDLER_MARK = "_clear_json_handler"


@contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    """Within this block every log line carries ``job_id``."""
    token = current_job_id.set(job_id)
    try:
        yield
    finally:
        current_job_id.reset(token)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: ts, level, logger, message, job_id, the record's extras
    and, for errors, the traceback as ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line (values that JSON cannot hold become strings)."""
        body = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "message": record.getMessage(),
                "job_id": getattr(record, "job_id", None) or current_job_id.get()}
        body.update({k: v for k, v in vars(record).items() if k not in _STANDARD and k != "job_id"})
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send the root logger (and uvicorn's) to stderr, as JSON lines or as plain text; calling it
    again replaces the handler it installed instead of adding a second one."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not getattr(h, _HANDLER_MARK, False)] + [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        named.handlers, named.propagate = [], True


def configure_from_env(default_level: str | int = "INFO") -> None:
    """``configure_logging`` with ``CLEAR_LOG_LEVEL`` (else ``default_level``) and ``CLEAR_LOG_FORMAT``
    (json, the default, or text)."""
    settings = LogSettings()
    level = settings.level or (logging.getLevelName(default_level) if isinstance(default_level, int) else default_level)
    configure_logging(level, settings.format)


class LogSettings(BaseSettings):
    """How an entry point logs, from ``CLEAR_LOG_LEVEL`` and ``CLEAR_LOG_FORMAT``."""

    model_config = SettingsConfigDict(env_prefix="CLEAR_LOG_", extra="ignore")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] | None = None
    format: Literal["json", "text"] = "json"
