"""The configuration file's schema: every field with a title, a description and its bounds.

Names follow Frigate where the idea is the same (``cameras``, ``inputs``,
``roles``, ``detect.fps``, ``min_area``, ``recognition_threshold``,
``unknown_score``), so a Frigate user reads a facetrail file at first sight.
Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from facetrail.config.doors import DoorConfig
from facetrail.video.sources import is_stream

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Every kind of event, plus "review": a person confirmed or dismissed an event (of any kind).
EventKind = Literal["watchlist_hit", "unknown_visitor", "seen_again", "tailgating", "door_forced",
                    "door_command_failed", "review"]
Role = Literal["detect", "record"]
ALL_EVENTS: tuple[EventKind, ...] = get_args(EventKind)
DETECT: Role = "detect"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DatabaseConfig(_Strict):
    """Where facetrail keeps its records."""

    url: str | None = Field(None, title="Database URL",
                            description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db. Empty: the SQLite "
                                        "file facetrail.db in data_dir.")


class DetectorConfig(_Strict):
    """The face detector."""

    input_size: int = Field(640, ge=160, le=1920, multiple_of=32, title="Detector input size",
                            description="Frames are letterboxed into this square (pixels); larger finds smaller "
                                        "faces and costs more.")
    score_threshold: float = Field(0.5, gt=0, lt=1, title="Detection score threshold",
                                   description="Faces the detector is less sure of than this are ignored.")


class FaceRecognitionConfig(_Strict):
    """When a face is recognised, and when it is an unknown visitor."""

    min_area: int = Field(1600, ge=0, title="Minimum face area",
                          description="Face box area in pixels² below which a face is tracked but not recognised.")
    min_quality: float = Field(0.25, ge=0, le=1, title="Minimum quality",
                               description="Quality score (0-1: size, sharpness, pose) a shot needs to be embedded.")
    recognition_threshold: float | None = Field(
        None, ge=-1, le=1, title="Recognition threshold",
        description="Cosine similarity at or above which a person is named. Empty: the recogniser's calibrated "
                    "threshold.")
    unknown_score: float | None = Field(
        None, ge=-1, le=1, title="Unknown score",
        description="At or below this similarity a face is an unknown visitor; between this and the recognition "
                    "threshold it is uncertain (neither). Empty: 0.8 x the recognition threshold.")
    low_light: bool = Field(True, title="Low-light enhancement",
                            description="Brighten dark frames (CLAHE and gamma) before detection; infrared stays grey.")

    @model_validator(mode="after")
    def _ordered(self) -> FaceRecognitionConfig:
        named, unknown = self.recognition_threshold, self.unknown_score
        if named is not None and unknown is not None and unknown > named:
            raise ValueError(f"unknown_score ({unknown}) must not be above recognition_threshold ({named})")
        return self


class FaceRecognitionOverrides(_Strict):
    """Per-camera changes to the global face_recognition settings."""

    min_area: int | None = Field(None, ge=0, title="Minimum face area", description="Overrides face_recognition.")
    min_quality: float | None = Field(None, ge=0, le=1, title="Minimum quality",
                                      description="Overrides face_recognition.")
    recognition_threshold: float | None = Field(None, ge=-1, le=1, title="Recognition threshold",
                                                description="Overrides face_recognition.")
    unknown_score: float | None = Field(None, ge=-1, le=1, title="Unknown score",
                                        description="Overrides face_recognition.")
    low_light: bool | None = Field(None, title="Low-light enhancement", description="Overrides face_recognition.")


class TrackingConfig(_Strict):
    """How faces are followed from frame to frame, and when a track is embedded."""

    max_lost_s: float = Field(1.5, gt=0, le=60, title="Lost after",
                              description="A track not seen for this many seconds is no longer matched by position.")
    rejoin_s: float = Field(3.0, ge=0, le=60, title="Re-join window",
                            description="A new track whose face matches a track lost at most this long ago "
                                        "continues it (a person hidden for a moment).")
    rejoin_similarity: float = Field(0.35, ge=-1, le=1, title="Re-join similarity",
                                     description="Cosine similarity a re-joined face needs.")
    best_shots: int = Field(3, ge=1, le=20, title="Best shots kept", description="Best shots kept per track.")
    max_embeddings: int = Field(6, ge=1, le=50, title="Embeddings per track",
                                description="A track is embedded at most this many times.")
    reembed_margin: float = Field(0.1, ge=0, le=1, title="Re-embed margin",
                                  description="A new shot is embedded when its quality beats the best embedded "
                                              "one by this much.")
    decision: Literal["aggregate", "vote"] = Field(
        "aggregate", title="Decision", description="aggregate: match the quality-weighted mean of a track's "
                                                   "embeddings; vote: a strict majority of its shots must agree.")


class UnknownsConfig(_Strict):
    """Anonymous ids for unknown visitors."""

    enabled: bool = Field(True, title="Cluster unknowns",
                          description="Give unknown faces an anonymous visitor id that is kept when they return.")
    cluster_threshold: float | None = Field(None, ge=-1, le=1, title="Cluster threshold",
                                            description="Similarity for the same visitor. Empty: 0.4, or the "
                                                        "recognition threshold if that is higher.")
    window_days: float = Field(7, gt=0, title="Window",
                               description="Visitors not seen for this many days get a new id when they return.")


class EventsConfig(_Strict):
    """Which rules raise events."""

    watchlist_hit: bool = Field(True, title="Watchlist hits",
                                description="Event when someone on an active watchlist is recognised above the "
                                            "watchlist's threshold.")
    unknown_visitor: bool = Field(False, title="Unknown visitors", description="Event when an unknown face is seen.")
    seen_again: bool = Field(False, title="Seen again", description="Event when an unknown visitor comes back.")
    seen_again_after_s: float = Field(300, ge=0, title="Seen again after",
                                      description="A visit counts as 'again' only after this many seconds away.")
    snapshot_quality: int = Field(85, ge=10, le=100, title="Snapshot JPEG quality",
                                  description="JPEG quality of evidence snapshots and thumbnails.")


class MqttConfig(_Strict):
    """MQTT delivery, in Frigate's topic style."""

    enabled: bool = Field(False, title="Enabled", description="Publish availability, events and presence over MQTT.")
    host: str = Field("127.0.0.1", title="Host", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, title="Port", description="Broker port.")
    user: str | None = Field(None, title="User", description="User name, if the broker needs one.")
    password: str | None = Field(None, title="Password",
                                 description="Password; write {FACETRAIL_MQTT_PASSWORD} to take it from the "
                                             "environment.")
    topic_prefix: str = Field("facetrail", title="Topic prefix", description="First level of every topic.")
    client_id: str = Field("facetrail", title="Client id", description="MQTT client id.")
    qos: Literal[0, 1, 2] = Field(1, title="QoS", description="MQTT quality of service for events.")
    tls: bool = Field(False, title="TLS", description="Connect with TLS.")

    @field_validator("topic_prefix")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not value or any(c in value for c in "+#") or value.startswith("/") or value.endswith("/"):
            raise ValueError("a topic prefix has no +, # or leading/trailing /")
        return value


class WebhookConfig(_Strict):
    """A receiver of signed webhooks (Standard Webhooks)."""

    name: str = Field(title="Name", description="Short name of the receiver (letters, digits, - and _).")
    url: str = Field(title="URL", description="http(s) address the events are POSTed to.")
    secret: str = Field(title="Secret",
                        description="Signing secret, whsec_ followed by base64; write {FACETRAIL_WEBHOOK_SECRET} "
                                    "to take it from the environment.")
    events: list[EventKind] = Field(
        default_factory=lambda: list(ALL_EVENTS), title="Events",
        description="Which kinds of event this receiver gets (new, update, end and the reviews of each): "
                    "watchlist_hit, unknown_visitor, seen_again, tailgating, door_forced, door_command_failed; "
                    "review: every confirmation or dismissal, whatever the event's kind. Default: all of them.")
    timeout_s: float = Field(5, gt=0, le=120, title="Timeout", description="Seconds to wait for the receiver.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError("use lower-case letters, digits, - and _")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("a webhook URL starts with http:// or https://")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        body = value.removeprefix("whsec_")
        try:
            if not base64.b64decode(body, validate=True):
                raise ValueError
        except ValueError:
            raise ValueError("a Standard Webhooks secret is whsec_ followed by base64") from None
        return value


class RetentionConfig(_Strict):
    """How long each class of data is kept; the purge runs on its own and is logged."""

    unknown_sightings_days: float = Field(7, gt=0, title="Unknown sightings",
                                          description="Days sightings of unknown faces (and visitor ids) are kept.")
    known_sightings_days: float = Field(30, gt=0, title="Known sightings",
                                        description="Days sightings of enrolled people are kept.")
    thumbnails_days: float = Field(7, gt=0, title="Thumbnails",
                                   description="Days best-shot thumbnails and event snapshots keep their image.")
    events_days: float = Field(90, gt=0, title="Events", description="Days events and their reviews are kept.")
    only_watchlist_hits: bool = Field(False, title="Only watchlist hits",
                                      description="Keep only sightings that hit a watchlist: every other face is "
                                                  "deleted when its track ends, and no visitor ids are made.")
    purge_interval_s: float = Field(3600, ge=10, title="Purge interval", description="Seconds between purges.")


class CameraInput(_Strict):
    """One input of a camera."""

    path: str = Field(title="Path", description="Video file, image folder, or stream URL (rtsp://, http://...).")
    roles: list[Role] = Field(default_factory=lambda: [DETECT], title="Roles",
                                                     description="detect: faces are found in this input.")
    input_args: dict[str, str] = Field(default_factory=dict, title="Input arguments",
                                       description="FFmpeg options, e.g. rtsp_transport: tcp.")
    loop: bool = Field(False, title="Loop", description="Files: start again at the end.")
    realtime: bool | None = Field(None, title="Real time",
                                  description="Read at the source's own speed and drop frames when behind. Empty: "
                                              "yes for streams, no for files (every sampled frame is analysed).")

    @field_validator("input_args", mode="before")
    @classmethod
    def _as_text(cls, value: object) -> object:
        # FFmpeg takes every option as text; `timeout: 5000000` in YAML is a number.
        if isinstance(value, dict):
            return {k: str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, int | float) else v
                    for k, v in value.items()}
        return value

    @property
    def is_stream(self) -> bool:
        """True for network inputs."""
        return is_stream(self.path)


class DetectConfig(_Strict):
    """How often, and at what size, a camera is analysed."""

    fps: float = Field(5, gt=0, le=60, title="Analysis rate", description="Frames analysed per second.")
    width: int | None = Field(None, ge=64, le=7680, title="Width", description="Resize to this width first.")
    height: int | None = Field(None, ge=64, le=4320, title="Height", description="Resize to this height first.")


class MotionConfig(_Strict):
    """The motion gate: detection is skipped where nothing moved."""

    enabled: bool = Field(True, title="Enabled", description="Skip detection on frames without motion.")
    threshold: int = Field(25, ge=1, le=255, title="Pixel threshold",
                           description="Grey-level change that counts as motion.")
    min_changed: float = Field(0.002, ge=0, le=1, title="Changed fraction",
                               description="Fraction of pixels that must change.")
    downscale_width: int = Field(160, ge=16, le=1920, title="Comparison width",
                                 description="Frames are compared at this width.")
    max_skip_s: float = Field(2.0, gt=0, title="Heartbeat",
                              description="Analyse one frame at least this often even without motion.")


class ReconnectConfig(_Strict):
    """Retrying a camera that fails."""

    initial_s: float = Field(1, gt=0, title="First wait", description="Seconds before the first retry.")
    max_s: float = Field(30, gt=0, title="Longest wait", description="Back-off never waits longer than this.")
    factor: float = Field(2, ge=1, title="Factor", description="Each failed retry waits this much longer.")
    max_attempts: int | None = Field(None, ge=1, title="Attempts",
                                     description="Give up (state failed) after this many failures in a row. Empty: "
                                                 "retry forever.")


    @model_validator(mode="after")
    def _bounds(self) -> ReconnectConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must not be below initial_s ({self.initial_s})")
        return self

class CameraConfig(_Strict):
    """One camera."""

    enabled: bool = Field(True, title="Enabled", description="Read this camera.")
    inputs: list[CameraInput] = Field(min_length=1, title="Inputs",
                                      description="The camera's inputs; exactly one has the detect role.")
    detect: DetectConfig = Field(default_factory=DetectConfig, title="Detect", description="Analysis rate and size.")
    motion: MotionConfig = Field(default_factory=MotionConfig, title="Motion", description="The motion gate.")
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig, title="Reconnect",
                                       description="Back-off when the camera fails.")
    timeout_s: float = Field(10, gt=0, le=300, title="Timeout", description="Seconds to open or read a stream.")
    face_recognition: FaceRecognitionOverrides | None = Field(None, title="Face recognition",
                                                              description="Changes to the global settings for this "
                                                                          "camera.")

    @field_validator("inputs")
    @classmethod
    def _one_detect(cls, inputs: list[CameraInput]) -> list[CameraInput]:
        count = sum("detect" in i.roles for i in inputs)
        if count != 1:
            raise ValueError(f"exactly one input needs the detect role (found {count})")
        return inputs

    @property
    def detect_input(self) -> CameraInput:
        """The input faces are detected in."""
        return next(i for i in self.inputs if "detect" in i.roles)


class FacetrailConfig(_Strict):
    """A facetrail installation: cameras, recognition, events, delivery and retention."""

    purpose: str = Field(title="Purpose",
                         description="Why these cameras are watched; recorded in the audit log with every run.")
    data_dir: Path = Field(Path("facetrail-data"), title="Data folder",
                           description="SQLite file and index; relative to this file's folder.")
    database: DatabaseConfig = Field(default_factory=DatabaseConfig, title="Database",
                                     description="Another database instead of SQLite.")
    recogniser: Literal["arcface", "dlib"] = Field("arcface", title="Recogniser",
                                                   description="arcface (w600k_mbf, default) or dlib (permissive).")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, title="Detector", description="Face detector.")
    face_recognition: FaceRecognitionConfig = Field(default_factory=FaceRecognitionConfig, title="Face recognition",
                                                    description="Thresholds and quality bar, for every camera.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, title="Tracking", description="Face tracking.")
    unknowns: UnknownsConfig = Field(default_factory=UnknownsConfig, title="Unknown visitors",
                                     description="Anonymous visitor ids.")
    events: EventsConfig = Field(default_factory=EventsConfig, title="Events", description="Event rules.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, title="MQTT", description="MQTT delivery.")
    webhooks: list[WebhookConfig] = Field(default_factory=list, title="Webhooks",
                                          description="Receivers of signed webhooks.")
    retention: RetentionConfig = Field(default_factory=RetentionConfig, title="Retention",
                                       description="How long data is kept.")
    cameras: dict[str, CameraConfig] = Field(min_length=1, title="Cameras",
                                             description="Cameras by name (lower-case letters, digits, - and _).")
    doors: dict[str, DoorConfig] = Field(default_factory=dict, title="Doors",
                                         description="Doors by name: a camera, who may pass, and how.")

    @field_validator("purpose")
    @classmethod
    def _purpose(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("say why these cameras are watched")
        return value.strip()

    @model_validator(mode="after")
    def _overrides_consistent(self) -> FacetrailConfig:
        for name in self.cameras:
            try:
                self.camera_recognition(name)
            except ValueError as error:
                raise ValueError(f"camera {name}: face_recognition overrides: {error}") from None
        return self

    @field_validator("cameras")
    @classmethod
    def _camera_names(cls, cameras: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        for name in cameras:
            if not SLUG.match(name):
                raise ValueError(f"camera name {name!r}: use lower-case letters, digits, - and _")
        return cameras

    @model_validator(mode="after")
    def _doors_watch_cameras(self) -> FacetrailConfig:
        for name, door in self.doors.items():
            if not SLUG.match(name):
                raise ValueError(f"door name {name!r}: use lower-case letters, digits, - and _")
            if door.camera not in self.cameras:
                raise ValueError(f"door {name}: no camera called {door.camera!r} (cameras: "
                                 f"{', '.join(sorted(self.cameras))})")
        return self

    @model_validator(mode="after")
    def _unique_webhooks(self) -> FacetrailConfig:
        names = [hook.name for hook in self.webhooks]
        if len(names) != len(set(names)):
            raise ValueError("webhook names must be unique")
        return self

    def camera_recognition(self, name: str) -> FaceRecognitionConfig:
        """The face_recognition settings of one camera, its overrides applied."""
        overrides = self.cameras[name].face_recognition
        if overrides is None:
            return self.face_recognition
        changes = {k: v for k, v in overrides.model_dump().items() if v is not None}
        return FaceRecognitionConfig.model_validate({**self.face_recognition.model_dump(), **changes})
