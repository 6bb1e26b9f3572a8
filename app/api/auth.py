"""Who is calling: the API key from ``Authorization: Bearer <key>`` (or, for GET requests only, the
dashboard's HttpOnly cookie), checked against its hash, its scope for the request (GET/HEAD need
``read``, every other method ``write``; ``admin`` includes both) and its rate limit.

Every route of the API depends on ``authenticate`` except the health checks, the docs and the
dashboard's login page; routes read the caller's tenant from the ``Principal`` it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Forbidden, Unauthorized
from app.services import api_keys
from app.services.quotas import Quotas, quotas_for

COOKIE = "clear_api_key"
READ_METHODS = ("GET", "HEAD", "OPTIONS")
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


def resolve(request: Request, key: str) -> Principal:
    """The principal of ``key`` (a short session of its own: a streamed answer keeps no transaction open).

    Raises:
        Unauthorized: an unknown or revoked key.
    """
    with request.app.state.session_factory() as session:
        found = api_keys.find_key(session, key)
    if found is None:
        raise Unauthorized("the API key is unknown or revoked: check it, or ask an administrator for a new one "
                           "(python -m app.cli create-key)", code="invalid_api_key")
    record, tenant = found
    return Principal(tenant.id, record.id, record.prefix, tuple(record.scopes),
                     quotas_for(tenant, request.app.state.settings))


def required_scope(request: Request) -> str:
    """``read`` for GET/HEAD/OPTIONS, ``write`` for the rest."""
    return "read" if request.method in READ_METHODS else "write"


def _key_of(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is not None and credentials.credentials:
        return credentials.credentials
    cookie = request.cookies.get(COOKIE)
    if cookie and request.method in READ_METHODS:  # never for writes: a cookie alone must not change anything
        return cookie
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


def authenticate(request: Request,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """The request's principal, with the scope its method needs; 401, 403 or 429 otherwise (FastAPI runs
    this in its thread pool: the key lookup and the rate-limit storage are blocking calls)."""
    return check(request, resolve(request, _key_of(request, credentials)), required_scope(request))


def authenticate_admin(request: Request,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """Like ``authenticate`` but the key needs the ``admin`` scope (cross-tenant views such as /metrics)."""
    return check(request, resolve(request, _key_of(request, credentials)), "admin")


PrincipalDep = Annotated[Principal, Depends(authenticate)]
