"""The shapes the API answers with, and the bodies it accepts.

Every time is a ``Moment``: read back from SQLite without its zone, it is
given UTC's, so each time in the JSON carries an offset. Every string a body
carries is one of ``facetrail.api.strings``' bounded, NUL-free types.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from facetrail.api.strings import Code, DoorState, Factor, Name, Text
from facetrail.store.models import as_utc

Moment = Annotated[datetime, AfterValidator(as_utc)]
"""A time in UTC with its zone (a naive time is taken to be UTC)."""


class IdentityOut(BaseModel):
    """An enrolled person."""

    id: int
    display_name: str
    templates: int
    watchlists: list[str]
    created_at: Moment


class TemplateOut(BaseModel):
    """One enrolled face template (the embedding itself is never served)."""

    id: int
    model_id: str
    quality: float
    source_name: str | None
    has_photo: bool
    created_at: Moment


class PhotoFaceOut(BaseModel):
    """One face of an uploaded photo: the number to send as ``face``, its box and its size."""

    index: int = Field(description="the face's number on the photo (send it as face=N to enrol this face)")
    box: tuple[int, int, int, int] = Field(description="x1, y1, x2, y2 in pixels of the photo")
    size_px: int = Field(description="face size in pixels (the quality floors' measure)")


class EnrolmentOut(BaseModel):
    """What enrolling one photo did."""

    identity_id: int | None
    outcome: str = Field(description="enrolled, no face, several faces, too low quality, duplicate image, unreadable")
    detail: str
    face: PhotoFaceOut | None = Field(None, description="the face that was enrolled")
    quality: float | None = Field(None, description="that face's quality score, 0-1 (stored with the template)")
    warning: str | None = Field(None, description="why the template may match less reliably (a small or blurred "
                                                  "face); enrolled all the same")


class WatchlistIn(BaseModel):
    """A new watchlist."""

    name: Name
    purpose: Text = Field(description="why this list exists (stored and audited)")
    threshold: float | None = Field(None, ge=-1, le=1, description="cosine similarity at or above which a face "
                                    "matches a member (not a confidence; arcface: calibrated 0.232)")
    false_match_rate: float | None = Field(None, gt=0, lt=1, description="instead of threshold: how often a "
                                           "stranger may match, e.g. 1e-4 (one stranger pair in 10,000)")
    reviewers_required: Literal[1, 2] = Field(1, description="2: two different people confirm each alert")
    expires_at: Moment | None = None


class WatchlistOut(BaseModel):
    """A watchlist and its member count."""

    id: int
    name: str
    purpose: str
    threshold: float | None
    reviewers_required: int
    expires_at: Moment | None
    members: int


class MatchOut(BaseModel):
    """One candidate of a search."""

    identity_id: int
    display_name: str
    score: float


class SearchOut(BaseModel):
    """A gallery search: known or unknown, and the candidates."""

    known: bool
    threshold: float
    matches: list[MatchOut]


class SightingOut(BaseModel):
    """One track on one camera."""

    id: int
    camera: str
    first_seen: Moment
    last_seen: Moment
    identity_id: int | None
    identity_name: str | None
    visitor_id: int | None
    score: float | None
    frames: int
    watchlist_hit: bool
    similarity: float | None = None


class EventOut(BaseModel):
    """An event and its review state."""

    id: int
    kind: str
    camera: str
    identity_id: int | None
    identity_name: str | None
    visitor_id: int | None
    watchlist_id: int | None
    watchlist_name: str | None
    score: float | None
    started_at: Moment
    ended_at: Moment | None
    state: str
    reviewers_required: int
    has_snapshot: bool
    has_face: bool = Field(False, description="GET /events/{id}/face serves the face crop of the best shot")
    has_clip: bool = Field(False, description="GET /events/{id}/clip serves the recording around the event")
    repeats: list[EventOut] = Field(
        default_factory=list,
        description="with group=visitor: the earlier events this one stands for (same kind, camera, person or "
                    "visitor, watchlist and state, each within window_s of the next), newest first")


class EventFilterIn(BaseModel):
    """Which pending events a bulk review touches; every field left out lets every pending event through."""

    model_config = ConfigDict(extra="forbid")

    kind: Name | None = None
    camera: Name | None = None
    person: Name | None = Field(None, description="an identity's id or name, or visitor:ID")
    watchlist: Name | None = Field(None, description="a watchlist's id or name")
    since: AwareDatetime | None = Field(None, description="events that started at or after this time")
    until: AwareDatetime | None = Field(None, description="events that started before this time")
    max_id: int | None = Field(None, ge=1, le=2**63 - 1,
                               description="only events up to this id (what the reviewer's page showed)")


class BulkReviewIn(BaseModel):
    """One verdict and one note for many events: their ids, or (dismiss only) a filter."""

    model_config = ConfigDict(extra="forbid")

    verdict: Literal["confirm", "dismiss"]
    note: Text | None = None
    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None = Field(None, min_length=1, max_length=1000)
    filter: EventFilterIn | None = Field(None, description="dismiss every pending event this matches (at most 1000)")


class SkippedOut(BaseModel):
    """An event a bulk review left alone, and why."""

    event_id: int
    reason: str


class BulkReviewOut(BaseModel):
    """What a bulk review did; each reviewed event has its own audit entry, all with this batch id."""

    batch: str
    reviewed: list[ReviewOut]
    skipped: list[SkippedOut]


class ReviewIn(BaseModel):
    """A reviewer's verdict."""

    verdict: Literal["confirm", "dismiss"]
    note: Text | None = None


class ReviewOut(BaseModel):
    """The event's state after the review."""

    event_id: int
    state: str
    confirmations: int
    required: int


class AuditOut(BaseModel):
    """One audit log entry."""

    id: int
    at: Moment
    actor: str
    action: str
    target: str
    purpose: str | None
    result_count: int | None


class LoginIn(BaseModel):
    """A dashboard login: the API key opens a session (a cookie)."""

    key: Name


class WhoOut(BaseModel):
    """The caller: key name and role."""

    name: str
    role: str


class CameraOut(BaseModel):
    """A camera: what the configuration says and what its pipeline last reported."""

    name: str
    configured: bool = Field(description="in the configuration this server was started with")
    source: str | None = Field(description="the detect input, credentials masked")
    detect_fps: float | None
    state: str = Field(description="connecting, connected, retrying, failed, finished, stopped; 'silent' when its "
                                   "pipeline stopped reporting; 'not running' when no pipeline has reported it")
    error: str | None
    attempts: int
    last_frame_at: Moment | None
    analysed_fps: float = Field(description="frames analysed per second over the last 10 s")
    target_fps: float | None = Field(None, description="the analysis rate its pipeline aims at (detect.fps)")
    dropped_fps: float = Field(0.0, description="frames dropped per second over the last 10 s because analysis "
                                                "did not keep up: more than 0 means the machine is overloaded")
    skipped_motion_fps: float = Field(0.0, description="frames skipped per second by the motion gate (nothing "
                                                       "moved), over the last 10 s")
    overloaded: bool = Field(False, description="dropping frames: this camera gets less than its target rate "
                                                "because the machine cannot keep up (each camera gets a fair share)")
    frames_analysed: int
    frames_skipped_motion: int
    frames_dropped: int
    frames_skipped_decoder: int = Field(0, description="frames its source skipped without decoding them")
    faces_in_frame: int
    frame_at: Moment | None = Field(description="when the latest frame (GET .../frame) was taken")
    faults: int = Field(0, description="errors in the camera's analysis, tracking or consumers in its pipeline's "
                                       "run; each is retried on the next frame, the other cameras go on")
    last_fault: str | None = Field(None, description="the latest such error: the part that failed and why")
    failing: list[str] = Field(default_factory=list, description="parts that failed several times in a row and "
                                                                 "have not recovered since")
    reported_at: Moment | None
    node: str | None = Field(None, description="on a cluster: the node running the camera (IP/node id)")
    moved_from: str | None = Field(None, description="on a cluster: the node that ran it before it moved in this "
                                                     "run (that node died or left)")
    moved_at: Moment | None = Field(None, description="when it moved")


class RetentionOut(BaseModel):
    """The retention in effect, where it comes from, and what is stored now."""

    source: str = Field(description="'configuration', 'last pipeline run' or 'defaults'")
    unknown_sightings_days: float
    known_sightings_days: float
    thumbnails_days: float
    events_days: float
    only_watchlist_hits: bool
    stored: dict[str, int] = Field(description="rows (or images) held now, per data class")
    oldest: dict[str, Moment | None] = Field(description="the oldest sighting and event held")
    last_deletion_at: Moment | None = Field(description="when a purge last deleted something (audit log)")


class PurgeOut(BaseModel):
    """What a purge removed, per data class."""

    counts: dict[str, int]
    identities_forgotten: int
    watchlists_expired: int


class DoorOut(BaseModel):
    """A configured door: its rule and the state its controller last reported."""

    name: str
    configured: bool = Field(description="in the configuration this server was started with")
    camera: str | None
    allow: list[str] = Field(description="watchlists whose members (with a recorded consent) may pass")
    hours: list[str]
    timezone: str | None
    second_factor: bool
    tailgating: str | None
    state: str | None = Field(description="open, closed, forced, ... as the controller last reported; None if never")
    state_source: str | None = Field(description="mqtt or http")
    state_at: Moment | None


DoorOutcome = Literal["grant", "deny", "no_decision", "pending"]


class DoorDecisionOut(BaseModel):
    """One door decision with its evidence."""

    id: int
    door: str
    camera: str
    outcome: DoorOutcome
    reason: str
    rule: str = Field(description="the door's rule as it was applied")
    identity_id: int | None
    identity_name: str | None
    score: float | None = Field(description="mean cosine over the consecutive matching shots")
    matched_shots: int
    liveness: str | None = Field(description="live, spoof or undecided")
    liveness_reason: str | None
    blinks: int | None
    depth_residual: float | None = Field(description="landmark motion a plane cannot explain (0 for a flat photo)")
    tailgating: bool
    others_present: int
    decided_at: Moment
    command: str | None = Field(description="sending, delivered, failed; None when nothing was sent")
    command_error: str | None
    command_attempts: int
    has_snapshot: bool


class FactorIn(BaseModel):
    """A PIN or card number a keypad or reader at the door read."""

    code: Code


class FactorOut(BaseModel):
    """Whether the code granted a pending decision at the door (its command follows within a second)."""

    granted: bool
    decision_id: int | None
    detail: str


class DoorStateIn(BaseModel):
    """A controller's report of the door's state."""

    state: DoorState = Field(description="open, closed, forced, ...")
    command_id: Code | None = Field(None, description="the command this report answers, if any")


class DoorStateOut(BaseModel):
    """The state kept for a door."""

    door: str
    state: str
    source: str
    command_id: str | None
    reported_at: Moment


class ConsentIn(BaseModel):
    """A person's consent to be recognised at a door, as recorded by an admin."""

    door: Name = Field(description="a door's name, or * for every door")
    method: Text = Field(description="how it was given, e.g. 'signed form 2026-114'")
    factor: Factor | None = Field(None,
                               description="the person's PIN or card number, if a door asks for a second factor; "
                                           "stored only as a salted hash")


class ConsentOut(BaseModel):
    """A recorded consent (the second factor is never shown)."""

    id: int
    identity_id: int
    door: str
    method: str
    recorded_by: str
    recorded_at: Moment
    has_second_factor: bool
    withdrawn_at: Moment | None
    withdrawn_by: str | None


class WithdrawalOut(BaseModel):
    """A withdrawn consent and what went with it."""

    consent: ConsentOut
    templates_removed: int = Field(description="face templates deleted (none while another consent is in force)")
    other_consents: int


class RenameIn(BaseModel):
    """A person's new display name."""

    display_name: Name
    purpose: Text = Field(description="why (stored in the audit log)")


class MergeIn(BaseModel):
    """Fold another identity into this one."""

    other_id: int = Field(ge=1, le=2**31 - 1, description="the identity that is merged in and then deleted")
    purpose: Text = Field(description="why, e.g. 'one resident enrolled twice' (stored in the audit log)")


class MergeOut(BaseModel):
    """What moved from the merged identity to the survivor."""

    survivor: IdentityOut
    merged_id: int
    templates: int
    negatives: int
    sightings: int
    events: int
    memberships: int = Field(description="watchlists the survivor joined")


class PhotosOut(BaseModel):
    """Photos added to a person: the templates made and each refused file's reason."""

    identity_id: int
    added: list[int]
    refused: list[EnrolmentOut]


class EventFaceIn(BaseModel):
    """Who the event's face is (or is not)."""

    identity_id: int | None = Field(None, ge=1, le=2**31 - 1,
                                    description="the person; for 'not', empty means the person the event named")
    purpose: Text = Field(description="why (stored in the audit log)")


class EventFaceOut(BaseModel):
    """The event's face now teaches the gallery: a template (this is X) or a negative example (not X)."""

    event_id: int
    identity_id: int
    template_id: int | None = None
    negative_example_id: int | None = None


class VisitorEnrolIn(BaseModel):
    """Enrol an unknown visitor from their best shots."""

    name: Name = Field(description="the person's name (an existing person of that name, else a new one)")
    purpose: Text = Field(description="why (stored in the audit log)")


class VisitorEnrolOut(BaseModel):
    """The identity the visitor became and the templates made from their sightings."""

    visitor_id: int
    identity_id: int
    templates: list[int]
