"""Who is calling: the API key from ``Authorization: Bearer <key>`` (or, for GET requests, the
dashboard's HttpOnly cookie), checked against its hash, its scope for the request (GET/HEAD need
``read``, every other method ``write``; ``admin`` includes both) and its rate limit.

The dashboard's writes (review decisions, publishing a version, retraining: ``COOKIE_WRITES``, nothing
else) may also be authorised by the cookie, but only with a CSRF token (``csrf_token``) in the
``X-CSRF-Token`` header and from this origin. Why this design rather than handing the key to the
page's JavaScript (a Bearer header from ``sessionStorage``): the key stays in the HttpOnly cookie,
out of reach of any script, as before. The token is ``HMAC-SHA256(key=<the API key>,
"clear-dashboard-csrf-v1")``: the server prints it into the job page it renders for the cookie's
holder, it reveals nothing of the key, needs no server-side state or extra secret, and dies with the
key (revoked key, new sign-in with another key). A page on another site cannot compute it or read it
(the same-origin policy keeps our pages' content from it), cannot send the custom header without a
CORS preflight this service never grants, and the ``SameSite=Strict`` cookie does not even travel
with its requests; ``Sec-Fetch-Site``/``Origin``, where the browser sends them, must say same-origin
too (defence in depth). A cookie without the token still authorises reads only.

Every route of the API depends on ``authenticate`` except the health checks, the docs and the
dashboard's login page; routes read the caller's tenant from the ``Principal`` it returns.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import urlsplit
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.api.deps import SessionDep
from app.errors import Forbidden, Unauthorized
from app.models import ApiKey, Tenant
from app.services import api_keys
from app.services.quotas import Quotas, quotas_for
from app.settings import Settings

COOKIE = "clear_api_key"
READ_METHODS = ("GET", "HEAD", "OPTIONS")
CSRF_HEADER = "x-csrf-token"
CSRF_MESSAGE = b"clear-dashboard-csrf-v1"
# The only writes the dashboard's cookie may authorise (with the CSRF token): its review buttons.
COOKIE_WRITES = (("POST", re.compile(r"/v1/jobs/[^/]+/noise-report/decisions")),
                 ("POST", re.compile(r"/v1/datasets/[^/]+/versions")),
                 ("POST", re.compile(r"/v1/jobs")))
bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                    description="An API key made by `python -m app.cli create-key`, sent as "
                                "`Authorization: Bearer <key>`.")


@dataclass(frozen=True)
class Principal:
    """The caller: its tenant, the key's id and visible prefix, its scopes and the tenant's quotas."""

    tenant_id: str
    key_id: str
    prefix: str
    scopes: tuple[str, ...]
    quotas: Quotas

    def allows(self, scope: str) -> bool:
        """Whether the key holds ``scope`` (``admin`` holds them all)."""
        return scope in self.scopes or "admin" in self.scopes


def bearer_token(authorization: str | None) -> str | None:
    """The key in an ``Authorization: Bearer <key>`` header value, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


# the key's row and its tenant's quota columns, nothing else: the one statement of every authenticated request
PRINCIPAL_QUERY = (select(ApiKey.id.label("key_id"), ApiKey.prefix, ApiKey.scopes, Tenant.id.label("tenant_id"),
                          Tenant.max_concurrent_jobs, Tenant.max_stored_rows, Tenant.max_upload_bytes,
                          Tenant.max_jobs_per_hour)
                   .join(Tenant, Tenant.id == ApiKey.tenant_id)
                   .where(ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None)))


def lookup(session: Session, key: str, settings: Settings) -> Principal | None:
    """The principal of the active (not revoked) key ``key``, or None: the same rule as
    ``app.services.api_keys.find_key``, in one Core statement on the session's connection (reads only)."""
    if not api_keys.KEY_PATTERN.match(key):
        return None
    row = session.connection().execute(PRINCIPAL_QUERY, {"key_hash": api_keys.hash_key(key)}).first()
    if row is None:
        return None
    return Principal(row.tenant_id, row.key_id, row.prefix, tuple(row.scopes), quotas_for(row, settings))


def resolve(request: Request, key: str, session: Session | None = None) -> Principal:
    """The principal of ``key``, looked up in ``session`` (the request's, when it has one; else a short session
    of its own). Reads only: nothing is written for a lookup.

    Raises:
        Unauthorized: an unknown or revoked key.
    """
    settings = request.app.state.settings
    if session is None:
        with request.app.state.session_factory() as own:
            found = lookup(own, key, settings)
    else:
        found = lookup(session, key, settings)
    if found is None:
        raise Unauthorized("the API key is unknown or revoked: check it, or ask an administrator for a new one "
                           "(python -m app.cli create-key)", code="invalid_api_key")
    return found


def required_scope(request: Request) -> str:
    """``read`` for GET/HEAD/OPTIONS, ``write`` for the rest."""
    return "read" if request.method in READ_METHODS else "write"


def csrf_token(key: str) -> str:
    """The dashboard's CSRF token for the API key held in its cookie: ``HMAC-SHA256(key, CSRF_MESSAGE)`` in
    hex (see the module's docstring). The job page embeds it; its POSTs send it as ``X-CSRF-Token``."""
    return hmac.new(key.encode(), CSRF_MESSAGE, hashlib.sha256).hexdigest()


def same_origin(request: Request) -> bool:
    """False if the browser says the request comes from another origin (``Sec-Fetch-Site`` other than
    ``same-origin``, else an ``Origin`` whose host is not this one); True when it says neither."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site == "same-origin"
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc.lower() == (request.headers.get("host") or "").lower()


def _cookie_may_write(request: Request, cookie: str) -> bool:
    """Whether the cookie authorises this write: one of ``COOKIE_WRITES``, with the key's CSRF token, same origin.

    Raises:
        Unauthorized: a CSRF token was sent but is wrong, or the request comes from another origin
            (code ``csrf_failed``).
    """
    token = request.headers.get(CSRF_HEADER)
    if token is None or not any(method == request.method and pattern.fullmatch(request.url.path)
                                for method, pattern in COOKIE_WRITES):
        return False
    if not hmac.compare_digest(token.encode(), csrf_token(cookie).encode()) or not same_origin(request):
        raise Unauthorized("the dashboard's sign-in authorises this change only from this service's own page, with "
                           "the page's X-CSRF-Token: reload the job page (after signing in again if you changed "
                           "key), or send 'Authorization: Bearer <key>'", code="csrf_failed")
    return True


def _key_of(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is not None and credentials.credentials:
        return credentials.credentials
    cookie = request.cookies.get(COOKIE)
    # a cookie alone never writes: only the dashboard's own review POSTs, with its CSRF token (module docstring)
    if cookie and (request.method in READ_METHODS or _cookie_may_write(request, cookie)):
        return cookie
    if cookie:  # signed in to the dashboard, but this write is not one of its own (or came without the token)
        raise Unauthorized("the dashboard's sign-in authorises only its own review buttons, which send the page's "
                           "X-CSRF-Token header: use the job page's buttons, or send 'Authorization: Bearer <key>' "
                           "for this request", code="missing_api_key")
    raise Unauthorized("this route needs an API key: send 'Authorization: Bearer <key>' (the embedded service "
                       "writes its key to <data dir>/api-key; python -m app.cli create-key makes others)",
                       code="missing_api_key")


def check(request: Request, principal: Principal, scope: str) -> Principal:
    """Enforce ``scope`` and the key's rate limit; returns ``principal``."""
    if not principal.allows(scope):
        raise Forbidden(f"this API key (prefix {principal.prefix}) has scopes {list(principal.scopes)}; this "
                        f"request needs '{scope}': use a key with that scope", scope=scope)
    request.app.state.rate_limiter.hit(principal.key_id)
    request.state.principal = principal
    return principal


def authenticate(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                 session: SessionDep) -> Principal:
    """The request's principal, with the scope its method needs; 401, 403 or 429 otherwise. The key is looked up
    in the request's own session (the one the route then uses); FastAPI runs this in its thread pool: the key
    lookup and the rate-limit storage are blocking calls. An upload checked before its body was read
    (``authenticate_before_body``) is not looked up or counted again."""
    early = getattr(request.state, "early_principal", None)
    if early is not None:
        return early
    return check(request, resolve(request, _key_of(request, credentials), session), required_scope(request))


def authenticate_admin(request: Request,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                       session: SessionDep) -> Principal:
    """Like ``authenticate`` but the key needs the ``admin`` scope (cross-tenant views such as /metrics)."""
    return check(request, resolve(request, _key_of(request, credentials), session), "admin")


def header_credentials(request: Request) -> HTTPAuthorizationCredentials | None:
    """What ``bearer`` (FastAPI's ``HTTPBearer(auto_error=False)``) makes of the request's ``Authorization`` header,
    by the same rule, without a dependency: the scheme ``Bearer`` (any case) and a non-empty token, else None."""
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    if not (scheme and token) or scheme.lower() != "bearer":
        return None
    return HTTPAuthorizationCredentials(scheme=scheme, credentials=token)


def authenticate_in(request: Request, session: Session) -> Principal:
    """``authenticate`` called directly, in ``session``, for routes that do their whole work in one thread-pool call
    (``app.api.reads``); the same key sources, checks and errors (401, 403, 429)."""
    return check(request, resolve(request, _key_of(request, header_credentials(request)), session),
                 required_scope(request))


def authenticate_before_body(request: Request) -> Principal:
    """``authenticate`` for a request whose body is not read yet (a multipart upload, ``app.api.multipart``), in a
    short read session of its own; the principal is kept for the route's ``authenticate``. Blocking.

    Raises:
        Unauthorized, Forbidden, RateLimited: as ``authenticate`` (401, 403, 429).
    """
    principal = authenticate_alone(request)
    request.state.early_principal = principal
    return principal


def authenticate_alone(request: Request) -> Principal:
    """``authenticate_in`` in a short read session of its own (for a check made outside the route's session).
    Blocking; raises as ``authenticate``."""
    with request.app.state.read_session_factory() as session:
        return authenticate_in(request, session)


PrincipalDep = Annotated[Principal, Depends(authenticate)]
