"""Signing in to the dashboard: a form at ``/ui/login`` takes an API key and, if it is valid and may
read, stores it in an HttpOnly, SameSite=Strict cookie that GET requests of this site then carry
(the pages, the event stream, the downloads). A cookie alone never authorises a POST, so a forged
form on another site can change nothing; the job page's review buttons send, with it, the CSRF token
the page was rendered with (``app.api.auth.csrf_token``, explained there). ``/ui/logout`` removes the
cookie."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials

from app.api.auth import COOKIE, Principal, authenticate, bearer, resolve
from app.api.deps import SessionDep
from app.api.routes.ui import UI_URL, templates
from app.errors import Unauthorized

COOKIE_MAX_AGE_S = 7 * 24 * 3600
router = APIRouter(prefix=UI_URL, include_in_schema=False)


class LoginRequired(Exception):
    """A dashboard page was asked for without a valid key; the answer is a redirect to the login form."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def ui_principal(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                 session: SessionDep) -> Principal:
    """The caller of a dashboard page (cookie or bearer key, looked up in the request's session);
    ``LoginRequired`` if there is none."""
    try:
        return authenticate(request, credentials, session)
    except Unauthorized:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target) from None


UiPrincipal = Annotated[Principal, Depends(ui_principal)]


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path only (never another site)."""
    if target and target.startswith(UI_URL) and not target.startswith("//") and "\\" not in target:
        return target
    return UI_URL


def _form(request: Request, target: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"next": safe_next(target), "error": error},
                                      status_code=status)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: Annotated[str | None, Query()] = None) -> HTMLResponse:
    """The sign-in form."""
    return _form(request, next or UI_URL)


@router.post("/login")
def login(request: Request, key: Annotated[str, Form(max_length=200)],
          next: Annotated[str | None, Form()] = None) -> Response:
    """Check the key; store it in the cookie and go on to ``next``, or show the form again with the reason.

    A form posted from another site (its ``Origin`` is not this host, or ``Sec-Fetch-Site`` says
    cross-site) is refused with 403: otherwise a page elsewhere could sign a visitor in with the
    attacker's key (login CSRF) and show them the attacker's data as if it were theirs.
    """
    if _cross_site(request):
        return _form(request, next or UI_URL, "this form was sent from another site: open the sign-in page of this "
                     "service and sign in there", status=403)
    key = key.strip()
    try:
        principal = resolve(request, key)
    except Unauthorized as exc:
        return _form(request, next or UI_URL, exc.message, status=401)
    if not principal.allows("read"):
        return _form(request, next or UI_URL, f"the key {principal.prefix} has no 'read' scope: use a key that "
                     "may read", status=403)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(COOKIE, key, max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response


def _cross_site(request: Request) -> bool:
    """True if the browser says the request comes from another site (``Sec-Fetch-Site``, else ``Origin``)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site == "cross-site"
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin == "null"  # no Origin: not a browser's cross-site form; "null": a sandboxed or opaque one
    return urlsplit(origin).netloc.lower() != (request.headers.get("host") or "").lower()


@router.get("/logout")
def logout() -> RedirectResponse:
    """Forget the key (delete the cookie) and show the sign-in form."""
    response = RedirectResponse(f"{UI_URL}/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


async def _to_login(_request: Request, exc: LoginRequired) -> RedirectResponse:
    return RedirectResponse(f"{UI_URL}/login?next={quote(exc.next_url, safe='/')}", status_code=303)


def install(app: FastAPI) -> None:
    """Add the login routes and the redirect of signed-out dashboard requests."""
    app.include_router(router)
    app.add_exception_handler(LoginRequired, _to_login)
