"""A request-body cap enforced while the body streams in: a body sent without ``Content-Length``
(chunked) stops being read once it passes the limit and the request is answered 413, so a 1 GB
stream costs the service the limit at most, never the whole stream (``UploadLimit`` in
``app.main`` refuses declared oversize bodies before reading anything). A body whose next piece does
not come within ``body_idle_timeout_s`` is cut off the same way and answered 408."""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.handlers import envelope

MULTIPART_SLACK = 64 * 1024  # form fields and boundaries around the file


def _cut_off(status: int, code: str, message: str, param: str | None = None):
    """An error envelope for a body the service stopped reading; ``Connection: close`` makes the server drop the
    connection rather than drain the rest of the body."""
    response = envelope(status, code, message, param)
    response.headers["Connection"] = "close"
    return response


def too_large(max_bytes: int):
    """The 413 response for a body past ``max_bytes`` (+ slack)."""
    return _cut_off(413, "payload_too_large", f"the request body is larger than the limit of {max_bytes} bytes",
                    "file")


def stalled(idle_s: float):
    """The 408 response for a body that stopped arriving for ``idle_s`` seconds."""
    return _cut_off(408, "request_timeout", f"the request body stopped arriving: no data for {idle_s:g} s; "
                    "nothing was stored, send the request again")


class BodyLimit:
    """Count body bytes as they arrive; past ``max_bytes`` + slack, or when no piece came for ``idle_s`` seconds,
    feed the app a disconnect and answer 413 (or 408) in place of whatever it answers.

    Args:
        max_bytes: the upload limit (> 0); the cap is that plus ``MULTIPART_SLACK``.
        idle_s: longest wait for the next piece of the body, in seconds (> 0).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, idle_s: float = 60.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.cap = max_bytes + MULTIPART_SLACK
        self.idle_s = idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through with a counting ``receive`` and a guarding ``send`` (GET and HEAD as they
        are: no route of this API reads their body, and uvicorn stops reading a body nobody reads)."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        state = {"received": 0, "over": False, "stalled": False, "started": False}

        async def counting_receive() -> Message:
            if state["over"] or state["stalled"]:
                return {"type": "http.disconnect"}
            with anyio.move_on_after(self.idle_s) as waited:
                message = await receive()
            if waited.cancelled_caught:
                state["stalled"] = True
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.cap:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"] or state["stalled"]:
                return  # the app's own answer to a cut-off body is replaced by the 413 (408)
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not (state["over"] or state["stalled"]):
                raise
        if state["started"]:
            return
        if state["over"]:
            await too_large(self.max_bytes)(scope, receive, send)
        elif state["stalled"]:
            await stalled(self.idle_s)(scope, receive, send)


class _HeadAnswered(Exception):
    """Raised into a HEAD's app from ``send`` once its headers are out: stops a streamed body nobody reads."""


class HeadAsGet:
    """Answer ``HEAD`` as the route's ``GET`` without its body (FastAPI routes declare GET only, so HEAD was a
    405): the app sees a GET (same authentication and scope), the client gets its status and headers. A streamed
    answer (an export, the event stream) is stopped at its first piece: the app's next ``send`` raises, so an
    export is not produced in full and a job's event stream does not stay open until the job ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass other requests through; run a HEAD as a GET, sending the start message and an empty end."""
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def headers_only(message: Message) -> None:
            nonlocal ended
            if message["type"] != "http.response.body":
                await send(message)
                return
            if not ended:
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            if message.get("more_body", False):
                raise _HeadAnswered

        try:
            await self.app(dict(scope, method="GET"), receive, headers_only)
        except _HeadAnswered:
            pass


def install_request_guards(app, settings) -> None:
    """Add ``Idempotency-Key`` handling inside the streaming body cap (call before adding ``UploadLimit``,
    so that the declared-length check runs first, then this cap, then the idempotency spool)."""
    from app.api.idempotency import Idempotency

    app.add_middleware(HeadAsGet)  # innermost: the access log and metrics still see the HEAD
    app.add_middleware(Idempotency, factory=app.state.session_factory, limiter=app.state.rate_limiter,
                       retry_after_s=settings.retry_after_s)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes, idle_s=settings.body_idle_timeout_s)
