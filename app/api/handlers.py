"""The one place where errors become HTTP responses, all in the envelope
``{"error": {"code", "message", "param"}}`` (plus ``details`` for row-level errors)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, ServiceError, Unavailable

logger = logging.getLogger(__name__)
STATUS_BY_ERROR: dict[type[ServiceError], int] = {
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    InvalidInput: 422,
    Unavailable: 503,
}
CODE_BY_STATUS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def envelope(status: int, code: str, message: str, param: str | None = None,
             details: list[dict[str, Any]] | None = None) -> JSONResponse:
    """A JSON error response in the service's envelope."""
    body: dict[str, Any] = {"code": code, "message": message, "param": param}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status)


async def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
    status = next((s for cls, s in STATUS_BY_ERROR.items() if isinstance(exc, cls)), 400)
    return envelope(status, exc.code, exc.message, exc.param, exc.details)


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or None


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = _loc_to_param(tuple(first.get("loc", ())))
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    details = [{"param": _loc_to_param(tuple(e.get("loc", ()))), "message": e["msg"], "type": e.get("type")}
               for e in errors]
    return envelope(422, "invalid_request", message, param, details)


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = CODE_BY_STATUS.get(exc.status_code, "http_error")
    return envelope(exc.status_code, code, str(exc.detail))


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return envelope(500, "internal_error", "the service failed on this request; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into the envelope."""
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
