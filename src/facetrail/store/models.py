"""Tables of facetrail's memory.

No column stores any of the sensitive categories DESIGN.md's "Lines facetrail
does not cross" names, and there is no free-form attribute store (key/value table or JSON blob on a person) that
could hold them: what is kept about a person is a display name, an optional
external reference, operator notes, face templates and watchlist membership.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Timezone-aware current time in UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken to be UTC already.

    SQLite hands datetimes back without their zone, so every one read, written
    or compared goes through here for the comparisons to hold.
    """
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every facetrail table."""


class Identity(Base):
    """A person facetrail can recognise. ``retain_until``: forgotten by the purge after this time."""

    __tablename__ = "identities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200), index=True)
    external_ref: Mapped[str | None] = mapped_column(String(200), unique=True)
    notes: Mapped[str | None] = mapped_column(Text)
    retain_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))

    templates: Mapped[list[FaceTemplate]] = relationship(
        back_populates="identity", cascade="all, delete-orphan", passive_deletes=True)


class FaceTemplate(Base):
    """One enrolled face: its embedding (float32 bytes) and where it came from."""

    __tablename__ = "face_templates"
    __table_args__ = (UniqueConstraint("image_sha256", "model_id", name="uq_template_image_model"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    dim: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[str] = mapped_column(String(200), index=True)
    quality: Mapped[float] = mapped_column(Float)
    image_sha256: Mapped[str] = mapped_column(String(64))
    source_name: Mapped[str | None] = mapped_column(String(500))
    thumbnail_jpeg: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    identity: Mapped[Identity] = relationship(back_populates="templates")


class Watchlist(Base):
    """A named list with a stated purpose, its own match threshold and an expiry date."""

    __tablename__ = "watchlists"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    purpose: Mapped[str] = mapped_column(Text)
    threshold: Mapped[float | None] = mapped_column(Float)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # 2: an alert counts as confirmed only after two different people confirmed it (four-eyes rule).
    reviewers_required: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class WatchlistMember(Base):
    """Membership of an identity in a watchlist."""

    __tablename__ = "watchlist_members"

    watchlist_id: Mapped[int] = mapped_column(
        ForeignKey("watchlists.id", ondelete="CASCADE"), primary_key=True)
    identity_id: Mapped[int] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True, index=True)
    added_by: Mapped[str] = mapped_column(String(200))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NegativeExample(Base):
    """A face an operator said is NOT this identity; it stops that face (and near copies) matching it."""

    __tablename__ = "negative_examples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    dim: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[str] = mapped_column(String(200))
    image_sha256: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """One accountable action. Append-only; ``entry_hash`` chains each row to the one before."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str | None] = mapped_column(Text)
    result_count: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)


_BIG_ID = BigInteger().with_variant(Integer, "sqlite")


class Visitor(Base):
    """An unknown face seen more than once gets one anonymous id; never a name without an operator."""

    __tablename__ = "visitors"

    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True)
    model_id: Mapped[str] = mapped_column(String(200))
    centroid: Mapped[bytes] = mapped_column(LargeBinary)  # float32, unit length
    dim: Mapped[int] = mapped_column(Integer)
    sightings: Mapped[int] = mapped_column(Integer, default=1)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Sighting(Base):
    """One track on one camera: who (identity or anonymous visitor), when, and its best shot."""

    __tablename__ = "sightings"

    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True)
    track_uid: Mapped[str] = mapped_column(String(120), unique=True)
    camera: Mapped[str] = mapped_column(String(200), index=True)
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    visitor_id: Mapped[int | None] = mapped_column(ForeignKey("visitors.id", ondelete="SET NULL"), index=True)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    score: Mapped[float | None] = mapped_column(Float)  # similarity to the identity, when named
    quality: Mapped[float] = mapped_column(Float)
    frames: Mapped[int] = mapped_column(Integer, default=1)
    watchlist_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)  # best shot's, for search --history
    dim: Mapped[int | None] = mapped_column(Integer)
    model_id: Mapped[str | None] = mapped_column(String(200))
    thumbnail_jpeg: Mapped[bytes | None] = mapped_column(LargeBinary)


class Event(Base):
    """Something a person should look at: a watchlist hit, an unknown visitor, someone seen again."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True)
    uid: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    camera: Mapped[str] = mapped_column(String(200))
    sighting_id: Mapped[int | None] = mapped_column(ForeignKey("sightings.id", ondelete="SET NULL"), index=True)
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    visitor_id: Mapped[int | None] = mapped_column(ForeignKey("visitors.id", ondelete="SET NULL"))
    watchlist_id: Mapped[int | None] = mapped_column(ForeignKey("watchlists.id", ondelete="SET NULL"))
    score: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    snapshot_jpeg: Mapped[bytes | None] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    reviewers_required: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EventReview(Base):
    """One person's verdict on an event (confirm or dismiss), with a note."""

    __tablename__ = "event_reviews"
    __table_args__ = (UniqueConstraint("event_id", "reviewer", name="uq_review_event_reviewer"),)

    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    reviewer: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OutboxMessage(Base):
    """A message waiting for delivery (MQTT or webhook), written in the transaction that caused it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    channel: Mapped[str] = mapped_column(String(16))  # "mqtt" or "webhook"
    destination: Mapped[str] = mapped_column(String(500))  # MQTT topic or webhook name
    payload: Mapped[str] = mapped_column(Text)
    retain: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    # The person the message is about (no foreign key: delivered rows outlive nothing, and forget deletes the
    # undelivered ones itself, so a name or face is never sent after the person was forgotten).
    identity_id: Mapped[int | None] = mapped_column(Integer, index=True)


class ApiKey(Base):
    """A key for the REST API: its role, and only a hash of the secret (the key is shown once)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # admin, operator or viewer
    prefix: Mapped[str] = mapped_column(String(16), unique=True)  # public part, to find the row
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebSession(Base):
    """A dashboard login: a hash of the cookie's token, the key it was opened with, and when it ends."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class CameraState(Base):
    """A camera's last reported status, written by the pipeline that reads it (one row per camera).

    The API and the dashboard read it from here, so they show cameras that a
    pipeline on another process or machine is running.
    """

    __tablename__ = "camera_states"

    camera: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(1000))  # credentials masked
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_frame_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    analysed_fps: Mapped[float] = mapped_column(Float, default=0.0)
    frames_analysed: Mapped[int] = mapped_column(Integer, default=0)
    frames_skipped_motion: Mapped[int] = mapped_column(Integer, default=0)
    frames_dropped: Mapped[int] = mapped_column(Integer, default=0)
    # Rates per second over the reader's window, beside the rate asked for: dropping means overloaded.
    target_fps: Mapped[float | None] = mapped_column(Float)
    dropped_fps: Mapped[float] = mapped_column(Float, default=0.0)
    skipped_motion_fps: Mapped[float] = mapped_column(Float, default=0.0)
    frames_skipped_decoder: Mapped[int] = mapped_column(Integer, default=0)  # skipped by the source, not decoded
    faces_in_frame: Mapped[int] = mapped_column(Integer, default=0)
    frame_jpeg: Mapped[bytes | None] = mapped_column(LargeBinary)  # latest analysed frame, faces boxed
    frame_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    faults: Mapped[int] = mapped_column(Integer, default=0)  # errors in its stages and consumers this run
    last_fault: Mapped[str | None] = mapped_column(Text)
    failing: Mapped[str | None] = mapped_column(String(500))  # parts failing now, comma-separated
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class DoorConsent(Base):
    """A resident's recorded consent to be recognised at a door: who recorded it, when, how; and its withdrawal.

    ``door`` is a door's name, or ``*`` for every door. The optional second
    factor (a PIN or card number) is stored only as a salted hash.
    """

    __tablename__ = "door_consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    door: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(Text)  # how it was given, e.g. "signed form 2026-114"
    recorded_by: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    factor_hash: Mapped[str | None] = mapped_column(String(200))
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    withdrawn_by: Mapped[str | None] = mapped_column(String(200))


class DoorDecisionRecord(Base):
    """One door decision with its evidence: the best shot, the scores, the liveness signals, the rule, the command."""

    __tablename__ = "door_decisions"

    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True)
    door: Mapped[str] = mapped_column(String(200), index=True)
    camera: Mapped[str] = mapped_column(String(200))
    track_uid: Mapped[str] = mapped_column(String(120))
    outcome: Mapped[str] = mapped_column(String(16), index=True)  # grant, deny, no_decision
    reason: Mapped[str] = mapped_column(Text)
    rule: Mapped[str] = mapped_column(Text)  # the door's rule as it was applied
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    score: Mapped[float | None] = mapped_column(Float)
    matched_shots: Mapped[int] = mapped_column(Integer, default=0)
    liveness: Mapped[str | None] = mapped_column(String(16))  # live, spoof, undecided
    liveness_reason: Mapped[str | None] = mapped_column(Text)
    blinks: Mapped[int | None] = mapped_column(Integer)
    depth_residual: Mapped[float | None] = mapped_column(Float)
    tailgating: Mapped[bool] = mapped_column(Boolean, default=False)
    others_present: Mapped[int] = mapped_column(Integer, default=0)
    snapshot_jpeg: Mapped[bytes | None] = mapped_column(LargeBinary)
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    command: Mapped[str | None] = mapped_column(String(16))  # delivered, failed, or None (nothing sent)
    command_error: Mapped[str | None] = mapped_column(Text)
    command_attempts: Mapped[int] = mapped_column(Integer, default=0)


class DoorStateRecord(Base):
    """The latest state a door's controller reported (open, closed, forced, ...), over MQTT or the API."""

    __tablename__ = "door_states"

    door: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(8))  # mqtt or http
    command_id: Mapped[str | None] = mapped_column(String(64))  # the command it answers, if any
    reported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DispatchLeaseRecord(Base):
    """Who may drain the outbox (SQLite; PostgreSQL uses an advisory lock): the holder renews ``expires_at``."""

    __tablename__ = "dispatch_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CameraPlacement(Base):
    """Where a cluster runs a camera, where it ran before (a move), and how far its file has been read.

    ``position_s`` is the media time of the last frame whose sightings and events are stored (the camera's
    checkpoint, NULL once the file was read to its end); ``clock_origin`` is the wall time its media time 0
    stands for, so a resumed file stamps its frames as the first run did.
    """

    __tablename__ = "camera_placements"

    camera: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32))
    node: Mapped[str] = mapped_column(String(200))
    moved_from: Mapped[str | None] = mapped_column(String(200))
    moved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    position_s: Mapped[float | None] = mapped_column(Float)
    clock_origin: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DataKey(Base):
    """One owner's data key (an identity, an unknown sighting or a visitor), wrapped by the master key.

    Deleting the row is what makes the owner's sealed faces unreadable (``store/crypto.py``).
    """

    __tablename__ = "data_keys"
    __table_args__ = (UniqueConstraint("owner_kind", "owner_id", name="uq_data_key_owner"),
                      {"sqlite_autoincrement": True})  # an id is never reused for another key

    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True)
    owner_kind: Mapped[str] = mapped_column(String(16))  # identity, sighting or visitor
    owner_id: Mapped[int] = mapped_column(BigInteger)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)  # nonce + AES-GCM(master key, data key, owner)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
