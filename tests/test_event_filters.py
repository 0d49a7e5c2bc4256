"""Events people can work through: filters, totals, repeats, bulk review and face crops, over real HTTP and the CLI.

The events are made by the pipeline's own recorder from real faces (the players photo shipped with the models:
Yao Ming, enrolled on a watchlist, and two unknown players), stored in a real SQLite file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from sqlalchemy import select

from api_kit import Server, make_keys, serving
from facetrail.api.app import ApiSettings, create_app
from facetrail.config.schema import ALL_EVENTS
from facetrail.events.messages import Channels
from facetrail.events.outlet import EventOutlet
from facetrail.events.queries import EVENT_KINDS
from facetrail.events.rules import EventRules
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.pipeline.analyzer import AnalysedFrame
from facetrail.pipeline.matcher import WatchlistRule
from facetrail.pipeline.recorder import Evidence, Recorder, TrackRecord
from facetrail.store.models import AuditEntry, Event, EventReview, Identity, Watchlist
from facetrail.track.unknowns import UnknownClusters
from facetrail.vision.engine import FaceEngine, ImageFaces
from facetrail.vision.image import load_image
from facetrail.vision.samples import sample_image
from pipeline_kit import enrol
from test_dashboard import CHROMIUM, WAIT_MS, facetrail_serve

pytestmark = pytest.mark.models
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
SHOTS = Path(os.environ.get("FACETRAIL_TEST_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts")) / "dashboard"
BOX_DRAWING = set("─━│┃┌┐└┘├┤┬┴┼╭╮╯╰═║╔╗╚╝╠╣╦╩╬┏┓┗┛┡┩")


@dataclass
class Faces:
    """The players photo analysed once: which face is Yao Ming's, and two unknown players."""

    image: np.ndarray
    found: ImageFaces
    yao: int
    strangers: tuple[int, int]


@dataclass
class Scene:
    """A gallery with recorded events, served over HTTP; ``ids`` names each event by what it stands for."""

    data: Path
    gallery: Gallery
    server: Server
    ids: dict[str, int] = field(default_factory=dict)
    yao_id: int = 0
    visitor_a: int = 0

    def get(self, role: str = "viewer", **params: object) -> httpx.Response:
        with self.server.client(role) as client:
            return client.get("/events", params=params)  # type: ignore[arg-type]

    def listed(self, **params: object) -> set[int]:
        answer = self.get(limit=200, **params)
        assert answer.status_code == 200, answer.text
        return {item["id"] for item in answer.json()["items"]}

    def named(self, *labels: str) -> set[int]:
        return {self.ids[label] for label in labels}


@pytest.fixture(scope="module")
def faces(engine: FaceEngine) -> Faces:
    image = load_image(sample_image("players.jpg"))
    found = engine.analyze(image)
    yao = engine.analyze(load_image(sample_image("yaoming.jpg")))
    probe = yao.embeddings.vectors[yao.primary() or 0]
    similarity = found.embeddings.vectors @ probe
    order = [int(i) for i in np.argsort(-similarity)]
    assert similarity[order[0]] > 0.5, "Yao Ming is in the players photo"
    strangers = [i for i in order[1:] if similarity[i] < 0.2 and found.qualities[i].score > 0.3]
    return Faces(image, found, order[0], (strangers[0], strangers[1]))


@pytest.fixture
def scene(tmp_path: Path, engine: FaceEngine, faces: Faces) -> Iterator[Scene]:
    data = tmp_path / "data"
    enrol(data, engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")
    gallery = Gallery(GallerySettings(data), engine=engine)
    keys = make_keys(gallery)
    record_events(gallery, faces)
    with serving(create_app(ApiSettings(data), gallery=gallery)) as url:
        made = Scene(data, gallery, Server(url, gallery, keys))
        with gallery.db.session() as session:
            made.yao_id = int(session.scalar(select(Identity.id)) or 0)
            for row in session.scalars(select(Event).order_by(Event.id)):
                made.ids[_label(row, T0)] = row.id
            made.visitor_a = int(session.get(Event, made.ids["door+0"]).visitor_id or 0)  # type: ignore[union-attr]
        yield made
    gallery.db.dispose()


def record_events(gallery: Gallery, faces: Faces) -> None:
    """Tracks as the pipeline records them: a stranger loitering at the door, another in the yard, Yao Ming
    (on the vip watchlist) twice at the door, and a forced door."""
    frame = AnalysedFrame(image=faces.image, faces=faces.found.detections, enhanced=False, max_residual=1.0)
    recorder = Recorder(gallery.db, channels=Channels(), rules=EventRules(unknown_visitor=True),
                        clusters=UnknownClusters(0.4, timedelta(days=30)))
    with gallery.db.session() as session:
        vip = session.scalars(select(Watchlist)).one()
        yao = session.scalars(select(Identity)).one()
        rule = WatchlistRule(vip.id, vip.name, 0.3, 1)
        yao_id, yao_name = yao.id, yao.display_name
    stranger_a, stranger_b = faces.strangers
    tracks = [("door", 0, stranger_a), ("yard", 1, stranger_b), ("door", 2, stranger_a), ("yard", 3, stranger_a),
              ("door", 4, stranger_a), ("door", 5, faces.yao), ("door", 6, faces.yao), ("yard", 30, stranger_b)]
    for n, (camera, minute, face) in enumerate(tracks):
        at = T0 + timedelta(minutes=minute)
        record = TrackRecord(uid=f"track-{n}", camera=camera, first_seen=at, last_seen=at, frames=1)
        x1, y1, x2, y2 = (float(v) for v in faces.found.detections.xyxy[face])
        evidence = Evidence(frame=faces.image, box=(x1, y1, x2, y2), thumbnail=frame.thumbnail(face),
                            embedding=faces.found.embeddings.vectors[face], quality=faces.found.qualities[face].score,
                            model_id=gallery.model_id)
        named = face == faces.yao
        recorder.decided(record, status="named" if named else "unknown", identity_id=yao_id if named else None,
                         identity_name=yao_name if named else None, score=0.8 if named else None,
                         rules=[rule] if named else [], evidence=evidence, frame_time=at)
        recorder.ended(record, at + timedelta(seconds=5))
        if minute == 6:
            with gallery.db.session() as session:
                EventOutlet().door_forced(session, door="front", camera="door", at=at + timedelta(seconds=30))


def _label(row: Event, t0: datetime) -> str:
    minute = int((row.started_at.replace(tzinfo=UTC) - t0).total_seconds() // 60)
    prefix = {"watchlist_hit": "yao", "door_forced": "forced"}.get(row.kind, row.camera)
    return f"{prefix}+{minute}"


def test_the_filter_kinds_are_the_configurations_event_kinds() -> None:
    assert set(EVENT_KINDS) == set(ALL_EVENTS) - {"review"}


def test_each_filter_narrows_to_exactly_the_expected_events(scene: Scene) -> None:
    assert len(scene.ids) == 9, scene.ids
    door_a = scene.named("door+0", "door+2", "door+4")
    assert scene.listed(kind="watchlist_hit") == scene.named("yao+5", "yao+6")
    assert scene.listed(kind="unknown_visitor", camera="door") == door_a
    assert scene.listed(camera="yard") == scene.named("yard+1", "yard+3", "yard+30")
    assert scene.listed(person="Yao Ming") == scene.named("yao+5", "yao+6")
    assert scene.listed(person="yao ming") == scene.listed(person=str(scene.yao_id)) == scene.named("yao+5", "yao+6")
    assert scene.listed(person=f"visitor:{scene.visitor_a}") == door_a | scene.named("yard+3")
    assert scene.listed(watchlist="vip") == scene.named("yao+5", "yao+6")
    assert scene.listed(kind="door_forced") == scene.named("forced+6")
    window = {"since": (T0 + timedelta(minutes=2)).isoformat(), "until": (T0 + timedelta(minutes=6)).isoformat()}
    assert scene.listed(**window) == scene.named("door+2", "yard+3", "door+4", "yao+5")
    in_paris = {"since": "2026-03-01T09:02:00+01:00", "until": "2026-03-01T09:06:00+01:00"}
    assert scene.listed(**in_paris) == scene.listed(**window)
    assert scene.listed(state="dismissed") == set()
    with scene.server.client("operator") as client:
        assert client.post(f"/events/{scene.ids['yard+1']}/review", json={"verdict": "dismiss"}).status_code == 200
    assert scene.listed(state="dismissed") == scene.named("yard+1")
    assert scene.listed(state="pending", camera="yard") == scene.named("yard+3", "yard+30")


@pytest.mark.parametrize(("params", "problem"), [
    ({"kind": "watchlist_hit", "kinds": "x"}, "kinds"),
    ({"camera": "door", "cam": "door"}, "cam"),
    ({"kind": "bogus"}, "kind"),
    ({"since": "2026-03-01T08:00:00"}, "since"),
    ({"person": "Nobody Known"}, "no person named"),
    ({"watchlist": "no-such-list"}, "no watchlist"),
    ({"since": "2026-03-01T09:00:00Z", "until": "2026-03-01T08:00:00Z"}, "later than since"),
])
def test_a_bad_or_unknown_parameter_is_refused_not_ignored(scene: Scene, params: dict[str, str], problem: str) -> None:
    answer = scene.get(**params)
    assert answer.status_code == 422, answer.text
    assert problem in answer.text


def test_total_is_the_true_count_and_the_cursor_walks_every_event(scene: Scene) -> None:
    seen: list[int] = []
    cursor = None
    while True:
        page = scene.get(limit=2, **({"cursor": cursor} if cursor else {})).json()
        assert page["total"] == 9 and len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(scene.ids.values(), reverse=True)
    narrowed = scene.get(limit=1, camera="door").json()
    assert narrowed["total"] == 6 and len(narrowed["items"]) == 1


def test_repeats_of_one_visitor_on_one_camera_fold_into_one_item(scene: Scene) -> None:
    page = scene.get(group="visitor").json()
    groups = {item["id"]: [r["id"] for r in item["repeats"]] for item in page["items"]}
    ids = scene.ids
    assert groups == {
        ids["yard+30"]: [],  # the same stranger 29 minutes earlier is outside the 10-minute window
        ids["forced+6"]: [],  # door events are never grouped
        ids["yao+6"]: [ids["yao+5"]],
        ids["door+4"]: [ids["door+2"], ids["door+0"]],  # Yao's events in between do not split the stranger's
        ids["yard+3"]: [],  # the same stranger on another camera
        ids["yard+1"]: [],
    }
    assert page["total"] == 9
    wider = scene.get(group="visitor", window_s=3600).json()
    assert {item["id"]: len(item["repeats"]) for item in wider["items"]}[ids["yard+30"]] == 1
    assert all(item["repeats"] == [] for item in scene.get().json()["items"])  # no grouping unless asked


def test_bulk_dismiss_by_filter_audits_each_event_with_the_note(scene: Scene) -> None:
    door_a = sorted(scene.named("door+0", "door+2", "door+4"), reverse=True)
    body = {"verdict": "dismiss", "note": "delivery driver, checked with reception",
            "filter": {"kind": "unknown_visitor", "camera": "door"}}
    with scene.server.client("viewer") as viewer:
        assert viewer.post("/events/review", json=body).status_code == 403
    with scene.server.client("operator") as client:
        assert client.post("/events/review", json={**body, "verdict": "confirm"}).status_code == 422
        assert client.post("/events/review", json={**body, "ids": door_a}).status_code == 422
        assert client.post("/events/review", json={**body, "filter": {"colour": "red"}}).status_code == 422
        answer = client.post("/events/review", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert [r["event_id"] for r in result["reviewed"]] == door_a and result["skipped"] == []
    assert {r["state"] for r in result["reviewed"]} == {"dismissed"}
    with scene.gallery.db.session() as session:
        entries = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "event.dismiss")))
        assert sorted(e.target for e in entries) == sorted(f"event:{i}" for i in door_a)
        for entry in entries:
            details = json.loads(entry.details)
            assert details["note"] == body["note"] and details["batch"] == result["batch"]
            assert entry.actor == "operator-key"
        reviews = list(session.scalars(select(EventReview)))
        assert sorted(r.event_id for r in reviews) == sorted(door_a)
        assert {r.note for r in reviews} == {body["note"]}
    assert scene.listed(state="pending", camera="door") == scene.named("yao+5", "yao+6", "forced+6")


def test_bulk_review_by_ids_skips_what_is_settled_and_says_why(scene: Scene) -> None:
    chosen = [scene.ids["yao+5"], scene.ids["yao+6"]]
    with scene.server.client("operator") as client:
        first = client.post("/events/review", json={"verdict": "confirm", "note": "same face", "ids": chosen[:1]})
        assert first.status_code == 200 and first.json()["reviewed"][0]["state"] == "confirmed"
        both = client.post("/events/review", json={"verdict": "confirm", "note": "same face", "ids": chosen}).json()
    assert [r["event_id"] for r in both["reviewed"]] == chosen[1:]
    assert [s["event_id"] for s in both["skipped"]] == chosen[:1]
    assert "already confirmed" in both["skipped"][0]["reason"]


def test_the_face_crop_is_a_jpeg_of_the_face_much_smaller_than_the_frame(scene: Scene) -> None:
    event = scene.ids["door+0"]
    with scene.server.client("viewer") as client:
        face = client.get(f"/events/{event}/face")
        frame = client.get(f"/events/{event}/snapshot")
        forced = client.get(f"/events/{scene.ids['forced+6']}/face")
        listed = {item["id"]: item["has_face"] for item in client.get("/events").json()["items"]}
    with httpx.Client(base_url=scene.server.url) as anonymous:
        assert anonymous.get(f"/api/v1/events/{event}/face").status_code == 401
    assert face.status_code == 200 and face.headers["content-type"] == "image/jpeg"
    crop = cv2.imdecode(np.frombuffer(face.content, np.uint8), cv2.IMREAD_COLOR)
    whole = cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_COLOR)
    assert crop is not None and whole is not None
    assert crop.shape[0] * crop.shape[1] * 4 < whole.shape[0] * whole.shape[1]
    assert forced.status_code == 404 and "no face crop" in forced.text
    assert listed[event] is True and listed[scene.ids["forced+6"]] is False


def facetrail(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real CLI, its output piped (so not a terminal)."""
    return subprocess.run([sys.executable, "-m", "facetrail.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_cli_lists_filtered_events_as_json_and_as_a_plain_table_when_piped(scene: Scene) -> None:
    listed = facetrail("events", "list", "--data", scene.data, "--camera", "yard", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == sorted(scene.named("yard+1", "yard+3", "yard+30"), reverse=True)
    assert all(r["camera"] == "yard" and r["started_at"].endswith("+00:00") for r in rows)
    grouped = json.loads(facetrail("events", "list", "--data", scene.data, "--group", "--json",
                                   "--person", "Yao Ming").stdout)
    assert [(r["id"], r["repeats"]) for r in grouped] == [(scene.ids["yao+6"], [scene.ids["yao+5"]])]
    table = facetrail("events", "list", "--data", scene.data, "--limit", "4", "--since", "2026-03-01T08:01:00Z")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "4 of 8 event(s)"
    assert lines[1].split()[:4] == ["id", "started", "(UTC)", "kind"]
    assert len(lines) == 2 + 4 and not BOX_DRAWING & set(table.stdout)
    assert lines[2].split()[0] == str(scene.ids["yard+30"]) and "2026-03-01 08:30:00" in lines[2]
    wrong = facetrail("events", "list", "--data", scene.data, "--since", "yesterday")
    assert wrong.returncode == 1 and "ISO 8601" in wrong.stderr and "Traceback" not in wrong.stderr


def test_cli_dismisses_every_pending_event_a_filter_matches_with_one_note(scene: Scene) -> None:
    refused = facetrail("events", "review", "--dismiss", "--data", scene.data, "--actor", "ana")
    assert refused.returncode == 1 and "filter options" in refused.stderr
    done = facetrail("events", "review", "--dismiss", "--camera", "yard", "--note", "the gardener", "--data",
                     scene.data, "--actor", "ana")
    assert done.returncode == 0, done.stderr
    assert "3 event(s) reviewed, 0 skipped" in done.stdout
    single = facetrail("events", "review", scene.ids["yao+5"], "confirm", "--note", "him", "--data", scene.data,
                       "--actor", "ana")
    assert single.returncode == 0 and f"event {scene.ids['yao+5']}: confirmed" in single.stdout
    with scene.gallery.db.session() as session:
        notes = {i: n for i, n in session.execute(select(EventReview.event_id, EventReview.note))}
        actions = list(session.scalars(select(AuditEntry.target).where(AuditEntry.action == "event.dismiss")))
    yard = scene.named("yard+1", "yard+3", "yard+30")
    assert {i: notes[i] for i in yard} == dict.fromkeys(yard, "the gardener")
    assert sorted(actions) == sorted(f"event:{i}" for i in yard)


def test_the_dashboard_filters_groups_and_bulk_dismisses_in_a_real_browser(scene: Scene) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (Debian package chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    with facetrail_serve("--data", scene.data) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(url + "/")
        page.fill("input[name=key]", scene.server.keys["operator"])
        page.click("button[type=submit]")
        page.wait_for_selector("#events-total")
        assert page.locator("#events-total").inner_text().startswith("9 of 9 matching events shown (9 pending)")
        assert page.locator("article.event").count() == 6  # repeats folded

        page.select_option("form.event-filter select[name=kind]", "unknown_visitor")
        page.fill("form.event-filter input[name=camera]", "door")
        page.click("form.event-filter button[type=submit]")
        page.wait_for_url(re.compile(r"kind=unknown_visitor.*camera=door|camera=door.*kind=unknown_visitor"))
        assert page.locator("#events-total").inner_text().startswith("3 of 3 matching events")
        card = page.locator("article.event")
        assert card.count() == 1 and "and 2 more" in card.inner_text()
        face = card.locator("figure.face img")
        face.wait_for()
        assert face.evaluate("img => img.complete && img.naturalWidth > 0")
        card.locator("details.repeats summary").click()
        assert card.locator("details.repeats li").count() == 2
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "8-events-filtered.png"), full_page=True)

        bookmarked = page.url
        page.check("#select-all")
        page.fill("form.bulk input[name=note]", "the same courier, three times")
        page.click("form.bulk button[value=dismiss]")
        page.wait_for_selector(".notice")
        assert "Dismissed 3 event(s)" in page.locator(".notice").inner_text()
        assert "kind=unknown_visitor" in page.url and "dismissed" in card.locator(".state").inner_text()

        page.goto(url + "/?camera=yard&group=none&state=pending")
        page.wait_for_selector("#events-total")
        assert page.locator("article.event").count() == 3
        for box in page.locator("article.event .pick input").all()[:2]:
            box.check()
        page.fill("form.bulk input[name=note]", "gardeners")
        page.click("form.bulk button[value=dismiss]")
        page.wait_for_selector(".notice")
        assert "Dismissed 2 event(s)" in page.locator(".notice").inner_text()
        assert page.locator("article.event").count() == 1  # the pending filter is kept
        page.goto(bookmarked)
        assert page.locator("#events-total").inner_text().startswith("3 of 3 matching events shown (0 pending)")
        browser.close()
    with scene.gallery.db.session() as session:
        notes = sorted(n or "" for n in session.scalars(select(EventReview.note)))
    assert notes == ["gardeners"] * 2 + ["the same courier, three times"] * 3
