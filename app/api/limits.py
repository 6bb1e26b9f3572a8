"""A request-body cap enforced while the body streams in: a body sent without ``Content-Length``
(chunked) stops being read once it passes the limit and the request is answered 413, so a 1 GB
stream costs the service the limit at most, never the whole stream (``UploadLimit`` in
``app.main`` refuses declared oversize bodies before reading anything)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.handlers import envelope

MULTIPART_SLACK = 64 * 1024  # form fields and boundaries around the file


def too_large(max_bytes: int):
    """The 413 response in the error envelope; ``Connection: close`` makes the server drop the
    connection rather than drain the rest of the body."""
    response = envelope(413, "payload_too_large", f"the request body is larger than the limit of {max_bytes} bytes",
                        "file")
    response.headers["Connection"] = "close"
    return response


class BodyLimit:
    """Count body bytes as they arrive; past ``max_bytes`` + slack, feed the app a disconnect and
    answer 413 in place of whatever it answers."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.cap = max_bytes + MULTIPART_SLACK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through with a counting ``receive`` and a guarding ``send`` (GET and HEAD as they
        are: no route of this API reads their body, and uvicorn stops reading a body nobody reads)."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        state = {"received": 0, "over": False, "started": False}

        async def counting_receive() -> Message:
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.cap:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"]:
                return  # the app's own answer to a cut-off body is replaced by the 413
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await too_large(self.max_bytes)(scope, receive, send)


def install_request_guards(app, settings) -> None:
    """Add ``Idempotency-Key`` handling inside the streaming body cap (call before adding ``UploadLimit``,
    so that the declared-length check runs first, then this cap, then the idempotency spool)."""
    from app.api.idempotency import Idempotency

    app.add_middleware(Idempotency, factory=app.state.session_factory, limiter=app.state.rate_limiter,
                       retry_after_s=settings.retry_after_s)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
