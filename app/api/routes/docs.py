"""``/docs``: Swagger UI over this API's OpenAPI document, its JavaScript, CSS and icon served from
the vendored swagger-ui-dist files under ``/ui/static/vendor/swagger-ui/`` (FastAPI's own page loads
them from a CDN, which leaves it blank offline). ReDoc is not served."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse

from app.api.routes.ui import STATIC_DIR, STATIC_URL

DOCS_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
SWAGGER_DIR = STATIC_DIR / "vendor" / "swagger-ui"
SWAGGER_URL = f"{STATIC_URL}/vendor/swagger-ui"

router = APIRouter(include_in_schema=False)


@router.get(DOCS_URL, response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    """The interactive API documentation, loading nothing from outside this service."""
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(openapi_url=root + request.app.openapi_url, title=f"{request.app.title} - API",
                               swagger_js_url=f"{root}{SWAGGER_URL}/swagger-ui-bundle.js",
                               swagger_css_url=f"{root}{SWAGGER_URL}/swagger-ui.css",
                               swagger_favicon_url=f"{root}{SWAGGER_URL}/favicon-32x32.png",
                               oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
                               swagger_ui_parameters={"validatorUrl": None})  # no call to swagger.io


@router.get(OAUTH2_REDIRECT_URL, response_class=HTMLResponse)
def swagger_ui_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page (inline script only)."""
    return get_swagger_ui_oauth2_redirect_html()
