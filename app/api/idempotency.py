"""``Idempotency-Key`` on every POST: the same key and body replay the first answer (with
``Idempotent-Replayed: true``); the same key with another body is a 409; the same key while the
first request still runs is a 409 with ``Retry-After``. A 5xx or 429 answer is not remembered.

The body is spooled (memory, then disk) while its fingerprint is computed, then fed to the app.
A multipart body is fingerprinted part by part (names, file names, contents), not byte for byte,
because clients choose a new random boundary for every request.

Keys belong to the tenant of the request's API key. A request without a valid key, or whose key may
not write, passes through untouched: the route's authentication answers it (401/403), and nothing
is remembered.

A request answered here (a replay, a 409) counts against the key's rate limit like any other request
(the route's authentication counts the ones that run): over it, the answer is the 429 ``rate_limited``
instead. A database pool timeout is answered 503 ``overloaded``, a lost database 503
``database_unavailable``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile

from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import bearer_token
from app.api.handlers import database_unavailable, envelope, is_pool_timeout, overloaded
from app.api.ratelimit import KeyRateLimiter
from app.errors import RateLimited
from app.faults import is_transient
from app.services import api_keys
from app.services import idempotency as keys

logger = logging.getLogger(__name__)
HEADER = b"idempotency-key"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
STORED_HEADERS = (b"content-type", b"location")
MAX_STORED_BODY = 1 << 20


class Fingerprint:
    """sha256 over the method, path, media type and body (multipart: over its parts)."""

    def __init__(self, scope: Scope) -> None:
        self.digest = hashlib.sha256(f"{scope['method']} {scope['path']}?{scope.get('query_string', b'')!r}".encode())
        media, options = parse_options_header(dict(scope["headers"]).get(b"content-type", b""))
        self.digest.update(b"\x00" + media)
        self.parser = None
        if media == b"multipart/form-data" and options.get(b"boundary"):
            put = self._put
            self.parser = MultipartParser(options[b"boundary"], {
                "on_part_begin": lambda: put(b"\x01part"),
                "on_header_field": lambda data, start, end: put(b"\x02" + data[start:end].lower()),
                "on_header_value": lambda data, start, end: put(b"\x03" + data[start:end]),
                "on_part_data": lambda data, start, end: put(data[start:end]),
            })

    def _put(self, data: bytes) -> None:
        self.digest.update(data)

    def feed(self, chunk: bytes) -> None:
        """Add a piece of the body."""
        if self.parser is None:
            self.digest.update(chunk)
            return
        try:
            self.parser.write(chunk)
        except Exception:  # not valid multipart: fall back to the raw bytes; the app will say what is wrong
            self.parser = None
            self.digest.update(b"\x04raw" + chunk)

    def hexdigest(self) -> str:
        """The fingerprint."""
        return self.digest.hexdigest()


class Idempotency:
    """ASGI middleware applying ``Idempotency-Key`` to POST requests.

    Args:
        app: the application inside.
        factory: sessions for the key bookkeeping (short, one per step; never a request's session).
        limiter: the API keys' rate limiter; the requests answered here count against it.
        retry_after_s: ``Retry-After`` of a 503 while the database is unavailable and of a 409 for a key in use.
    """

    def __init__(self, app: ASGIApp, factory: sessionmaker[Session], limiter: KeyRateLimiter,
                 retry_after_s: int = 5) -> None:
        self.app, self.factory, self.limiter, self.retry_after_s = app, factory, limiter, retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run, replay or refuse the request according to its key."""
        key = dict(scope.get("headers", [])).get(HEADER) if scope["type"] == "http" else None
        if key is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        key_text = key.decode("latin-1")
        if not KEY_PATTERN.match(key_text):
            await envelope(422, "invalid_idempotency_key", "Idempotency-Key must be 1-255 visible ASCII characters",
                           "Idempotency-Key")(scope, receive, send)
            return
        writer = await self._db(_writer, bearer_token(
            dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")))
        if isinstance(writer, Exception):
            await self._unavailable(writer)(scope, receive, send)
            return
        if writer is None:
            await self.app(scope, receive, send)
            return
        tenant_id, key_id = writer
        with tempfile.SpooledTemporaryFile(max_size=MAX_STORED_BODY) as body:
            fingerprint = await self._spool(scope, receive, body)
            if fingerprint is None:  # the client went away (or a size cap outside cut the body off)
                return
            claim = await self._db(keys.begin, tenant_id, key_text, fingerprint)
            if isinstance(claim, Exception):
                await self._unavailable(claim)(scope, receive, send)
            elif claim.outcome == "new":  # the route's authentication counts it against the rate limit
                await self._run((tenant_id, key_text), scope, body, receive, send)
            else:
                try:
                    await run_in_threadpool(self.limiter.hit, key_id)
                except RateLimited as exc:
                    await envelope(429, exc.code, exc.message, retry_after_s=exc.retry_after_s,
                                   extra=exc.extra)(scope, receive, send)
                    return
                await self._refuse(claim, scope, receive, send)

    def _unavailable(self, exc: Exception):
        """The 503 for a failed bookkeeping step: ``overloaded`` for a pool timeout, else ``database_unavailable``."""
        return overloaded() if is_pool_timeout(exc) else database_unavailable(self.retry_after_s)

    async def _db(self, fn, *args):
        def call():
            with self.factory() as session:
                return fn(session, *args)
        try:
            return await run_in_threadpool(call)
        except Exception as exc:
            if is_transient(exc):
                logger.warning("idempotency store unavailable (%s): %s", fn.__name__, exc)
                return exc
            raise

    async def _spool(self, scope: Scope, receive: Receive, body) -> str | None:
        fingerprint = Fingerprint(scope)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            fingerprint.feed(chunk)
            body.write(chunk)
            if not message.get("more_body", False):
                body.seek(0)
                return fingerprint.hexdigest()

    async def _refuse(self, claim: keys.Claim, scope: Scope, receive: Receive, send: Send) -> None:
        record = claim.record
        if claim.outcome == "replay":
            headers = dict(record.response_headers or {}, **{"Idempotent-Replayed": "true"})
            await send({"type": "http.response.start", "status": record.response_status,
                        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]})
            await send({"type": "http.response.body", "body": record.response_body or b""})
        elif claim.outcome == "mismatch":
            await envelope(409, "idempotency_key_reused", "this Idempotency-Key was used with another request "
                           "body or route; use a new key for a new request", "Idempotency-Key")(scope, receive, send)
        else:
            await envelope(409, "idempotency_key_in_use", "a request with this Idempotency-Key is still running; "
                           "retry later", "Idempotency-Key", retry_after_s=self.retry_after_s)(scope, receive, send)

    async def _run(self, key: tuple[str, str], scope: Scope, body, receive: Receive, send: Send) -> None:
        answer = {"status": 500, "headers": {}, "body": bytearray(), "fed": False}
        total = _size(body)

        async def replay_receive() -> Message:
            if answer["fed"]:
                return await receive()  # after the body: wait for the client's disconnect as usual
            chunk = body.read(1 << 16)
            answer["fed"] = body.tell() >= total
            return {"type": "http.request", "body": chunk, "more_body": not answer["fed"]}

        async def capture_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = {k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])
                                     if k.lower() in STORED_HEADERS}
            elif message["type"] == "http.response.body" and len(answer["body"]) <= MAX_STORED_BODY:
                answer["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, replay_receive, capture_send)
        except BaseException:
            await self._db(keys.abandon, *key)
            raise
        if answer["status"] >= 500 or answer["status"] == 429 or len(answer["body"]) > MAX_STORED_BODY:
            await self._db(keys.abandon, *key)
        else:
            await self._db(keys.complete, *key, answer["status"], answer["headers"], bytes(answer["body"]))


def _writer(session: Session, token: str | None) -> tuple[str, str] | None:
    """``(tenant id, key id)`` of an active key that may write, or None (then the route refuses the request)."""
    found = api_keys.find_key(session, token) if token else None
    if found is None or not ({"write", "admin"} & set(found[0].scopes)):
        return None
    return found[1].id, found[0].id


def _size(spooled) -> int:
    here = spooled.tell()
    spooled.seek(0, 2)
    end = spooled.tell()
    spooled.seek(here)
    return end
