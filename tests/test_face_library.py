"""The face library over real HTTP: add photos, rename, merge, delete a template, "this is" / "not" from an event,
enrol a visitor. Real photos of ../shared/data/faces, a real SQLite file, faces sealed as the pipeline seals them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from api_kit import Server, make_keys, serving
from facetrail.api.app import ApiSettings, create_app
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.store.crypto import IDENTITY
from facetrail.store.models import AuditEntry, DataKey, Event, FaceTemplate, Identity, Sighting, Visitor, utcnow
from facetrail.store.sealed import seal_into
from facetrail.vision.engine import FaceEngine
from library_kit import enrol, seen

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def faces(data_dir: Path) -> Path:
    return data_dir / "faces"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, engine: FaceEngine) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("library")
    gallery = Gallery(GallerySettings(data), engine=engine)
    keys = make_keys(gallery)
    with serving(create_app(ApiSettings(data), gallery=gallery)) as url:
        yield Server(url, gallery, keys)
    gallery.db.dispose()


def search(client: httpx.Client, photo: Path) -> dict[str, Any]:
    with photo.open("rb") as stream:
        answer = client.post("/search/gallery", data={"purpose": "library test", "top": "10"},
                             files={"image": (photo.name, stream, "image/jpeg")})
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def audited(server: Server, action: str) -> list[AuditEntry]:
    with server.gallery.db.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_add_photos_to_a_person_checks_each_photo_and_is_audited(server: Server, faces: Path,
                                                                  data_dir: Path) -> None:
    with server.client("operator") as operator:
        biden = enrol(operator, "Joe Biden", faces / "biden" / "biden.jpg")
        files = [("images", ("biden2.jpg", (faces / "biden" / "biden2.jpg").read_bytes(), "image/jpeg")),
                 ("images", ("no_face.png", (data_dir / "scenes" / "no_face.png").read_bytes(), "image/png"))]
        answer = operator.post(f"/identities/{biden}/photos", data={"purpose": "a second photo"}, files=files)
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert len(body["added"]) == 1 and [r["outcome"] for r in body["refused"]] == ["no face"]
        assert "no_face.png" in body["refused"][0]["detail"]
        assert operator.get(f"/identities/{biden}").json()["templates"] == 2
        blank = operator.post(f"/identities/{biden}/photos", data={"purpose": " "}, files=files[:1])
        assert blank.status_code == 400 and "say why" in blank.json()["error"]["message"]
    with server.client("viewer") as viewer:
        assert viewer.post(f"/identities/{biden}/photos", data={"purpose": "x"}, files=files[:1]).status_code == 403
    entry = audited(server, "identity.add_photos")[-1]
    assert entry.purpose == "a second photo" and entry.actor == "operator-key" and entry.result_count == 1


def test_rename_changes_the_name_everyone_sees_and_logs_both_names(server: Server, faces: Path) -> None:
    with server.client("operator") as operator:
        person = enrol(operator, "Paul Rud", faces / "paul_rudd" / "1.jpg")
        answer = operator.patch(f"/identities/{person}", json={"display_name": "Paul Rudd", "purpose": "typo"})
        assert answer.status_code == 200 and answer.json()["display_name"] == "Paul Rudd"
        assert search(operator, faces / "paul_rudd" / "1.jpg")["matches"][0]["display_name"] == "Paul Rudd"
        blank = operator.patch(f"/identities/{person}", json={"display_name": "   ", "purpose": "typo"})
        assert blank.status_code == 400 and "non-empty name" in blank.json()["error"]["message"]
        assert operator.patch("/identities/999999", json={"display_name": "X", "purpose": "y"}).status_code == 404
    with server.client("viewer") as viewer:
        assert viewer.patch(f"/identities/{person}", json={"display_name": "Z", "purpose": "y"}).status_code == 403
    assert '"from": "Paul Rud"' in audited(server, "identity.rename")[-1].details


def test_merge_moves_faces_resealed_and_the_survivor_is_found(server: Server, faces: Path) -> None:
    with server.client("operator") as operator:
        obama = enrol(operator, "Barack Obama", faces / "obama" / "obama.jpg")
        twin = enrol(operator, "B. Obama", faces / "obama" / "obama2.jpg", duplicate=True)
    with server.client("admin") as admin:
        assert admin.post("/watchlists", json={"name": "board", "purpose": "board members"}).status_code == 201
        assert admin.put(f"/watchlists/board/members/{twin}").status_code == 204
    event = seen(server, faces / "obama" / "obama3.jpg", identity_id=twin)
    with server.client("operator") as operator:
        refused = operator.post(f"/identities/{obama}/merge", json={"other_id": twin, "purpose": "enrolled twice"})
        assert refused.status_code == 403
    with server.client("admin") as admin:
        assert admin.post(f"/identities/{obama}/merge", json={"other_id": obama, "purpose": "x"}).status_code == 400
        answer = admin.post(f"/identities/{obama}/merge", json={"other_id": twin, "purpose": "enrolled twice"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["templates"], body["sightings"], body["events"], body["memberships"]) == (1, 1, 1, 1)
        assert body["survivor"]["templates"] == 2 and body["survivor"]["watchlists"] == ["board"]
        assert admin.get(f"/identities/{twin}").status_code == 404
        found = search(admin, faces / "obama" / "test1.jpg")
        assert found["known"] and found["matches"][0]["identity_id"] == obama
        assert all(m["identity_id"] != twin for m in found["matches"])
        for template in admin.get(f"/identities/{obama}/templates").json():  # opens under the survivor's key
            photo = admin.get(f"/identities/{obama}/templates/{template['id']}/photo")
            assert photo.status_code == 200 and photo.content[:2] == b"\xff\xd8"
    with server.gallery.db.session() as session:
        assert session.scalar(select(DataKey.id).where(DataKey.owner_kind == IDENTITY, DataKey.owner_id == twin)) \
            is None, "the merged identity's data key must be destroyed"
        moved = session.scalars(select(FaceTemplate).where(FaceTemplate.identity_id == obama)).all()
        assert len(moved) == 2
        assert session.scalar(select(Event.identity_id).where(Event.id == event)) == obama
    entry = audited(server, "identity.merge")[-1]
    assert entry.purpose == "enrolled twice" and entry.target == f"identity:{obama}" and f'"merged": {twin}' in \
        entry.details


def test_delete_one_template_but_never_the_last(server: Server, faces: Path) -> None:
    with server.client("operator") as operator:
        rose = enrol(operator, "Rose Leslie", faces / "rose_leslie" / "img1.jpg")
        with (faces / "rose_leslie" / "img2.jpg").open("rb") as stream:
            added = operator.post(f"/identities/{rose}/photos", data={"purpose": "second photo"},
                                  files={"images": ("img2.jpg", stream, "image/jpeg")}).json()["added"]
        before = len(server.gallery.index)
        gone = operator.delete(f"/identities/{rose}/templates/{added[0]}", params={"purpose": "wrong photo"})
        assert gone.status_code == 204
        assert len(server.gallery.index) == before - 1
        assert [t["id"] for t in operator.get(f"/identities/{rose}/templates").json()] != added
        last = operator.get(f"/identities/{rose}/templates").json()[0]["id"]
        refused = operator.delete(f"/identities/{rose}/templates/{last}", params={"purpose": "x"})
        assert refused.status_code == 400 and "last face template" in refused.json()["error"]["message"]
        assert operator.delete(f"/identities/{rose}/templates/{added[0]}", params={"purpose": "x"}).status_code == 404
    assert audited(server, "identity.delete_template")[-1].purpose == "wrong photo"


def test_not_x_stops_that_face_from_naming_x(server: Server, faces: Path) -> None:
    probe = faces / "kit_harington" / "test1.jpg"
    with server.client("operator") as operator:
        kit = enrol(operator, "Kit Harington", faces / "kit_harington" / "john1.jpeg")
        before = search(operator, probe)
        assert before["known"] and before["matches"][0]["identity_id"] == kit
        event = seen(server, probe, identity_id=kit)
        answer = operator.post(f"/events/{event}/face/is-not", json={"purpose": "operator checked: not Kit"})
        assert answer.status_code == 201, answer.text
        assert answer.json()["identity_id"] == kit and answer.json()["negative_example_id"]
        after = search(operator, probe)
        assert all(m["identity_id"] != kit for m in after["matches"]), after
        enrolled = search(operator, faces / "kit_harington" / "john1.jpeg")  # his own photo still names him
        assert enrolled["known"] and enrolled["matches"][0]["identity_id"] == kit
    entry = audited(server, "correct.not_match")[-1]
    assert entry.purpose == "operator checked: not Kit" and f'"event": {event}' in entry.details


def test_this_is_x_adds_the_events_face_as_a_template(server: Server, faces: Path) -> None:
    with server.client("operator") as operator:
        alex = enrol(operator, "Alex Lacamoire", faces / "alex_lacamoire" / "img1.jpg")
        event = seen(server, faces / "alex_lacamoire" / "test1.jpg", kind="unknown_visitor")
        missing = operator.post(f"/events/{event}/face/is", json={"purpose": "x"})
        assert missing.status_code == 422
        answer = operator.post(f"/events/{event}/face/is", json={"identity_id": alex, "purpose": "checked badge"})
        assert answer.status_code == 201, answer.text
        template = answer.json()["template_id"]
        templates = operator.get(f"/identities/{alex}/templates").json()
        assert template in [t["id"] for t in templates] and len(templates) == 2
        found = search(operator, faces / "alex_lacamoire" / "test1.jpg")
        assert found["matches"][0]["identity_id"] == alex and found["matches"][0]["score"] > 0.99
        again = operator.post(f"/events/{event}/face/is", json={"identity_id": alex, "purpose": "again"})
        assert again.status_code == 400 and "already a face template" in again.json()["error"]["message"]
    assert audited(server, "identity.confirm_face")[-1].purpose == "checked badge"


def test_enrol_a_visitor_from_their_best_shots(server: Server, faces: Path) -> None:
    gallery = server.gallery
    with gallery.db.session() as session:
        visitor = Visitor(model_id=gallery.model_id, centroid=b"", dim=gallery.dim, sightings=2,
                          first_seen=utcnow(), last_seen=utcnow())
        session.add(visitor)
        session.flush()
        seal_into(gallery.keys, session, visitor, "centroid", np.ones(gallery.dim, np.float32).tobytes())
        visitor_id = int(visitor.id)
    events = [seen(server, faces / "rob_lowe" / name, visitor_id=visitor_id, kind="unknown_visitor")
              for name in ("Rob_Lowe_0001.jpg", "Rob_Lowe_0002.jpg")]
    with server.client("operator") as operator:
        answer = operator.post(f"/visitors/{visitor_id}/enrol", json={"name": "New Resident", "purpose": "moved in"})
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert len(body["templates"]) == 2
        found = search(operator, faces / "rob_lowe" / "Rob_Lowe_0002.jpg")
        assert found["known"] and found["matches"][0]["identity_id"] == body["identity_id"]
        again = operator.post(f"/visitors/{visitor_id}/enrol", json={"name": "New Resident", "purpose": "again"})
        assert again.status_code == 400 and "no unnamed sighting" in again.json()["error"]["message"]
    with gallery.db.session() as session:
        named = session.scalars(select(Sighting.identity_id).where(Sighting.visitor_id == visitor_id)).all()
        assert set(named) == {body["identity_id"]}
        assert set(session.scalars(select(Event.identity_id).where(Event.id.in_(events)))) == {body["identity_id"]}
        assert session.get(Identity, body["identity_id"]) is not None
    assert audited(server, "visitor.enrol")[-1].purpose == "moved in"
