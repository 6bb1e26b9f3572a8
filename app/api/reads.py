"""The API's hot read routes in one thread-pool call each: authentication, the rate limit, the query and the
answer's JSON, in the request's one read session (issue 13, ``bench/service.py api``).

Why: a route with ``authenticate`` as a FastAPI dependency crosses into the thread pool twice (the dependency,
then the route's database work) and lets FastAPI validate and serialise the answer again on the event loop. On
a busy process each crossing waits for the GIL behind the event loop and the other threads; measured with
``wrk -c64`` on ``GET /v1/jobs/{id}``, one crossing per request and a prebuilt JSON body is what moved it most.
A read whose connection the database had dropped is run once more on a new one. The routes using
``read_in_one_call`` declare their query parameters as usual (FastAPI validates them first, so
a malformed parameter is a 422 even before the key is checked) and return the ``Response`` it builds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from app.api.auth import authenticate_in
from app.db import SessionGate

# what the OpenAPI schema says of these routes, which have no ``authenticate`` dependency to say it for them
SECURED = {"security": [{"ApiKey": []}]}


def _answer(request: Request, build: Callable[..., BaseModel], args: tuple[Any, ...]) -> bytes:
    """Authenticate, run ``build(session, principal, *args)`` and dump its model to JSON, in one read session;
    once more, in a new session, if the database had dropped the connection (the API's pool does not ping each
    checkout, ``app.db.PoolOptions``): a read changes nothing, so repeating it is safe."""
    try:
        return _answer_once(request, build, args)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return _answer_once(request, build, args)


def _answer_once(request: Request, build: Callable[..., BaseModel], args: tuple[Any, ...]) -> bytes:
    with request.app.state.read_session_factory() as session:
        principal = authenticate_in(request, session)
        return build(session, principal, *args).model_dump_json().encode()


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

