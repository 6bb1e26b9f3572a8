"""The one place where errors become HTTP responses, all in the envelope
``{"error": {"code", "message", "param"}}`` (plus ``details`` for row-level errors)."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy.exc as sa_exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Mount
from starlette.staticfiles import StaticFiles

from app.errors import (BadRequest, Conflict, Forbidden, InvalidInput, NotFound, Overloaded, PayloadTooLarge,
                        ServiceError, TooManyRequests, Unauthorized, Unavailable, UnsupportedMediaType,
                        too_many_digits, unsupported_media_type)
from app.faults import is_transient
from app.schemas import NO_NUL

logger = logging.getLogger(__name__)
STATUS_BY_ERROR: dict[type[ServiceError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidInput: 422,
    TooManyRequests: 429,
    Unavailable: 503,
    Overloaded: 503,
}
CODE_BY_STATUS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


RETRY_AFTER_S = 5


def envelope(status: int, code: str, message: str, param: str | None = None,
             details: list[dict[str, Any]] | None = None, retry_after_s: int | None = None,
             extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error response in the service's envelope (``extra`` adds fields to it); a 503 carries
    ``Retry-After``."""
    body: dict[str, Any] = {"code": code, "message": message, "param": param, **(extra or {})}
    if details is not None:
        body["details"] = details
    if status == 503 and retry_after_s is None:
        retry_after_s = RETRY_AFTER_S
    headers = dict(headers or {})
    if retry_after_s:
        headers["Retry-After"] = str(retry_after_s)
    return JSONResponse({"error": body}, status_code=status, headers=headers or None)


def _auth_headers(exc: ServiceError) -> dict[str, str] | None:
    # RFC 6750: a 401 names the scheme; a bad key and a missing scope say which error it was.
    if isinstance(exc, Unauthorized):
        error = ', error="invalid_token"' if exc.code == "invalid_api_key" else ""
        return {"WWW-Authenticate": f'Bearer realm="clear"{error}'}
    if isinstance(exc, Forbidden):
        return {"WWW-Authenticate": f'Bearer realm="clear", error="insufficient_scope", scope="{exc.scope}"'}
    return None


def _retry_after(request: Request) -> int:
    settings = getattr(request.app.state, "settings", None)
    return getattr(settings, "retry_after_s", RETRY_AFTER_S)


async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
    status = next((s for cls, s in STATUS_BY_ERROR.items() if isinstance(exc, cls)), 400)
    retry_after = _retry_after(request) if status == 503 else None
    extra = None
    if isinstance(exc, TooManyRequests):
        retry_after, extra = exc.retry_after_s, exc.extra
    elif isinstance(exc, Overloaded):
        retry_after = exc.retry_after_s
    elif isinstance(exc, Forbidden):
        extra = {"scope": exc.scope}
    return envelope(status, exc.code, exc.message, exc.param, exc.details, retry_after_s=retry_after, extra=extra,
                    headers=_auth_headers(exc))


def database_unavailable(retry_after_s: int = RETRY_AFTER_S) -> JSONResponse:
    """The 503 answered while the database cannot be reached."""
    return envelope(503, "database_unavailable", "the database is unavailable for the moment; retry after "
                    f"{retry_after_s} s", retry_after_s=retry_after_s)


OVERLOADED_MESSAGE = ("this API process is busy: every database connection of its pool stayed in use for the pool "
                      "timeout; retry shortly")


def is_pool_timeout(exc: BaseException) -> bool:
    """True for SQLAlchemy's pool timeout (``QueuePool limit ... reached, connection timed out``): the database
    answers, this process has more work than connections, so it is ``overloaded``, not an outage."""
    return isinstance(exc, sa_exc.TimeoutError)


def overloaded(exc: Overloaded | None = None) -> JSONResponse:
    """The 503 ``overloaded`` answer with ``Retry-After`` (``exc``'s message and wait, else the pool's)."""
    retry_after = exc.retry_after_s if exc is not None else Overloaded(OVERLOADED_MESSAGE).retry_after_s
    return envelope(503, "overloaded", exc.message if exc is not None else OVERLOADED_MESSAGE,
                    retry_after_s=retry_after)


def holds_nul(exc: BaseException) -> bool:
    """True for the database refusing a NUL character in a text value (Postgres: "A string literal cannot contain
    NUL (0x00) characters"): the caller's input, not the service's fault (it was a 500)."""
    return isinstance(exc, (sa_exc.DataError, sa_exc.StatementError)) and "NUL (0x00)" in str(exc)


def missing_schema(exc: BaseException) -> bool:
    """True for a query on a table the database does not have (Postgres ``UndefinedTable``, SQLite "no such
    table"): a database nobody migrated, which every route met as a 500."""
    text = str(exc)
    return isinstance(exc, sa_exc.DBAPIError) and ("UndefinedTable" in text or "no such table" in text or
                                                   ('relation "' in text and "does not exist" in text))


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if missing_schema(exc):
        logger.error("the database has no schema (or an old one): %s", exc)
        return envelope(503, "database_not_migrated", "the service's database has no schema yet (or an older one): "
                        "its operator must run `python -m app.cli migrate`; retry after that",
                        retry_after_s=_retry_after(request))
    if holds_nul(exc):  # the routes check the ids and names they take; this is the backstop for any value
        return await _service_error(request, InvalidInput(f"a value of the request {NUL_MESSAGE}", param="body"))
    if is_pool_timeout(exc):
        logger.warning("database pool exhausted (answered 503 overloaded): %s", exc)
        return overloaded()
    if not is_transient(exc):
        return await _unexpected(request, exc)
    logger.warning("database unavailable: %s", exc)
    return database_unavailable(_retry_after(request))


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or None


JSON_MEDIA = "application/json"
# pydantic's error types for a body that is missing or not a JSON object (a form's bytes, a list, a number)
NOT_AN_OBJECT = frozenset({"missing", "model_attributes_type", "dict_type", "model_type"})


def invalid_json(reason: str, send: str = "a JSON object as the route's documentation describes") -> BadRequest:
    """The 400 for a body that does not parse as JSON: the parser's ``reason`` (and position), and what to ``send``."""
    return BadRequest(f"the body is not valid JSON: {reason}; send {send}", param="body")


def whole_body_error(request: Request, first: dict[str, Any]) -> ServiceError | None:
    """The error for a JSON body FastAPI refused as a whole, from its first validation error ``first``, or None
    when the error is about a field (then the usual 422 names it). FastAPI's own answers named no field or the
    character position as one (``"param": "14"`` for ``{"dataset_id":``):

    - JSON that does not parse: 400 ``bad_request`` with the parser's reason and position, ``param="body"``;
    - a body of another Content-Type (a form, text) on a JSON route: 415 ``unsupported_media_type``;
    - no body, or JSON that is not an object: 422 ``invalid_request`` with ``param="body"``.
    """
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        where = f" (at character {loc[1]})" if len(loc) > 1 and isinstance(loc[1], int) else ""
        reason = (first.get("ctx") or {}).get("error") or first.get("msg")
        return invalid_json(f"{reason}{where}")
    if loc != ("body",) or first.get("type") not in NOT_AN_OBJECT:  # a model validator's own error: as it says
        return None
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media and media != JSON_MEDIA and not media.endswith("+json"):
        return unsupported_media_type(media, f"a JSON object with Content-Type: {JSON_MEDIA}")
    what = "no body" if first.get("type") == "missing" else "a JSON body that is not an object"
    return InvalidInput(f"the request has {what}: send a JSON object as the route's documentation describes "
                        f"(Content-Type: {JSON_MEDIA})", param="body", code="invalid_request")


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    from app.api.reads import authentication_error  # the routes that authenticate inside: the key comes first

    refused = await authentication_error(request)
    if refused is not None:
        return await _service_error(request, refused)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    whole_body = whole_body_error(request, first)
    if whole_body is not None:
        return await _service_error(request, whole_body)
    param = _loc_to_param(tuple(first.get("loc", ())))
    message = f"{param}: {plain_message(first)}" if param else plain_message(first)
    details = [{"param": _loc_to_param(tuple(e.get("loc", ()))), "message": plain_message(e),
                "type": e.get("type")} for e in errors]
    return envelope(422, "invalid_request", message, param, details)


NUL_MESSAGE = "holds a NUL character (\\u0000, %00), which no id, name or label can hold: remove it"


def plain_message(error: dict[str, Any]) -> str:
    """pydantic's message of validation error ``error`` (one of ``ValidationError.errors()``), in words a caller
    can act on where pydantic's say nothing: a NUL character against the ``NO_NUL`` pattern, an integer past its
    size limit."""
    if error.get("type") == "string_pattern_mismatch" and (error.get("ctx") or {}).get("pattern") == NO_NUL:
        return NUL_MESSAGE
    if error.get("type") == "int_parsing_size":  # pydantic's words: "... exceeded maximum size"
        return "is too large a number: give a whole number within the range the route's documentation gives"
    return str(error["msg"])


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    wrapped = getattr(exc, "error", None)  # app.api.multipart.FormServiceError: the service's own error
    if isinstance(wrapped, ServiceError):
        return await _service_error(request, wrapped)
    if exc.status_code == 400 and exc.detail == FASTAPI_BODY_ERROR:
        return await _service_error(request, body_parse_error(exc.__cause__))
    code = CODE_BY_STATUS.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    return envelope(exc.status_code, code, str(exc.detail), headers=headers)


FASTAPI_BODY_ERROR = "There was an error parsing the body"  # FastAPI's 400 when decoding the body raised


def body_parse_error(cause: BaseException | None) -> BadRequest:
    """The 400 for a body FastAPI could not decode, saying why (FastAPI's own says only "There was an error
    parsing the body"): ``cause`` is the exception it chained (``raise ... from e``), or ``None``.

    A JSON integer of more than ``sys.get_int_max_str_digits()`` (4,300) digits: Python's JSON parser refuses
    to convert it; a body that is not UTF-8; a body cut off by the client; anything else is named by its type.
    """
    if (said := too_many_digits(cause)) is not None:
        return BadRequest(f"the JSON body {said}", param="body")
    if isinstance(cause, UnicodeDecodeError):
        return BadRequest("the JSON body is not UTF-8 text: send it encoded as UTF-8", param="body")
    if isinstance(cause, ClientDisconnect):
        return BadRequest("the request body was cut off before its end: send it again", param="body")
    name = type(cause).__name__ if cause is not None else "unknown error"
    return BadRequest(f"the body could not be parsed ({name}): send a JSON object as the route's documentation "
                      "describes, with Content-Type: application/json", param="body")


def allowed_methods(request: Request) -> str:
    """The ``Allow`` header of a 405 (RFC 9110, 15.5.6): every method some route of the app answers on this
    path, sorted, comma-separated (e.g. ``"GET, HEAD, POST"``). Starlette's own header names only the first
    route that matched the path, and FastAPI makes one route per method: each method is matched against the
    app's routes in turn."""
    # matched from the app's root: a mount (the dashboard's static files) hands its app a scope whose root_path
    # includes the mount's path
    scope = dict(request.scope, root_path=request.scope.get("app_root_path", request.scope.get("root_path", "")))
    routes = [r for r in request.app.router.routes if not isinstance(r, Mount)]  # a mount matches every method
    methods = {method for method in ("DELETE", "GET", "PATCH", "POST", "PUT")
               if any(route.matches(dict(scope, method=method))[0] == Match.FULL for route in routes)}
    for mount in request.app.router.routes:
        if isinstance(mount, Mount) and isinstance(mount.app, StaticFiles) and mount.matches(scope)[0] == Match.FULL:
            methods.add("GET")  # StaticFiles answers GET and HEAD only
    if "GET" in methods:
        methods.add("HEAD")  # app.api.limits.HeadAsGet answers HEAD wherever GET is answered
    return ", ".join(sorted(methods))


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return envelope(500, "internal_error", "the service failed on this request; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into the envelope."""
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(sa_exc.DBAPIError, _database_error)
    app.add_exception_handler(sa_exc.SQLAlchemyError, _database_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
