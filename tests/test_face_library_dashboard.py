"""The face library on the dashboard, in Debian's Chromium driven by Playwright: rename, then merge two identities.

The app (API and dashboard) is served by a real uvicorn on loopback over a real SQLite file, with people enrolled
from real photos of ../shared/data/faces through the API.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from api_kit import Server, make_keys, serving
from facetrail.api.app import ApiSettings, create_app
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.store.models import AuditEntry
from facetrail.vision.engine import FaceEngine
from facetrail.web.app import install_dashboard
from library_kit import enrol, seen

pytestmark = pytest.mark.models
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("FACETRAIL_TEST_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts")) / "library"
WAIT_MS = 60_000

if not Path(CHROMIUM).exists():
    pytest.skip("Chromium is not installed (Debian package chromium; .ci/run installs it)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, engine: FaceEngine) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("library-dashboard")
    gallery = Gallery(GallerySettings(data), engine=engine)
    keys = make_keys(gallery)
    app = create_app(ApiSettings(data), gallery=gallery)
    install_dashboard(app)
    with serving(app) as url:
        yield Server(url, gallery, keys)
    gallery.db.dispose()


def test_an_admin_renames_and_merges_on_the_person_page(server: Server, data_dir: Path) -> None:
    faces = data_dir / "faces"
    with server.client("admin") as admin:
        biden = enrol(admin, "Jo Biden", faces / "biden" / "biden.jpg")
        twin = enrol(admin, "Joseph R. Biden", faces / "biden" / "biden2.jpg", duplicate=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(server.url + "/login")
        page.fill("input[name=key]", server.keys["admin"])
        page.click("button[type=submit]")
        page.wait_for_selector("header nav")
        page.goto(f"{server.url}/people/{biden}")
        form = page.locator("form#rename")
        form.locator("input[name=display_name]").fill("Joe Biden")
        form.locator("input[name=purpose]").fill("spelling corrected")
        form.locator("button[type=submit]").click()
        page.wait_for_selector(".notice")
        assert page.locator("h1").inner_text() == "Joe Biden"
        merge = page.locator("form#merge")
        merge.locator("select[name=other_id]").select_option(str(twin))
        merge.locator("input[name=purpose]").fill("the same person enrolled twice")
        merge.locator("input[name=confirm]").check()
        merge.locator("button[type=submit]").click()
        notice = page.locator(".notice")
        notice.wait_for()
        assert f"Merged identity {twin}" in notice.inner_text()
        assert page.locator("table.templates tbody tr").count() == 2
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "person-merged.png"), full_page=True)
        page.goto(server.url + "/people")
        names = page.locator("ul.people .name").all_inner_texts()
        assert names == ["Joe Biden"]
        browser.close()
    with server.gallery.db.session() as session:
        actions = set(session.scalars(select(AuditEntry.action).where(AuditEntry.actor == "admin-key")))
    assert {"identity.rename", "identity.merge"} <= actions


def test_an_operator_says_not_them_on_an_event_card(server: Server, data_dir: Path) -> None:
    faces = data_dir / "faces"
    with server.client("operator") as operator:
        kit = enrol(operator, "Kit Harington", faces / "kit_harington" / "john1.jpeg")
    event = seen(server, faces / "kit_harington" / "test1.jpg", identity_id=kit, score=0.45)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(server.url + "/login")
        page.fill("input[name=key]", server.keys["operator"])
        page.click("button[type=submit]")
        page.wait_for_selector("header nav")
        card = page.locator(f"#event-{event}")
        card.wait_for()
        assert card.locator(".score").inner_text() == "0.45 - fewer than 1 in 1,000,000 strangers score this high"
        card.locator("details.teach summary").click()
        form = card.locator("form.teach-face")
        assert form.locator("input[name=person]").input_value() == "Kit Harington"
        form.locator("input[name=purpose]").fill("not him: checked the badge")
        form.locator("input[name=confirm]").check()
        form.locator("button[value=not]").click()
        notice = page.locator(".notice")
        notice.wait_for()
        assert f"this face is not Kit Harington (person {kit})" in notice.inner_text()
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "event-not-them.png"), full_page=True)
        browser.close()
    with server.client("operator") as operator, (faces / "kit_harington" / "test1.jpg").open("rb") as stream:
        found = operator.post("/search/gallery", data={"purpose": "check"},
                              files={"image": ("test1.jpg", stream, "image/jpeg")}).json()
    assert all(m["identity_id"] != kit for m in found["matches"])
