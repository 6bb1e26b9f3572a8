"""The API's hot read routes in one thread-pool call each: authentication, the rate limit, the query and the
answer's JSON, in the request's one read session (issue 13, ``bench/service.py api``).

Why: a route with ``authenticate`` as a FastAPI dependency crosses into the thread pool twice (the dependency,
then the route's database work) and lets FastAPI validate and serialise the answer again on the event loop. On
a busy process each crossing waits for the GIL behind the event loop and the other threads; measured with
``wrk -c64`` on ``GET /v1/jobs/{id}``, one crossing per request and a prebuilt JSON body is what moved it most.
A read whose connection the database had dropped is run once more on a new one. The routes using
``read_in_one_call`` declare their query parameters as usual and are marked with ``authenticates_inside``;
FastAPI validates those parameters before the route runs, so when they are malformed the app's 422 handler
first authenticates the request (``authentication_error``): a missing, unknown or under-scoped key is still
the 401/403 it is on every other route, and the refused request counts against the key's rate limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from app.api.auth import Principal, authenticate_alone, authenticate_in
from app.db import SessionGate
from app.errors import Forbidden, Overloaded, TooManyRequests, Unauthorized

# what the OpenAPI schema says of these routes, which have no ``authenticate`` dependency to say it for them
SECURED = {"security": [{"ApiKey": []}]}
ENDPOINT_MARK = "authenticates_inside"


def authenticates_inside(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a route's endpoint as one that authenticates in its own call (``read_in_one_call``), so that a 422 for
    its parameters is preceded by the key check (``authentication_error``). Returns ``endpoint``."""
    setattr(endpoint, ENDPOINT_MARK, True)
    return endpoint


async def authentication_error(request: Request) -> Exception | None:
    """For a request to a route marked ``authenticates_inside`` whose parameters FastAPI refused: the error its key
    gets (``Unauthorized``, ``Forbidden``, ``TooManyRequests``), checked and counted against the rate limit as
    ``authenticate`` does, or None when the key is good (the 422 stands), for any other route, or when the check
    cannot be made now (busy or unreachable database: the 422 stands)."""
    route = request.scope.get("route")
    if not getattr(getattr(route, "endpoint", None), ENDPOINT_MARK, False):
        return None
    gate: SessionGate = request.app.state.session_gate
    try:
        await gate.acquire()
    except Overloaded:
        return None
    try:
        return await run_in_threadpool(_key_error, request)
    finally:
        gate.release()


def _key_error(request: Request) -> Exception | None:
    try:
        authenticate_alone(request)
    except (Unauthorized, Forbidden, TooManyRequests) as exc:
        return exc
    except DBAPIError:
        return None
    return None


def _answer(request: Request, build: Callable[..., BaseModel], args: tuple[Any, ...]) -> bytes:
    """Authenticate, run ``build(session, principal, *args)`` and dump its model to JSON, in one read session;
    once more, in a new session, if the database had dropped the connection (the API's pool does not ping each
    checkout, ``app.db.PoolOptions``): a read changes nothing, so repeating it is safe. A caller authenticated
    before the connection dropped is not authenticated again (the rate limit counts the request once)."""
    principal: list[Principal] = []
    try:
        return _answer_once(request, build, args, principal)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return _answer_once(request, build, args, principal)


def _answer_once(request: Request, build: Callable[..., BaseModel], args: tuple[Any, ...],
                 principal: list[Principal]) -> bytes:
    with request.app.state.read_session_factory() as session:
        if not principal:
            principal.append(authenticate_in(request, session))
        return build(session, principal[0], *args).model_dump_json().encode()


async def read_in_one_call(request: Request, build: Callable[..., BaseModel], *args: Any) -> Response:
    """The ``application/json`` answer of ``build(session, principal, *args)``: ``session`` a read (autocommit)
    session taken under the app's ``SessionGate``, ``principal`` the caller authenticated in it for the request's
    method (as ``app.api.auth.authenticate``); ``build`` returns the route's response model, which becomes the body
    as pydantic dumps it (what FastAPI would send for that ``response_model``).

    Raises:
        Overloaded: no database session came free within ``db_pool_timeout_s`` (503).
        Unauthorized, Forbidden, RateLimited: as ``authenticate`` (401, 403, 429).
        whatever ``build`` raises (``NotFound``, ``InvalidInput``, database errors), to the app's error handlers.
    """
    gate: SessionGate = request.app.state.session_gate
    await gate.acquire()
    try:
        body = await run_in_threadpool(_answer, request, build, args)
    finally:
        gate.release()
    return Response(body, media_type="application/json")

