"""The dashboard's door view in a real browser: Debian's Chromium, driven by Playwright, against the real
`facetrail serve --config CONFIG` (server and pipeline in one process) on loopback.

A resident is enrolled from a real photo. Her consent, a granted and a denied decision (the grant with a real best
shot) and a forced door are written into the served data folder's database first, as the pipeline and the door
controller write them. The camera's clip is an empty doorway, so the pipeline adds nothing. Screenshots land in
test-artifacts/dashboard/.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import cv2
import pytest
from sqlalchemy import func, select

from api_kit import make_keys
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.pipeline.analyzer import AnalysedFrame
from facetrail.store.db import Database, sqlite_url
from facetrail.store.doors import record_consent, record_door_state
from facetrail.store.models import DoorDecisionRecord, FaceTemplate, Identity, utcnow
from facetrail.vision.engine import EngineConfig, FaceEngine
from facetrail.vision.image import BGRImage, load_image
from pipeline_kit import enrol, make_clip
from test_dashboard import chromium, facetrail_serve, logged_in, shot

pytestmark = pytest.mark.models
NAME = "Ana Resident"
RULE = "camera entrance; allow residents; 3 shots in a row; threshold calibrated; tailgating event; " \
       "hours 06:00-23:00 Europe/Paris; second factor within 20 s"
SPOOF = "liveness failed: the face changed shape in 12 frames but always as one flat plane (residual 0.002 <= " \
        "0.01 eye distances): a photo or a screen moved in front of the camera"


@dataclass
class DoorSite:
    url: str
    keys: dict[str, str]
    data: Path
    person: int
    consent: int  # recorded before the test, without a second factor
    grant: int
    deny: int
    shot_width: int  # of the grant's best shot

    def templates(self) -> int:
        """The person's face templates in the served database."""
        db = Database(sqlite_url(self.data))
        try:
            with db.session() as session:
                return session.scalar(select(func.count()).select_from(FaceTemplate)
                                      .where(FaceTemplate.identity_id == self.person)) or 0
        finally:
            db.dispose()


def door_config(data: Path, clip: Path) -> str:
    """One camera watching the front door; the door asks for a PIN and raises an event on tailgating."""
    return (f"purpose: door dashboard test\ndata_dir: {data}\ncameras:\n  entrance:\n    inputs:\n"
            f"      - path: {clip}\n    detect:\n      fps: 5\nmqtt:\n  enabled: false\n"
            "doors:\n  front:\n    camera: entrance\n    allow: [residents]\n    hours: ['06:00-23:00']\n"
            "    timezone: Europe/Paris\n    second_factor: true\n    tailgating: event\n")


def best_shot(engine: FaceEngine, photo: Path) -> BGRImage:
    """The face thumbnail the pipeline keeps as a decision's best shot, cut from ``photo`` the pipeline's way."""
    image = load_image(photo)
    faces = engine.analyze(image)
    index = faces.primary()
    assert index is not None, f"no face in {photo}"
    return AnalysedFrame(image, faces.detections, False, 1.0).thumbnail(index)


def door_records(gallery: Gallery, person: int, best_shot: bytes) -> tuple[int, int, int]:
    """Her consent, a grant with its best shot, a later liveness deny, and the door reported forced."""
    with gallery.db.session() as session:
        consent = record_consent(session, person, "front", method="signed form 17", actor="tester").id
        grant = DoorDecisionRecord(
            door="front", camera="entrance", track_uid="t-1", outcome="grant",
            reason="recognised, live, allowed and second factor given", rule=RULE, identity_id=person, score=0.74,
            matched_shots=3, liveness="live", liveness_reason="blinked 1 time(s)", blinks=1, depth_residual=0.041,
            others_present=0, snapshot_jpeg=best_shot, decided_at=utcnow() - timedelta(minutes=5),
            command="delivered", command_attempts=1)
        deny = DoorDecisionRecord(
            door="front", camera="entrance", track_uid="t-2", outcome="deny", reason=SPOOF, rule=RULE,
            identity_id=person, score=0.69, matched_shots=3, liveness="spoof", liveness_reason=SPOOF[17:],
            blinks=0, depth_residual=0.002, tailgating=False, others_present=1,
            decided_at=utcnow() - timedelta(minutes=1))
        session.add_all([grant, deny])
        session.flush()
        record_door_state(session, "front", "forced", source="http")
        return consent, grant.id, deny.id


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[DoorSite]:
    photo = data_dir / "conditions" / "eyes" / "open_eyes.png"
    if not photo.is_file():
        pytest.skip(f"test photo {photo} is absent")
    folder = tmp_path_factory.mktemp("dashboard-doors")
    data = folder / "data"
    engine = FaceEngine(EngineConfig())
    enrol(data, engine, NAME, photo, watchlist="residents")
    crop = best_shot(engine, photo)
    ok, jpeg = cv2.imencode(".jpg", crop)
    assert ok
    gallery = Gallery(GallerySettings(data), engine=engine)
    keys = make_keys(gallery)
    with gallery.db.session() as session:
        person = session.scalar(select(Identity.id).where(Identity.display_name == NAME))
    assert person is not None
    consent, grant, deny = door_records(gallery, person, jpeg.tobytes())
    gallery.close()
    config = folder / "config.yml"
    config.write_text(door_config(data, make_clip(folder / "entrance.mp4", [], 2.0)))
    with facetrail_serve("--config", config) as url:
        yield DoorSite(url, keys, data, person, consent, grant, deny, int(crop.shape[1]))


@pytest.fixture(scope="module")
def browser(site: DoorSite) -> Iterator[object]:
    with chromium() as launched:
        yield launched


def test_a_viewer_sees_the_forced_door_and_the_decisions_with_their_evidence(browser: object, site: DoorSite) -> None:
    page: object = logged_in(browser, site, "viewer")  # type: ignore[arg-type]
    page.click("header nav a[href='/doors']")  # type: ignore[attr-defined]
    door = page.locator("#door-front")  # type: ignore[attr-defined]
    assert door.locator(".badge").inner_text() == "forced"
    assert "Forced open" in door.locator(".alarm").inner_text()
    facts = door.locator("dl").inner_text()
    for fact in ("entrance", "residents", "06:00-23:00 Europe/Paris", "PIN or card", "deny and raise an event"):
        assert fact in facts, facts

    decisions = page.locator("article.decision")  # type: ignore[attr-defined]
    assert decisions.count() == 2
    deny, grant = decisions.nth(0), decisions.nth(1)  # newest first
    assert deny.get_attribute("id") == f"decision-{site.deny}" and grant.get_attribute("id") == f"decision-{site.grant}"
    assert deny.locator(".badge").inner_text() == "denied" and "outcome-deny" in (deny.get_attribute("class") or "")
    assert deny.locator(".reason").inner_text() == SPOOF
    assert "spoof" in deny.locator(".liveness").inner_text() and "0 blinks" in deny.locator(".liveness").inner_text()
    assert "depth residual 0.002" in deny.locator(".liveness").inner_text()
    assert "1 other present" in deny.locator(".others").inner_text()
    assert deny.locator(".command").inner_text() == "none sent"
    assert deny.locator(".missing").count() == 1, "the deny kept no best shot"

    assert grant.locator(".badge").inner_text() == "granted"
    assert grant.locator(".reason").inner_text() == "recognised, live, allowed and second factor given"
    assert grant.locator("h2 a").inner_text() == NAME
    assert grant.locator(".score").inner_text().startswith("0.74")
    assert "live: blinked 1 time(s)" in grant.locator(".liveness").inner_text()
    assert grant.locator(".rule").inner_text() == RULE
    assert grant.locator(".command").inner_text() == "delivered (1 attempt)"
    snapshot = grant.locator("img")
    snapshot.scroll_into_view_if_needed()
    assert snapshot.evaluate("img => img.decode().then(() => img.naturalWidth)") == site.shot_width
    shot(page, "11-doors")

    page.click("nav[aria-label=outcome] >> text=denied")  # type: ignore[attr-defined]
    assert "outcome=deny" in page.url  # type: ignore[attr-defined]
    assert [decisions.nth(i).get_attribute("id") for i in range(decisions.count())] == [f"decision-{site.deny}"]
    page.goto(site.url + "/doors?door=back")  # type: ignore[attr-defined]
    assert decisions.count() == 0 and "match these filters" in page.locator("#no-decisions").inner_text()  # type: ignore[attr-defined]
    answer = page.goto(site.url + "/doors?cursor=not-ours")  # type: ignore[attr-defined]
    assert answer.status == 400 and "cursor is not valid" in page.locator(".problem").inner_text()  # type: ignore[attr-defined]


def test_a_viewer_sees_no_consents_and_cannot_record_one(browser: object, site: DoorSite) -> None:
    page: object = logged_in(browser, site, "viewer")  # type: ignore[arg-type]
    page.goto(f"{site.url}/people/{site.person}")  # type: ignore[attr-defined]
    assert page.locator("h1").inner_text() == NAME  # type: ignore[attr-defined]
    assert page.locator("#consents").count() == 0 and page.locator("form.withdraw").count() == 0  # type: ignore[attr-defined]
    answer = page.request.post(f"{site.url}/people/{site.person}/consents",  # type: ignore[attr-defined]
                               form={"door": "*", "method": "by the viewer"})
    assert answer.status == 403 and "needs the operator role" in answer.text()


def test_an_operator_records_a_consent_with_a_pin_then_withdrawing_the_last_deletes_the_templates(
        browser: object, site: DoorSite) -> None:
    page: object = logged_in(browser, site, "operator")  # type: ignore[arg-type]
    page.goto(f"{site.url}/people/{site.person}")  # type: ignore[attr-defined]
    rows = page.locator("#consents tbody tr")  # type: ignore[attr-defined]
    assert rows.count() == 1
    assert "signed form 17" in rows.first.inner_text() and rows.first.locator(".factor").inner_text() == "no"
    form = page.locator("#record-consent")  # type: ignore[attr-defined]

    form.locator("input[name=door]").fill("back")
    form.locator("input[name=method]").fill("signed form 18")
    form.locator("button").click()
    assert "no door 'back' in the configuration" in page.locator(".problem").inner_text()  # type: ignore[attr-defined]
    assert rows.count() == 1

    form.locator("input[name=door]").fill("front")
    form.locator("input[name=method]").fill("signed form 18, PIN chosen by the resident")
    form.locator("input[name=factor]").fill("4711")
    form.locator("button").click()
    assert "recorded with a second factor" in page.locator(".notice").inner_text()  # type: ignore[attr-defined]
    assert rows.count() == 2 and rows.nth(1).locator(".factor").inner_text() == "yes"
    shot(page, "12-consents")

    first = page.locator(f"#consent-{site.consent}")  # type: ignore[attr-defined]
    assert "the face templates stay while the 1 other consent remains in force" in first.locator("label").inner_text()
    first.locator("input[name=confirm]").check()
    first.locator("button").click()
    assert "still in force, so the face templates stay" in page.locator(".notice").inner_text()  # type: ignore[attr-defined]
    assert site.templates() == 1, "another consent is in force: the templates stay"
    assert "by operator-key" in first.locator(".withdrawn-at").inner_text()

    last = page.locator("#consents tr.in-force")  # type: ignore[attr-defined]
    assert last.count() == 1
    assert f"this deletes {NAME}'s face templates now" in last.locator("label").inner_text()
    last.locator("input[name=confirm]").check()
    last.locator("button").click()
    assert "1 face template deleted" in page.locator(".notice").inner_text()  # type: ignore[attr-defined]
    assert site.templates() == 0
    assert page.locator("#consents tr.withdrawn").count() == 2 and page.locator("form.withdraw").count() == 0  # type: ignore[attr-defined]
    assert page.locator(".photos img").count() == 0  # type: ignore[attr-defined]
    shot(page, "13-consents-withdrawn")
