"""The gallery end to end: real photos, real models, a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

from facetrail.events.messages import Channels, EventView
from facetrail.events.outbox import mark_delivered
from facetrail.events.outlet import EventOutlet, new_uid
from facetrail.gallery.enrol import EnrolOptions, Outcome, enrol_folder
from facetrail.gallery.errors import GalleryError
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.people import add_negative, forget
from facetrail.gallery.search import match_many, search_embedding
from facetrail.gallery.watchlists import add_member, create_watchlist
from facetrail.store.audit import verify_chain
from facetrail.store.models import (
    AuditEntry,
    FaceTemplate,
    Identity,
    NegativeExample,
    OutboxMessage,
    WatchlistMember,
    utcnow,
)
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import load_image

pytestmark = pytest.mark.models
OPTIONS = EnrolOptions(actor="tester")


def enrolment_tree(data_dir: Path, root: Path) -> dict[str, Path]:
    """Copy all photos but the last of each person with 2+ photos into root/<person>/.

    Returns person -> the held-back photo, used as the probe.
    """
    probes = {}
    for person in sorted((data_dir / "faces").iterdir()):
        photos = sorted(person.iterdir())
        if len(photos) < 2:
            continue
        (root / person.name).mkdir(parents=True)
        for photo in photos[:-1]:
            shutil.copy(photo, root / person.name / photo.name)
        probes[person.name] = photos[-1]
    return probes


def open_gallery(tmp_path: Path, engine: FaceEngine, db_url: str | None = None) -> Gallery:
    return Gallery(GallerySettings(data_dir=tmp_path / "data", db_url=db_url), engine=engine)


def probe_vector(engine: FaceEngine, path: Path) -> np.ndarray:
    faces = engine.analyze(load_image(path))
    index = faces.primary()
    assert index is not None, f"no face in {path}"
    return faces.embeddings.vectors[index]


def test_enrol_then_recognise_each_person_and_not_strangers(tmp_path: Path, data_dir: Path,
                                                            engine: FaceEngine, db_url: str) -> None:
    probes = enrolment_tree(data_dir, tmp_path / "people")
    gallery = open_gallery(tmp_path, engine, db_url)
    report = enrol_folder(gallery, tmp_path / "people", OPTIONS)
    assert set(report.identities) == set(probes)
    assert report.count(Outcome.ENROLLED) >= len(probes)
    for person, probe in probes.items():
        result = search_embedding(gallery, probe_vector(engine, probe), purpose="test: known person",
                                  actor="tester")
        assert result.best is not None and result.best.display_name == person, (person, result.matches)
    strangers = [data_dir / "faces" / name for name in ("angelina_jolie", "kate_siegel", "paul_rudd")]
    for folder in strangers:
        result = search_embedding(gallery, probe_vector(engine, next(folder.iterdir())),
                                  purpose="test: stranger", actor="tester")
        assert not result.known and result.best is None
    with gallery.db.session() as session:
        searches = session.scalar(select(func.count()).select_from(AuditEntry)
                                  .where(AuditEntry.action == "search"))
        assert searches == len(probes) + len(strangers)
        assert verify_chain(session).ok
    gallery.close()


def test_re_running_an_enrolment_changes_nothing(tmp_path: Path, data_dir: Path, engine: FaceEngine) -> None:
    enrolment_tree(data_dir, tmp_path / "people")
    gallery = open_gallery(tmp_path, engine)
    first = enrol_folder(gallery, tmp_path / "people", OPTIONS)
    before = gallery.counts()
    second = enrol_folder(gallery, tmp_path / "people", OPTIONS)
    assert gallery.counts() == before and len(gallery.index) == before[1]
    assert second.count(Outcome.ENROLLED) == 0
    assert second.count(Outcome.DUPLICATE) == first.count(Outcome.ENROLLED)


def test_bad_images_are_reported_and_nothing_is_written(tmp_path: Path, data_dir: Path,
                                                        engine: FaceEngine) -> None:
    person = tmp_path / "people" / "nobody"
    person.mkdir(parents=True)
    (person / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    shutil.copy(data_dir / "scenes" / "no_face.png", person / "empty_room.png")
    shutil.copy(data_dir / "scenes" / "two_people.jpg", person / "group.jpg")
    gallery = open_gallery(tmp_path, engine)
    report = enrol_folder(gallery, tmp_path / "people", OPTIONS)
    outcomes = {f.path.name: f.outcome for f in report.files}
    assert outcomes == {"corrupt.jpg": Outcome.UNREADABLE, "empty_room.png": Outcome.NO_FACE,
                        "group.jpg": Outcome.SEVERAL_FACES}
    assert gallery.counts() == (0, 0) and len(gallery.index) == 0
    with gallery.db.session() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0


def test_largest_face_is_taken_only_when_asked(tmp_path: Path, data_dir: Path, engine: FaceEngine) -> None:
    person = tmp_path / "people" / "pair"
    person.mkdir(parents=True)
    shutil.copy(data_dir / "scenes" / "two_people.jpg", person / "group.jpg")
    gallery = open_gallery(tmp_path, engine)
    report = enrol_folder(gallery, tmp_path / "people", EnrolOptions(actor="t", take_largest=True))
    assert report.count(Outcome.ENROLLED) == 1 and gallery.counts() == (1, 1)


def test_negative_example_stops_a_match(tmp_path: Path, data_dir: Path, engine: FaceEngine) -> None:
    probes = enrolment_tree(data_dir, tmp_path / "people")
    gallery = open_gallery(tmp_path, engine)
    enrol_folder(gallery, tmp_path / "people", OPTIONS)
    obama = probe_vector(engine, probes["obama"])
    assert search_embedding(gallery, obama, purpose="t", actor="t").best is not None
    add_negative(gallery, "obama", obama, actor="reviewer")
    after = search_embedding(gallery, obama, purpose="t", actor="t")
    assert after.best is None or after.best.display_name != "obama"
    assert after.suppressed
    # The person's other photos still match: only this face and near copies are stopped.
    other = probe_vector(engine, data_dir / "faces" / "obama" / "obama.jpg")
    still = search_embedding(gallery, other, purpose="t", actor="t")
    assert still.best is not None and still.best.display_name == "obama"


def test_match_many_answers_each_row_as_a_search_of_it_alone(tmp_path: Path, data_dir: Path,
                                                             engine: FaceEngine) -> None:
    """The pipeline matches a track's shots in one call (one query per kind for all rows): each row's answer is
    the audited single search's, negative examples included."""
    probes = enrolment_tree(data_dir, tmp_path / "people")
    gallery = open_gallery(tmp_path, engine)
    enrol_folder(gallery, tmp_path / "people", OPTIONS)
    names = sorted(probes)
    vectors = [probe_vector(engine, probes[name]) for name in names]
    add_negative(gallery, "obama", vectors[names.index("obama")], actor="reviewer")
    stranger = np.random.default_rng(0).normal(size=vectors[0].shape).astype(np.float32)
    rows = np.stack([*vectors, stranger / np.linalg.norm(stranger)])
    together = match_many(gallery, rows)
    for row, match in zip(rows, together, strict=True):
        alone = search_embedding(gallery, row, purpose="t", actor="t", top=1)
        expected = alone.matches[0] if alone.matches else None
        assert match == expected
    named = [m.display_name if m is not None and m.score >= engine.threshold else None for m in together]
    assert named[names.index("obama")] != "obama"  # the negative example holds in a batch too
    assert sum(n == name for n, name in zip(named, names, strict=False)) >= len(names) - 2
    assert named[-1] is None


def test_forget_removes_every_trace(tmp_path: Path, data_dir: Path, engine: FaceEngine, db_url: str) -> None:
    probes = enrolment_tree(data_dir, tmp_path / "people")
    gallery = open_gallery(tmp_path, engine, db_url)
    enrol_folder(gallery, tmp_path / "people", OPTIONS)
    create_watchlist(gallery, "staff", purpose="building access", actor="admin")
    add_member(gallery, "staff", "biden", actor="admin")
    add_negative(gallery, "biden", probe_vector(engine, probes["obama"]), actor="reviewer")
    with gallery.db.session() as session:
        biden = session.scalar(select(Identity.id).where(Identity.display_name == "biden"))
        template_ids = list(session.scalars(select(FaceTemplate.id).where(FaceTemplate.identity_id == biden)))
    gone = forget(gallery, "biden", actor="dpo", reason="deletion request")
    assert sorted(gone.template_ids) == sorted(template_ids)
    with gallery.db.session() as session:
        for model in (FaceTemplate, NegativeExample, WatchlistMember):
            column = model.identity_id  # type: ignore[attr-defined]
            assert session.scalar(select(func.count()).select_from(model).where(column == biden)) == 0
        assert session.get(Identity, biden) is None
        assert verify_chain(session).ok
    assert not any(t in gallery.index for t in template_ids)
    reopened = open_gallery(tmp_path, engine, db_url)
    assert not any(t in reopened.index for t in template_ids)
    result = search_embedding(reopened, probe_vector(engine, probes["biden"]), purpose="t", actor="t")
    assert all(m.display_name != "biden" for m in result.matches)


def test_forget_withdraws_the_messages_about_the_person_not_yet_delivered(tmp_path: Path, data_dir: Path,
                                                                          engine: FaceEngine, db_url: str) -> None:
    """A broker or receiver that is down must not get a forgotten person's name or face later."""
    enrolment_tree(data_dir, tmp_path / "people")
    gallery = open_gallery(tmp_path, engine, db_url)
    enrol_folder(gallery, tmp_path / "people", OPTIONS)
    outlet = EventOutlet(Channels(mqtt_prefix="facetrail", webhooks={"desk": frozenset({"watchlist_hit"})}))
    photo = sorted((data_dir / "faces" / "biden").iterdir())[0]
    now = utcnow()
    with gallery.db.session() as session:
        people = {name: who for name, who in session.execute(select(Identity.display_name, Identity.id))}
        for name in ("biden", "obama"):
            who = people[name]
            outlet.new(session, EventView(uid=new_uid(), kind="watchlist_hit", camera="door", start_time=now,
                                          identity_id=who, identity_name=name, watchlist="vip", score=0.5),
                       snapshot=photo.read_bytes())
            outlet.face_named(session, camera="door", track_id=f"door-{name}", identity_id=who, name=name,
                              score=0.5, at=now, snapshot=photo.read_bytes())
            outlet.presence(session, "door", name, 1, identity_id=who)
        delivered = session.scalars(select(OutboxMessage).where(OutboxMessage.identity_id == people["biden"])).first()
        assert delivered is not None
        mark_delivered(session, delivered.message_id)
    with gallery.db.session() as session:
        about = {name: session.scalar(select(func.count()).select_from(OutboxMessage)
                                      .where(OutboxMessage.identity_id == who)) for name, who in people.items()}
    assert about["biden"] == about["obama"] >= 5  # event (MQTT and webhook), face message, snapshot, presence
    forget(gallery, "biden", actor="dpo", reason="deletion request")
    with gallery.db.session() as session:
        pending = list(session.scalars(select(OutboxMessage).where(OutboxMessage.delivered_at.is_(None))))
        kept = session.scalars(select(OutboxMessage).where(OutboxMessage.identity_id == people["biden"])).all()
        tombstone = session.scalars(select(AuditEntry).where(AuditEntry.action == "forget")).one()
    assert [m.message_id for m in kept] == [delivered.message_id]  # what was sent is history, nothing more goes
    assert pending and all(m.identity_id == people["obama"] for m in pending)
    assert not any("biden" in m.payload or "biden" in m.destination for m in pending)
    assert json.loads(tombstone.details)["undelivered_messages"] == about["biden"] - 1


def test_watchlist_scope_and_threshold(tmp_path: Path, data_dir: Path, engine: FaceEngine) -> None:
    probes = enrolment_tree(data_dir, tmp_path / "people")
    gallery = open_gallery(tmp_path, engine)
    enrol_folder(gallery, tmp_path / "people", OPTIONS)
    create_watchlist(gallery, "strict", purpose="test", actor="admin", threshold=0.8)  # the highest allowed
    add_member(gallery, "strict", "obama", actor="admin")
    obama, biden = probe_vector(engine, probes["obama"]), probe_vector(engine, probes["biden"])
    strict = search_embedding(gallery, obama, purpose="t", actor="t", watchlist="strict")
    assert strict.threshold == 0.8 and not strict.known and strict.matches[0].display_name == "obama"
    outside = search_embedding(gallery, biden, purpose="t", actor="t", watchlist="strict")
    assert all(m.display_name == "obama" for m in outside.matches) and not outside.known


def test_a_search_needs_a_purpose(tmp_path: Path, engine: FaceEngine) -> None:
    gallery = open_gallery(tmp_path, engine)
    with pytest.raises(GalleryError, match="purpose"):
        search_embedding(gallery, np.ones(512, np.float32) / np.sqrt(512), purpose="  ", actor="t")


def test_an_index_file_of_an_earlier_version_is_deleted_and_the_index_built_in_memory(
        tmp_path: Path, data_dir: Path, engine: FaceEngine, caplog: pytest.LogCaptureFixture) -> None:
    enrolment_tree(data_dir, tmp_path / "people")
    gallery = open_gallery(tmp_path, engine)
    enrol_folder(gallery, tmp_path / "people", OPTIONS)
    gallery.close()
    size = gallery.counts()[1]
    old_file = gallery.settings.data_dir / "index-arcface.faiss"  # it held every face in plaintext
    old_file.write_bytes(b"garbage" * 10)
    with caplog.at_level(logging.WARNING):
        reopened = open_gallery(tmp_path, engine)
    assert len(reopened.index) == size and not old_file.exists()
    assert not list(gallery.settings.data_dir.glob("*.faiss"))
    with reopened.db.session() as session:  # the database is untouched
        assert session.scalar(select(func.count()).select_from(FaceTemplate)) == size


def test_a_stale_index_is_repaired(tmp_path: Path, data_dir: Path, engine: FaceEngine,
                                   caplog: pytest.LogCaptureFixture) -> None:
    enrolment_tree(data_dir, tmp_path / "people")
    gallery = open_gallery(tmp_path, engine)
    enrol_folder(gallery, tmp_path / "people", OPTIONS)
    with gallery.db.session() as session:  # a row written by a run that died before saving its index
        session.execute(sa.delete(FaceTemplate).where(FaceTemplate.id == 1))
    with caplog.at_level(logging.WARNING):
        reopened = open_gallery(tmp_path, engine)
    assert 1 not in reopened.index and len(reopened.index) == reopened.counts()[1]


def test_a_long_running_gallery_picks_up_enrolments_and_deletions_made_elsewhere(
        tmp_path: Path, data_dir: Path, engine: FaceEngine, db_url: str) -> None:
    probes = enrolment_tree(data_dir, tmp_path / "people")
    running = open_gallery(tmp_path, engine, db_url)  # the pipeline's, say
    assert running.refresh() == (0, 0)
    elsewhere = open_gallery(tmp_path, engine, db_url)  # the dashboard's, in another process
    enrol_folder(elsewhere, tmp_path / "people", OPTIONS)
    probe = probe_vector(engine, probes["obama"])
    assert not search_embedding(running, probe, purpose="t", actor="t").known
    added, removed = running.refresh()
    assert added == elsewhere.counts()[1] and removed == 0
    assert search_embedding(running, probe, purpose="t", actor="t").matches[0].display_name == "obama"
    gone = forget(elsewhere, "obama", actor="dpo", reason="deletion request")
    assert running.refresh() == (0, len(gone.template_ids))
    result = search_embedding(running, probe, purpose="t", actor="t")
    assert all(m.display_name != "obama" for m in result.matches)
    assert running.refresh() == (0, 0)
