"""``/docs`` works offline: the Swagger UI page references only assets this service serves (the
vendored swagger-ui-dist files), each answers 200, and ReDoc (CDN-only) is not served."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from app.main import create_app

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


def test_docs_reference_only_local_assets_and_they_are_served(settings):
    with TestClient(create_app(settings, enqueue=lambda _id: None)) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        assert "http://" not in page.text and "https://" not in page.text, "the page names an outside URL"
        assets = ASSET.findall(page.text)
        assert {a.rsplit("/", 1)[-1] for a in assets} == {"swagger-ui-bundle.js", "swagger-ui.css",
                                                        "favicon-32x32.png"}
        for url in assets:
            assert url.startswith("/") and not url.startswith("//"), url
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 500, url
        assert "SwaggerUIBundle" in client.get(next(a for a in assets if a.endswith(".js"))).text
        assert "'/openapi.json'" in page.text and client.get("/openapi.json").status_code == 200
        assert client.get("/docs/oauth2-redirect").status_code == 200
        assert client.get("/redoc").status_code == 404
