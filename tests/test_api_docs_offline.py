"""The API's documentation page works with no network: Swagger UI comes from facetrail itself.

The real `facetrail serve` on loopback, Debian's Chromium driven by Playwright. Every request that is not to
the server is aborted and recorded, as on a site without internet; the page must still list the operations,
and must not even try to reach anything else.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from test_dashboard import SHOTS, WAIT_MS, chromium, facetrail_serve

OPERATIONS = ("/api/v1/search/gallery", "/api/v1/identities", "/api/v1/events")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with facetrail_serve("--data", tmp_path_factory.mktemp("docs") / "data") as url:
        yield url


def open_offline(browser: object, server: str, path: str) -> tuple[object, list[str]]:
    """``path`` in a fresh page where everything but ``server`` is cut off; also returns what was cut off."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    refused: list[str] = []

    def only_the_server(route: object) -> None:
        url = route.request.url  # type: ignore[attr-defined]
        if url.startswith(server + "/"):
            route.continue_()  # type: ignore[attr-defined]
        else:
            refused.append(url)
            route.abort("internetdisconnected")  # type: ignore[attr-defined]

    context.route("**/*", only_the_server)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(server + path)
    return page, refused


def test_swagger_ui_lists_the_operations_without_network(server: str) -> None:
    with chromium() as browser:
        page, refused = open_offline(browser, server, "/api/v1/docs")
        page.wait_for_selector(".opblock")  # type: ignore[attr-defined]
        listed = page.locator(".opblock-summary-path").all_inner_texts()  # type: ignore[attr-defined]
        for path in OPERATIONS:
            assert any(text.replace("\u200b", "") == path for text in listed), f"{path} not listed in {listed}"
        assert page.locator(".information-container .title").inner_text().startswith("facetrail")  # type: ignore[attr-defined]
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "api-docs-offline.png"))  # type: ignore[attr-defined]
        assert refused == [], f"the docs page reached outside the server: {refused}"


def test_the_docs_assets_are_served_by_facetrail(server: str) -> None:
    page = httpx.get(server + "/api/v1/docs", timeout=30)
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in page.text.replace("https://swagger.io", "")
    bundle = httpx.get(server + "/api/v1/docs-assets/swagger-ui-bundle.js", timeout=30)
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
