"""The configuration file's schema: every field with a title, a description and its bounds.

Names follow Frigate where the idea is the same (``cameras``, ``inputs``,
``roles``, ``detect.fps``, ``min_area``, ``recognition_threshold``,
``unknown_score``), so a Frigate user reads a facetrail file at first sight.
Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic.fields import FieldInfo

from facetrail.config.cluster import ClusterSettings
from facetrail.config.doors import DoorConfig
from facetrail.cores import usable_cores
from facetrail.events.messages import PublicLinks
from facetrail.events.mqtt import MqttSettings
from facetrail.events.rules import EventRules
from facetrail.events.webhooks import WebhookTarget
from facetrail.gallery.backends import IndexBackendSettings
from facetrail.store.retention import RetentionPolicy
from facetrail.track.bestshot import ShotGate, ShotSelection
from facetrail.track.decision import DecisionMethod, RecognitionThresholds
from facetrail.track.tracker import TrackLifetimes
from facetrail.track.unknowns import UnknownsSettings
from facetrail.video.camera import DEFAULT_TIMEOUT_S, DetectSettings, ReconnectSettings, StreamTimeout, VideoInput
from facetrail.video.motion import MotionSettings
from facetrail.video.record_stream import RecordStreamSettings
from facetrail.video.recording import ClipSettings, LiveViewSettings
from facetrail.vision.detector import DetectorSettings
from facetrail.vision.lowlight import ENHANCE_DARK_FRAMES, LowLightSwitch
from facetrail.vision.registry import RECOGNISERS

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Every kind of event, plus "review": a person confirmed or dismissed an event (of any kind).
EventKind = Literal["watchlist_hit", "unknown_visitor", "seen_again", "tailgating", "door_forced",
                    "door_command_failed", "review"]
Role = Literal["detect", "record"]
ALL_EVENTS: tuple[EventKind, ...] = get_args(EventKind)
DETECT: Role = "detect"
RECORD: Role = "record"
# The three ways to give the naming threshold (one at a time, see RecognitionThresholds).
NAMING_THRESHOLDS = frozenset({"false_match_rate", "min_cosine_similarity", "recognition_threshold"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DatabaseConfig(_Strict):
    """Where facetrail keeps its records."""

    url: str | None = Field(None, title="Database URL",
                            description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db. Empty: the SQLite "
                                        "file facetrail.db in data_dir.")


DetectorConfig = DetectorSettings  # defined with the detector

@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class FaceRecognitionConfig(ShotGate, RecognitionThresholds):
    """When a face is recognised, and when it is an unknown visitor (each setting defined where it is used)."""

    low_light: LowLightSwitch = ENHANCE_DARK_FRAMES


def _overrides_of(section: type, name: str) -> type[BaseModel]:
    """A model with every setting of ``section`` optional (None: not overridden), same bounds and titles."""
    fields: dict[str, Any] = {}
    settings: dict[str, FieldInfo] = vars(section)["__pydantic_fields__"]
    for key, info in settings.items():
        value_type: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        fields[key] = (value_type | None, Field(None, title=info.title, description="Overrides face_recognition."))
    return create_model(name, __base__=_Strict, __doc__="Per-camera changes to the global face_recognition "
                                                        "settings.", **fields)


if TYPE_CHECKING:
    class FaceRecognitionOverrides(_Strict):
        """Per-camera changes to the global face_recognition settings (generated below from the section)."""
else:
    FaceRecognitionOverrides = _overrides_of(FaceRecognitionConfig, "FaceRecognitionOverrides")


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TrackingConfig(TrackLifetimes, ShotSelection):
    """How faces are followed from frame to frame, and when a track is embedded."""

    decision: DecisionMethod = Field(
        default="aggregate", title="Decision",
        description="aggregate: match the quality-weighted mean of a track's embeddings; vote: a strict majority of "
                    "its shots must agree.")


UnknownsConfig = UnknownsSettings  # defined with the visitor clusters
LiveConfig = LiveViewSettings  # defined with the clip writer (video/recording.py)
ClipsConfig = ClipSettings  # likewise
EventsConfig = EventRules  # defined with the event rules
IndexConfig = IndexBackendSettings  # defined with the gallery's index backends


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MqttConfig(MqttSettings):
    """MQTT delivery, in Frigate's topic style, and Home Assistant discovery."""

    enabled: bool = Field(default=False, title="Enabled",
                          description="Publish availability, events and presence over MQTT.")


ServerConfig = PublicLinks  # defined with the messages that carry the links


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class WebhookConfig(WebhookTarget):
    """A receiver of signed webhooks (Standard Webhooks), and the events it gets."""

    events: list[EventKind] = Field(
        default_factory=lambda: list(ALL_EVENTS), title="Events",
        description="Which kinds of event this receiver gets (new, update, end and the reviews of each): "
                    "watchlist_hit, unknown_visitor, seen_again, tailgating, door_forced, door_command_failed; "
                    "review: every confirmation or dismissal, whatever the event's kind. Default: all of them.")


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RetentionConfig(RetentionPolicy):
    """How long each class of data is kept; the purge runs on its own and is logged."""

    purge_interval_s: float = Field(default=3600, ge=10, title="Purge interval",
                                    description="Seconds between purges.")


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class CameraInput(VideoInput):
    """One input of a camera."""

    roles: list[Role] = Field(default_factory=lambda: [DETECT], title="Roles",
                              description="detect: faces are found and tracked in this input (a low-resolution "
                                          "sub-stream is enough); record: the high-resolution stream, faces too "
                                          "small in the detect stream are cut from it.")


class CameraConfig(_Strict):
    """One camera."""

    enabled: bool = Field(True, title="Enabled", description="Read this camera.")
    inputs: list[CameraInput] = Field(min_length=1, title="Inputs",
                                      description="The camera's inputs; exactly one has the detect role.")
    detect: DetectSettings = Field(default_factory=DetectSettings, title="Detect",
                                   description="Analysis rate and size.")
    motion: MotionSettings = Field(default_factory=MotionSettings, title="Motion", description="The motion gate.")
    reconnect: ReconnectSettings = Field(default_factory=ReconnectSettings, title="Reconnect",
                                         description="Back-off when the camera fails.")
    timeout_s: StreamTimeout = DEFAULT_TIMEOUT_S
    record_stream: RecordStreamSettings = Field(default_factory=RecordStreamSettings, title="Record stream",
                                                description="When small faces are cut from the input with the "
                                                            "record role, and how it is read.")
    face_recognition: FaceRecognitionOverrides | None = Field(None, title="Face recognition",
                                                              description="Changes to the global settings for this "
                                                                          "camera.")

    @field_validator("inputs")
    @classmethod
    def _roles(cls, inputs: list[CameraInput]) -> list[CameraInput]:
        count = sum(DETECT in i.roles for i in inputs)
        if count != 1:
            raise ValueError(f"exactly one input needs the detect role (found {count})")
        records = [i for i in inputs if RECORD in i.roles]
        if len(records) > 1:
            raise ValueError(f"at most one input may have the record role (found {len(records)})")
        detect = next(i for i in inputs if DETECT in i.roles)
        if records and records[0] is not detect and records[0].live != detect.live:
            raise ValueError("the record input must be read like the detect input, so that frames of the same "
                             "moment can be matched: both streams (or files with realtime: true), or both files")
        return inputs

    @property
    def detect_input(self) -> CameraInput:
        """The input faces are detected in."""
        return next(i for i in self.inputs if DETECT in i.roles)

    @property
    def record_input(self) -> CameraInput | None:
        """The high-resolution input small faces are cut from; None without one (or when it is the detect input)."""
        record = next((i for i in self.inputs if RECORD in i.roles), None)
        return None if record is None or DETECT in record.roles else record


ClusterConfig = ClusterSettings  # defined with the cluster's driver (facetrail/cluster/settings.py)


def cluster_database_problem(url: str | None) -> str | None:
    """Why a cluster cannot run on the database at ``url`` (None: it can): every node needs the same one."""
    if url is None or not url.startswith("postgresql"):
        return ("a cluster run needs a PostgreSQL database that every node reaches (database.url: "
                "postgresql+psycopg://user@host/db); SQLite is a file on one machine")
    return None


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
    index: IndexConfig = Field(default_factory=IndexConfig, title="Vector index",
                               description="Where faces are searched: FAISS in memory (default) or Milvus.")
    face_recognition: FaceRecognitionConfig = Field(default_factory=FaceRecognitionConfig, title="Face recognition",
                                                    description="Thresholds and quality bar, for every camera.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, title="Tracking", description="Face tracking.")
    unknowns: UnknownsConfig = Field(default_factory=UnknownsConfig, title="Unknown visitors",
                                     description="Anonymous visitor ids.")
    events: EventsConfig = Field(default_factory=EventsConfig, title="Events", description="Event rules.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, title="MQTT", description="MQTT delivery.")
    webhooks: list[WebhookConfig] = Field(default_factory=list, title="Webhooks",
                                          description="Receivers of signed webhooks.")
    server: ServerConfig = Field(default_factory=ServerConfig, title="Server",
                                 description="How receivers of messages reach this server (links to snapshots).")
    retention: RetentionConfig = Field(default_factory=RetentionConfig, title="Retention",
                                       description="How long data is kept.")
    cameras: dict[str, CameraConfig] = Field(min_length=1, title="Cameras",
                                             description="Cameras by name (lower-case letters, digits, - and _).")
    live: LiveConfig = Field(default_factory=LiveConfig, title="Live view",
                             description="The dashboard's live view of each camera (while someone watches).")
    clips: ClipsConfig = Field(default_factory=ClipsConfig, title="Clips",
                               description="Recordings of a few seconds around each event.")
    doors: dict[str, DoorConfig] = Field(default_factory=dict, title="Doors",
                                         description="Doors by name: a camera, who may pass, and how.")
    cluster: ClusterConfig | None = Field(None, title="Cluster",
                                          description="Run the cameras on a Ray cluster (pip install "
                                                      "'facetrail[cluster]'). Empty: one process, no Ray.")
    processes: PositiveInt | Literal["auto"] = Field(
        1, title="Processes",
        description="Worker processes the cameras are split over on this machine (one Python process uses "
                    "about 1.5 cores); auto: one per CPU, at most one per enabled camera. Not with cluster:.")

    @field_validator("purpose")
    @classmethod
    def _purpose(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("say why these cameras are watched")
        return value.strip()

    @model_validator(mode="after")
    def _overrides_consistent(self) -> FacetrailConfig:
        calibration = RECOGNISERS[self.recogniser].calibration
        try:
            self.face_recognition.for_recogniser(calibration, self.recogniser)
        except ValueError as error:
            raise ValueError(f"face_recognition: {error}") from None
        for name in self.cameras:
            try:
                self.camera_recognition(name)
            except ValidationError as error:
                reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
                raise ValueError(f"camera {name}: face_recognition overrides: {reasons}") from None
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

    @field_validator("cluster")
    @classmethod
    def _cluster_shares_a_database(cls, cluster: ClusterConfig | None, info: ValidationInfo) -> ClusterConfig | None:
        database = info.data.get("database")
        if cluster is not None and isinstance(database, DatabaseConfig):
            problem = cluster_database_problem(database.url)
            if problem:
                raise ValueError(problem)
        if cluster is not None and cluster.embedding.actors and info.data.get("recogniser", "arcface") != "arcface":
            # the pool embeds aligned 112x112 crops; dlib places its own chips on the whole frame
            raise ValueError("cluster.embedding.actors needs the arcface recogniser (dlib embeds whole frames, "
                             "not aligned crops): set actors: 0 or recogniser: arcface")
        return cluster

    @model_validator(mode="after")
    def _processes_allowed(self) -> FacetrailConfig:
        problem = self.processes_problem()
        if problem:
            raise ValueError(problem)
        return self

    def processes_problem(self) -> str | None:
        """Why ``processes`` cannot be more than 1 with this configuration (None: it can, or it is 1)."""
        if self.processes == 1:
            return None
        if self.cluster is not None:
            return "processes: not with cluster: (there each camera group already is a process)"
        if self.index.backend == "milvus" and self.index.milvus.is_lite:
            return ("processes: Milvus Lite serves one process at a time; use a Milvus server "
                    "(index.milvus.uri: http://...) or processes: 1")
        return None

    def worker_processes(self, cpus: int | None = None) -> int:
        """How many worker processes ``processes`` means here: ``auto`` is one per CPU, at most one per camera."""
        cameras = sum(1 for camera in self.cameras.values() if camera.enabled)
        if self.processes == "auto":
            return max(1, min(cpus or usable_cores(), cameras))
        return max(1, min(self.processes, cameras))

    @model_validator(mode="after")
    def _unique_webhooks(self) -> FacetrailConfig:
        names = [hook.name for hook in self.webhooks]
        if len(names) != len(set(names)):
            raise ValueError("webhook names must be unique")
        return self

    def camera_recognition(self, name: str) -> FaceRecognitionConfig:
        """The face_recognition settings of one camera, its overrides applied, a false_match_rate turned into
        the recogniser's cosine (ValueError when the recogniser cannot)."""
        overrides = self.cameras[name].face_recognition
        chosen = overrides.model_dump(exclude_none=True) if overrides is not None else {}
        if NAMING_THRESHOLDS & chosen.keys():  # a camera's naming threshold replaces the global one, whatever its form
            chosen = {key: None for key in NAMING_THRESHOLDS} | chosen
        merged = dataclasses.replace(self.face_recognition, **chosen) if chosen else self.face_recognition
        return merged.for_recogniser(RECOGNISERS[self.recogniser].calibration, self.recogniser)
