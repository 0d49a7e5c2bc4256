"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against `facetrail serve` on loopback.

The server and the pipeline are the real commands, run as separate processes on
one data folder, as people run them. Screenshots land in test-artifacts/dashboard/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api_kit import make_keys
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.vision.engine import EngineConfig, FaceEngine
from facetrail.vision.samples import sample_image
from pipeline_kit import enrol, head_and_shoulders, make_clip, walk_in
from services import free_port, wait_until

pytestmark = pytest.mark.models
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("FACETRAIL_TEST_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts"))
SHOTS = ARTIFACTS / "dashboard"
WAIT_MS = 120_000

if not Path(CHROMIUM).exists():
    pytest.skip("Chromium is not installed (Debian package chromium; .ci/run installs it)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")


def facetrail(*args: str | Path) -> list[str]:
    """The command line of the installed CLI."""
    return [sys.executable, "-m", "facetrail.cli.main", *map(str, args)]


@dataclass
class Site:
    url: str
    keys: dict[str, str]
    config: Path
    data: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("dashboard")
    data = folder / "data"
    engine = FaceEngine(EngineConfig())
    yao = head_and_shoulders(engine, sample_image("yaoming.jpg"))
    clip = make_clip(folder / "door.mp4", [walk_in(yao, 0.5, 3.0, 0.4)], 4.0)
    enrol(data, engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")
    gallery = Gallery(GallerySettings(data), engine=engine)
    keys = make_keys(gallery)
    gallery.close()
    config = folder / "config.yml"
    config.write_text(f"purpose: dashboard test\ndata_dir: {data}\ncameras:\n  door:\n    inputs:\n"
                      f"      - path: {clip}\n    detect:\n      fps: 5\n")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with facetrail_serve("--data", data) as url:
        yield Site(url, keys, config, data)


@contextmanager
def facetrail_serve(*args: str | Path) -> Iterator[str]:
    """The real `facetrail serve ARGS` on a free loopback port until the block ends; yields its URL."""
    port = free_port()
    server = subprocess.Popen(facetrail("serve", *args, "--port", str(port)), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200
        except httpx.TransportError:
            assert server.poll() is None, f"facetrail serve exited: {server.stdout.read() if server.stdout else ''}"
            return False

    try:
        wait_until(up, "facetrail serve", timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextmanager
def chromium() -> Iterator[object]:
    """Debian's Chromium driven by Playwright, headless."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[object]:
    with chromium() as launched:
        yield launched


def logged_in(browser: object, site: Site, role: str) -> object:
    """A fresh browser page logged in through the login form with the key of ``role``."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()  # type: ignore[attr-defined]
    page.set_default_timeout(WAIT_MS)
    page.goto(site.url + "/")
    assert "/login" in page.url, "an anonymous visit must land on the login page"
    page.fill("input[name=key]", site.keys[role])
    page.click("button[type=submit]")
    page.wait_for_selector("header nav")
    return page


def shot(page: object, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_an_operator_sees_a_live_alert_confirms_it_and_opens_the_timeline(browser: object, site: Site) -> None:
    page: object = logged_in(browser, site, "operator")
    page.wait_for_selector("#live-status[data-state=open]")  # type: ignore[attr-defined]
    assert page.locator("article.event").count() == 0  # type: ignore[attr-defined]
    run = subprocess.run(facetrail("run", site.config), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    card = page.locator("article.event").first  # type: ignore[attr-defined]
    card.wait_for()
    assert "Yao Ming" in card.inner_text() and "vip" in card.inner_text()
    assert card.locator("img").count() == 3  # the evidence snapshot, the face crop and the enrolment photo
    assert card.locator("img").first.evaluate("img => img.complete && img.naturalWidth > 0")
    shot(page, "1-live-alert")

    card.locator("input[name=note]").fill("same face as the enrolment photo; checked with the door guard")
    card.locator("button[value=confirm]").click()
    page.wait_for_selector(".notice")  # type: ignore[attr-defined]
    confirmed = page.locator("article.event").first  # type: ignore[attr-defined]
    assert "confirmed" in confirmed.locator(".state").inner_text()
    assert "checked with the door guard" in confirmed.inner_text()
    shot(page, "2-confirmed")

    confirmed.locator("h2 a").click()
    page.fill("form.purpose input[name=purpose]", "follow-up of the confirmed alert")  # type: ignore[attr-defined]
    page.click("form.purpose button")  # type: ignore[attr-defined]
    rows = page.locator("table.timeline tbody tr")  # type: ignore[attr-defined]
    rows.first.wait_for()
    camera = page.locator("table.timeline").first.locator("xpath=preceding-sibling::h3[1]")  # type: ignore[attr-defined]
    assert rows.count() >= 1 and camera.inner_text() == "door"
    assert page.locator("svg.chart rect.bar").count() == rows.count()  # type: ignore[attr-defined]
    shot(page, "3-timeline")

    page.goto(site.url + "/cameras")  # type: ignore[attr-defined]
    camera = page.locator("#camera-door")  # type: ignore[attr-defined]
    assert "finished" in camera.locator(".badge").inner_text()
    assert camera.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
    shot(page, "4-cameras")


def test_search_by_photo_needs_a_purpose_and_finds_the_person(browser: object, site: Site) -> None:
    page: object = logged_in(browser, site, "operator")
    page.goto(site.url + "/search")  # type: ignore[attr-defined]
    assert page.locator("input[value=sightings]").count() == 0, "unknown sightings are for admins"  # type: ignore[attr-defined]
    page.set_input_files("input[name=image]", str(sample_image("yaoming.jpg")))  # type: ignore[attr-defined]
    page.fill("input[name=purpose]", "identify the visitor at the front desk")  # type: ignore[attr-defined]
    page.click("form.search button[type=submit]")  # type: ignore[attr-defined]
    results = page.locator("#results")  # type: ignore[attr-defined]
    results.wait_for()
    assert results.locator("h2").inner_text() == "A match"
    best = results.locator("li").first
    assert "Yao Ming" in best.inner_text() and "match" in (best.get_attribute("class") or "")
    assert "strangers score this high" in best.locator(".score").inner_text()  # the score with its meaning
    shot(page, "5-search")


def test_a_viewer_cannot_open_the_audit_log_and_an_admin_sees_every_search(browser: object, site: Site) -> None:
    viewer: object = logged_in(browser, site, "viewer")
    assert "Audit log" not in viewer.locator("header nav").inner_text()  # type: ignore[attr-defined]
    answer = viewer.goto(site.url + "/audit")  # type: ignore[attr-defined]
    assert answer.status == 403
    assert "needs the admin role" in viewer.locator(".problem").inner_text()  # type: ignore[attr-defined]
    shot(viewer, "6-viewer-refused")
    admin: object = logged_in(browser, site, "admin")
    admin.goto(site.url + "/audit")  # type: ignore[attr-defined]
    assert "Hash chain intact" in admin.locator("#chain").inner_text()  # type: ignore[attr-defined]
    table = admin.locator("table.audit").inner_text()  # type: ignore[attr-defined]
    assert re.search(r"viewer-key\s+session\.login", table), table
    shot(admin, "7-audit")


def test_a_wrong_key_is_refused_on_the_login_page(browser: object, site: Site) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(site.url + "/login")
    page.fill("input[name=key]", "ft_000000000000_not-a-key")
    page.click("button[type=submit]")
    assert "unknown or revoked" in page.locator(".problem").inner_text()
    assert "/login" in page.url


def test_an_admin_enrols_from_the_dashboard_and_puts_the_person_on_a_watchlist(
        browser: object, site: Site, data_dir: Path, tmp_path: Path) -> None:
    photo = data_dir / "faces" / "biden" / "biden.jpg"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photo.read_bytes()[:3000])
    page: object = logged_in(browser, site, "admin")
    page.goto(site.url + "/enrol")  # type: ignore[attr-defined]
    page.fill("input[name=name]", "Joe Biden")  # type: ignore[attr-defined]
    page.set_input_files("input[name=photos][accept]", [str(photo), str(broken)])  # type: ignore[attr-defined]
    page.click("main form button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_selector("#results, .problem")  # type: ignore[attr-defined]
    shot(page, "8-enrolled")
    results = page.locator("#results")  # type: ignore[attr-defined]
    assert results.count() == 1, page.locator(".problem").inner_text()  # type: ignore[attr-defined]
    assert "1 of 2 photos enrolled" in results.locator("h2").inner_text()
    assert "unreadable" in results.locator("tr.refused").inner_text()

    page.goto(site.url + "/watchlists")  # type: ignore[attr-defined]
    page.fill("form[action='/watchlists'] input[name=name]", "front desk")  # type: ignore[attr-defined]
    page.fill("form[action='/watchlists'] input[name=purpose]", "visitors the desk must greet")  # type: ignore[attr-defined]
    page.click("form[action='/watchlists'] button")  # type: ignore[attr-defined]
    page.wait_for_selector(".notice")  # type: ignore[attr-defined]
    page.select_option("#watchlist-choice", "front desk")  # type: ignore[attr-defined]
    page.select_option("#add-member select[name=identity_id]", label="Joe Biden")  # type: ignore[attr-defined]
    page.click("#add-member button")  # type: ignore[attr-defined]
    page.wait_for_selector(".notice")  # type: ignore[attr-defined]
    row = page.locator("table.watchlists tr", has_text="front desk")  # type: ignore[attr-defined]
    assert "Joe Biden" in row.inner_text() and "visitors the desk must greet" in row.inner_text()
    shot(page, "9-watchlists")

    page.goto(site.url + "/retention")  # type: ignore[attr-defined]
    assert page.locator("#stored").count() == 1  # type: ignore[attr-defined]
    page.click("form[action='/retention/purge'] button")  # type: ignore[attr-defined]
    assert "Purged" in page.locator(".notice").inner_text()  # type: ignore[attr-defined]
    shot(page, "10-retention")
