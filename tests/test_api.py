"""The REST API over real HTTP on loopback: keys and roles, the error envelope, audited searches, reviews."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from api_kit import Server, make_keys, serving
from facetrail.api.app import PREFIX, ApiSettings, create_app
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.store.models import AuditEntry, Event, utcnow
from facetrail.vision.engine import FaceEngine
from facetrail.vision.samples import sample_image

pytestmark = pytest.mark.models
SNAPSHOT = Path(__file__).with_name("openapi.json")


def decompression_bomb() -> bytes:
    """A PNG of a few kilobytes that would decode to 144 megapixels."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, engine: FaceEngine) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("api")
    gallery = Gallery(GallerySettings(data), engine=engine)
    keys = make_keys(gallery, ("second-operator", "operator"))
    with serving(create_app(ApiSettings(data, max_upload_bytes=2_000_000), gallery=gallery)) as url:
        yield Server(url, gallery, keys)
    gallery.db.dispose()


def test_every_route_needs_a_key_and_the_right_role(server: Server) -> None:
    with server.client(None) as anonymous:
        answer = anonymous.get("/identities")
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthenticated"
    with httpx.Client(base_url=server.url + PREFIX, headers={"Authorization": "Bearer ft_nope_nope"}) as wrong:
        assert wrong.get("/identities").status_code == 401
    with server.client("viewer") as viewer:
        assert viewer.get("/identities").status_code == 200
        forbidden = viewer.get("/audit")
        assert forbidden.status_code == 403 and "admin role" in forbidden.json()["error"]["message"]
        assert viewer.post("/watchlists", json={"name": "x", "purpose": "y"}).status_code == 403
    with server.client("admin") as admin:
        assert admin.get("/audit").status_code == 200


def test_enrol_search_and_review_are_audited_with_the_caller(server: Server, players: object) -> None:
    with server.client("admin") as admin:
        created = admin.post("/watchlists", json={"name": "vip", "purpose": "api test", "reviewers_required": 2})
        assert created.status_code == 201, created.text
    with server.client("operator") as operator:
        with sample_image("yaoming.jpg").open("rb") as photo:
            enrolled = operator.post("/identities/enrolments", data={"name": "Yao Ming"},
                                     files={"image": ("yao.jpg", photo, "image/jpeg")})
        assert enrolled.status_code == 201, enrolled.text
        identity = enrolled.json()["identity_id"]
        with sample_image("players.jpg").open("rb") as photo:
            no_purpose = operator.post("/search/gallery", files={"image": ("team.jpg", photo, "image/jpeg")})
        assert no_purpose.status_code == 422
        assert any(d["field"].endswith("purpose") for d in no_purpose.json()["error"]["details"])
        with sample_image("yaoming.jpg").open("rb") as photo:
            found = operator.post("/search/gallery", data={"purpose": "api test"},
                                  files={"image": ("probe.jpg", photo, "image/jpeg")})
        assert found.status_code == 200 and found.json()["known"]
        assert found.json()["matches"][0]["identity_id"] == identity
    with server.client("admin") as admin:
        assert admin.put(f"/watchlists/vip/members/{identity}").status_code == 204
        lists = admin.get("/watchlists").json()
        assert lists[0]["name"] == "vip" and lists[0]["members"] == 1 and lists[0]["reviewers_required"] == 2
    with server.gallery.db.session() as session:
        event = Event(uid="api-test", kind="watchlist_hit", camera="door", identity_id=identity, started_at=utcnow(),
                      state="pending", reviewers_required=2, snapshot_jpeg=sample_image("yaoming.jpg").read_bytes())
        session.add(event)
        session.flush()
        event_id = event.id
    with server.client("operator") as first, server.client("second-operator") as second:
        one = first.post(f"/events/{event_id}/review", json={"verdict": "confirm", "note": "looks like him"})
        assert one.status_code == 200 and one.json()["state"] == "pending"
        again = first.post(f"/events/{event_id}/review", json={"verdict": "confirm"})
        assert again.status_code == 409 and "someone else" in again.json()["error"]["message"]
        two = second.post(f"/events/{event_id}/review", json={"verdict": "confirm"})
        assert two.json() == {"event_id": event_id, "state": "confirmed", "confirmations": 2, "required": 2}
        image = first.get(f"/events/{event_id}/snapshot")
        assert image.headers["content-type"] == "image/jpeg" and image.content[:2] == b"\xff\xd8"
    with server.gallery.db.session() as session:
        actors = {(a.action, a.actor) for a in session.scalars(select(AuditEntry))}
    assert {("watchlist.create", "admin-key"), ("enrol", "operator-key"), ("search", "operator-key"),
            ("event.confirm", "operator-key"), ("event.confirm", "second-operator")} <= actors


@pytest.mark.parametrize("payload, status, code", [
    (b"not an image at all", 422, "bad_image"),
    (sample_image("yaoming.jpg").read_bytes()[:2000], 422, "bad_image"),  # truncated JPEG
    (b"", 422, "bad_image"),
    (b"\xff" * 2_000_001, 413, "too_large"),
    (decompression_bomb(), 422, "bad_image"),
])
def test_bad_uploads_get_a_clear_4xx_and_write_nothing(server: Server, payload: bytes, status: int,
                                                       code: str) -> None:
    with server.gallery.db.session() as session:
        before = len(list(session.scalars(select(AuditEntry.id))))
    with server.client("operator") as operator:
        answer = operator.post("/search/gallery", data={"purpose": "bad input"},
                               files={"image": ("x.jpg", payload, "image/jpeg")})
        enrol = operator.post("/identities/enrolments", data={"name": "Nobody"},
                              files={"image": ("x.jpg", payload, "image/jpeg")})
    assert answer.status_code == status and answer.json()["error"]["code"] == code
    assert enrol.status_code == status and enrol.json()["error"]["code"] in (code, "not_enrolled")
    with server.gallery.db.session() as session:
        assert len(list(session.scalars(select(AuditEntry.id)))) == before


def test_pagination_and_unknown_ids(server: Server) -> None:
    with server.client("admin") as admin:
        first = admin.get("/audit", params={"limit": 2}).json()
        assert len(first["items"]) == 2 and first["next_cursor"]
        second = admin.get("/audit", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        assert second["items"][0]["id"] < first["items"][-1]["id"]
        bad = admin.get("/audit", params={"cursor": "!!"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_cursor"
        missing = admin.get("/identities/999999")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        gone = admin.delete("/identities/999999", params={"reason": "test"})
        assert gone.status_code == 404


def test_openapi_matches_the_snapshot(server: Server) -> None:
    """Fails when the API changes by accident; after a deliberate change, refresh tests/openapi.json."""
    with server.client(None) as anyone:
        published = anyone.get("/openapi.json").json()
    published["info"].pop("version", None)
    expected = json.loads(SNAPSHOT.read_text())
    assert published == expected, "the API changed: if on purpose, write the new spec to tests/openapi.json"
