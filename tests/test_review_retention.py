"""Human review (four-eyes), retention per data class and forgetting, on real SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from facetrail.config.schema import RetentionConfig
from facetrail.events.review import ReviewError, review_event, review_many
from facetrail.store import audit
from facetrail.store.audit import verify_chain
from facetrail.store.db import Database
from facetrail.store.models import (
    AuditEntry,
    Event,
    EventReview,
    Identity,
    OutboxMessage,
    Sighting,
    Visitor,
    Watchlist,
    utcnow,
)
from facetrail.store.people import forget_identity
from facetrail.store.retention import RetentionPolicy, purge_data


def _event(db: Database, *, reviewers: int) -> int:
    with db.session() as session:
        event = Event(uid=f"ev-{reviewers}-{np.random.default_rng().integers(1 << 30)}", kind="watchlist_hit",
                      camera="door", started_at=utcnow(), state="pending", reviewers_required=reviewers)
        session.add(event)
        session.flush()
        return event.id


def test_single_reviewer_confirms(db_url: str) -> None:
    db = Database(db_url)
    event_id = _event(db, reviewers=1)
    with db.session() as session:
        outcome = review_event(session, event_id, reviewer="ana", verdict="confirm", note="it is him")
    assert outcome.state == "confirmed" and outcome.waiting == 0
    with db.session() as session:
        assert session.get(Event, event_id).state == "confirmed"  # type: ignore[union-attr]
        actions = list(session.scalars(select(AuditEntry.action).where(AuditEntry.target == f"event:{event_id}")))
        assert actions == ["event.confirm"]
        assert verify_chain(session).ok
    db.dispose()


def test_four_eyes_needs_two_different_reviewers(db_url: str) -> None:
    db = Database(db_url)
    event_id = _event(db, reviewers=2)
    with db.session() as session:
        first = review_event(session, event_id, reviewer="ana", verdict="confirm")
    assert first.state == "pending" and first.waiting == 1
    with pytest.raises(ReviewError, match="someone else"), db.session() as session:
        review_event(session, event_id, reviewer="ana", verdict="confirm")
    with db.session() as session:
        second = review_event(session, event_id, reviewer="ben", verdict="confirm", note="agree")
        assert second.state == "confirmed" and second.confirmations == 2
    with pytest.raises(ReviewError, match="already confirmed"), db.session() as session:
        review_event(session, event_id, reviewer="cem", verdict="dismiss")
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(EventReview)
                              .where(EventReview.event_id == event_id)) == 2
    db.dispose()


def test_one_dismissal_settles_a_four_eyes_event(db_url: str) -> None:
    db = Database(db_url)
    event_id = _event(db, reviewers=2)
    with db.session() as session:
        review_event(session, event_id, reviewer="ana", verdict="confirm")
        outcome = review_event(session, event_id, reviewer="ben", verdict="dismiss", note="different person")
    assert outcome.state == "dismissed"
    with pytest.raises(ReviewError, match="no event"), db.session() as session:
        review_event(session, 10_000_000, reviewer="ana", verdict="confirm")
    db.dispose()


def test_bulk_review_is_one_review_per_event_and_keeps_the_four_eyes_rule(db_url: str) -> None:
    db = Database(db_url)
    single, four_eyes, settled = _event(db, reviewers=1), _event(db, reviewers=2), _event(db, reviewers=1)
    with db.session() as session:
        review_event(session, settled, reviewer="cem", verdict="dismiss")
    with db.session() as session:
        outcome = review_many(session, [single, four_eyes, settled, single], reviewer="ana", verdict="confirm",
                              note="same face on all three")
    assert [(r.event_id, r.state) for r in outcome.reviewed] == [(single, "confirmed"), (four_eyes, "pending")]
    assert [(s.event_id, "already dismissed" in s.reason) for s in outcome.skipped] == [(settled, True)]
    with db.session() as session:
        again = review_many(session, [four_eyes], reviewer="ana", verdict="confirm")
        assert not again.reviewed and "someone else" in again.skipped[0].reason
        entries = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "event.confirm")))
        assert sorted(e.target for e in entries) == sorted([f"event:{single}", f"event:{four_eyes}"])
        assert {json.loads(e.details)["batch"] for e in entries} == {outcome.batch}
        assert {json.loads(e.details)["note"] for e in entries} == {"same face on all three"}
        assert verify_chain(session).ok
    with pytest.raises(ReviewError, match="needs the events' ids"), db.session() as session:
        review_many(session, [four_eyes], reviewer="ben", verdict="confirm", by_filter=True)
    db.dispose()


def _sighting(session: object, *, uid: str, age: timedelta, identity_id: int | None = None,
              visitor_id: int | None = None, hit: bool = False) -> Sighting:
    at = utcnow() - age
    sighting = Sighting(track_uid=uid, camera="door", identity_id=identity_id, visitor_id=visitor_id,
                        first_seen=at, last_seen=at, quality=0.8, frames=5, watchlist_hit=hit,
                        embedding=np.ones(4, np.float32).tobytes(), dim=4, model_id="m", thumbnail_jpeg=b"jpeg")
    session.add(sighting)  # type: ignore[attr-defined]
    return sighting


def test_retention_per_data_class(db_url: str) -> None:
    db = Database(db_url)
    day = timedelta(days=1)
    with db.session() as session:
        person = Identity(display_name="Known", created_by="t")
        visitor = Visitor(model_id="m", centroid=np.ones(4, np.float32).tobytes(), dim=4, sightings=1,
                          first_seen=utcnow() - 10 * day, last_seen=utcnow() - 10 * day)
        session.add_all([person, visitor])
        session.flush()
        _sighting(session, uid="old-unknown", age=10 * day, visitor_id=visitor.id)
        _sighting(session, uid="new-unknown", age=timedelta(hours=1))
        _sighting(session, uid="old-known", age=10 * day, identity_id=person.id)
        _sighting(session, uid="ancient-known", age=40 * day, identity_id=person.id)
        session.flush()
        session.add(Event(uid="old-event", kind="watchlist_hit", camera="door", identity_id=person.id,
                          started_at=utcnow() - 100 * day, state="confirmed", reviewers_required=1,
                          snapshot_jpeg=b"jpeg"))
        session.add(Event(uid="recent-event", kind="watchlist_hit", camera="door", identity_id=person.id,
                          started_at=utcnow() - 10 * day, state="pending", reviewers_required=1,
                          snapshot_jpeg=b"jpeg"))
        session.add(OutboxMessage(message_id="sent", channel="mqtt", destination="t", payload="{}",
                                  delivered_at=utcnow() - 2 * day))
        session.add(OutboxMessage(message_id="waiting", channel="mqtt", destination="t", payload="{}"))
    with db.session() as session:
        report = purge_data(session, RetentionPolicy())
    assert report.counts == {"sightings": 2, "visitors": 1, "events": 1, "thumbnails": 1, "snapshots": 1,
                             "messages": 1}
    with db.session() as session:
        left = dict(session.execute(select(Sighting.track_uid, Sighting.thumbnail_jpeg)).all())
        assert left == {"new-unknown": b"jpeg", "old-known": None}
        assert set(session.scalars(select(Event.uid))) == {"recent-event"}
        assert session.scalar(select(Event.snapshot_jpeg)) is None
        assert set(session.scalars(select(OutboxMessage.message_id))) == {"waiting"}
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "retention.purge")).one()
        assert entry.result_count == report.total
    with db.session() as session:
        assert purge_data(session, RetentionPolicy()).total == 0  # nothing left to do, nothing logged
        assert session.scalar(select(func.count()).select_from(AuditEntry)
                              .where(AuditEntry.action == "retention.purge")) == 1
    db.dispose()


def test_only_watchlist_hits_deletes_every_other_face(db_url: str) -> None:
    db = Database(db_url)
    with db.session() as session:
        _sighting(session, uid="hit", age=timedelta(minutes=10), hit=True)
        _sighting(session, uid="passer-by", age=timedelta(minutes=10))
        _sighting(session, uid="still-walking", age=timedelta(seconds=5))
    with db.session() as session:
        purge_data(session, RetentionPolicy(only_watchlist_hits=True))
    with db.session() as session:
        assert set(session.scalars(select(Sighting.track_uid))) == {"hit", "still-walking"}
    db.dispose()


def test_forgetting_removes_sightings_events_and_reviews(db_url: str) -> None:
    db = Database(db_url)
    with db.session() as session:
        person = Identity(display_name="Leaving", created_by="t")
        other = Identity(display_name="Staying", created_by="t")
        session.add_all([person, other])
        session.flush()
        sighting = _sighting(session, uid="s1", age=timedelta(hours=1), identity_id=person.id, hit=True)
        _sighting(session, uid="s2", age=timedelta(hours=1), identity_id=other.id)
        session.flush()
        event = Event(uid="e1", kind="watchlist_hit", camera="door", identity_id=person.id, sighting_id=sighting.id,
                      started_at=utcnow(), state="pending", reviewers_required=1)
        session.add(event)
        session.flush()
        session.add(EventReview(event_id=event.id, reviewer="ana", decision="confirm"))
        person_id = person.id
    with db.session() as session:
        forgotten = forget_identity(session, person_id, actor="dpo", reason="deletion request")
    assert (forgotten.sightings, forgotten.events) == (1, 1)
    with db.session() as session:
        assert set(session.scalars(select(Sighting.track_uid))) == {"s2"}
        assert session.scalar(select(func.count()).select_from(Event)) == 0
        assert session.scalar(select(func.count()).select_from(EventReview)) == 0
        assert session.scalar(select(func.count()).select_from(Watchlist)) == 0
    db.dispose()


def test_facetrail_purge_applies_the_last_runs_retention_to_video_data_and_audits_it(db_url: str,
                                                                                     tmp_path: Path) -> None:
    day = timedelta(days=1)
    db = Database(db_url)
    with db.session() as session:
        # The last pipeline run kept events 30 days (the default is 90): `facetrail purge` must apply that.
        audit.record(session, actor="pipeline", action="run.start", target="cameras:door", purpose="test",
                     details={"retention": dataclasses.asdict(RetentionConfig(events_days=30))})
        person = Identity(display_name="Known", created_by="t")
        leaver = Identity(display_name="Leaver", created_by="t", retain_until=utcnow() - day)
        session.add_all([person, leaver])
        session.flush()
        _sighting(session, uid="old-unknown", age=10 * day)
        _sighting(session, uid="new-unknown", age=timedelta(hours=1))
        _sighting(session, uid="old-known", age=10 * day, identity_id=person.id)
        for uid, age in (("old-event", 40 * day), ("recent-event", 10 * day)):
            session.add(Event(uid=uid, kind="watchlist_hit", camera="door", identity_id=person.id,
                              started_at=utcnow() - age, state="pending", reviewers_required=1,
                              snapshot_jpeg=b"jpeg"))
    db.dispose()
    purged = subprocess.run([sys.executable, "-m", "facetrail.cli.main", "purge", "--data", str(tmp_path / "data"),
                             "--db", db_url, "--actor", "cli-test"], capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert purged.returncode == 0, purged.stderr
    assert "retention (last pipeline run)" in purged.stdout and "1 identity past retention" in purged.stdout
    db = Database(db_url)
    with db.session() as session:
        kept = {uid: blob and blob[:4] for uid, blob in session.execute(select(Sighting.track_uid,
                                                                               Sighting.thumbnail_jpeg))}
        assert kept == {"new-unknown": b"FTE1", "old-known": None}  # kept, and sealed when the gallery opened
        assert dict(session.execute(select(Event.uid, Event.snapshot_jpeg)).all()) == {"recent-event": None}
        assert set(session.scalars(select(Identity.display_name))) == {"Known"}
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "retention.purge")).one()
        assert (entry.actor, entry.result_count) == ("cli-test", 5)
        assert json.loads(entry.details) == {"sightings": 1, "events": 1, "thumbnails": 1, "snapshots": 1,
                                             "identities": 1}
        assert verify_chain(session).ok
    db.dispose()
