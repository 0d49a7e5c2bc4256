"""What goes out: the public description of an event, its MQTT (Frigate) and webhook (Standard Webhooks) payloads.

Store-free on purpose: the pipeline, the API and the outlet all describe events with these.

One schema for MQTT and webhooks (docs/messages.md): facetrail's own fields (``kind``, ``identity``,
``watchlist``, ``review`` ...) side by side with Frigate's (``label``, ``sub_label``, ``top_score``, ``box``,
``has_clip`` ...). The time rule: every time is ISO 8601 with its zone (``*_iso``; a webhook's
``timestamp``), and where Frigate has a time it is there too, as Frigate has it: epoch seconds
(``start_time``, ``end_time``, ``frame_time``, a face message's ``timestamp``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass as settings_dataclass

if TYPE_CHECKING:
    from facetrail.config.schema import FacetrailConfig

Change = Literal["new", "update", "end"]
WebhookChange = Literal["new", "update", "end", "reviewed"]
REVIEW = "review"  # the webhook subscription to every review outcome, whatever the event's kind
# Keys that change with every message without saying anything new: ignored when deciding whether an update is one.
VOLATILE = frozenset({"frame_time", "message_id"})
# Frigate's object label of each kind: a face event is "face", an event about someone at a door is "person".
FACE_KINDS = frozenset({"watchlist_hit", "unknown_visitor", "seen_again"})
EVENTS_API = "/api/v1/events"


@settings_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class PublicLinks:
    """How the outside world reaches this server: the base of the links in messages."""

    public_url: str | None = Field(
        default=None, title="Public URL",
        description="The server's address as receivers reach it, e.g. https://faces.example.org; messages link "
                    "to snapshots under it (<public_url>/api/v1/events/<id>/snapshot). Empty: links are paths.")

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
            raise ValueError("a public URL starts with http:// or https:// and has no spaces, e.g. "
                             "https://faces.example.org")
        return value.rstrip("/") if value else None


def iso(moment: datetime) -> str:
    """ISO 8601 with the zone; a naive time is taken as UTC (the store's convention)."""
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).isoformat()


def snapshot_url(row_id: int, public_url: str | None) -> str:
    """Where the API serves an event's snapshot: absolute under ``public_url``, else a path."""
    path = f"{EVENTS_API}/{row_id}/snapshot"
    return f"{public_url.rstrip('/')}{path}" if public_url else path


def slug(text: str) -> str:
    """A topic-safe name: lower case, [a-z0-9_-] only."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_")
    return cleaned or "unnamed"


@dataclass(frozen=True)
class Channels:
    """Where messages go: the MQTT topic prefix (None: MQTT off) and webhooks with the event kinds they want."""

    mqtt_prefix: str | None = None
    webhooks: dict[str, frozenset[str]] = field(default_factory=dict)
    webhooks_with_snapshot: frozenset[str] = frozenset()  # webhooks whose payloads carry the JPEG (base64)
    public_url: str | None = None  # base of absolute snapshot links; None: links are paths
    home_assistant: bool = False  # also publish the state Home Assistant's entities read (watchlist and door events)

    @classmethod
    def from_config(cls, config: FacetrailConfig | None) -> Channels:
        """The channels a configuration names; none without a configuration."""
        if config is None:
            return cls()
        return cls(mqtt_prefix=config.mqtt.topic_prefix if config.mqtt.enabled else None,
                   webhooks={hook.name: frozenset(hook.events) for hook in config.webhooks},
                   webhooks_with_snapshot=frozenset(hook.name for hook in config.webhooks if hook.include_snapshot),
                   public_url=config.server.public_url,
                   home_assistant=config.mqtt.enabled and config.mqtt.home_assistant)

    def webhooks_for(self, kind: str, *, reviewed: bool = False) -> list[str]:
        """Webhooks that want a message about a ``kind`` event (a review also goes to ``review`` subscribers)."""
        return [name for name, kinds in self.webhooks.items() if kind in kinds or (reviewed and REVIEW in kinds)]


@dataclass
class EventView:
    """The public description of an event, as sent to MQTT and webhooks."""

    uid: str
    kind: str
    camera: str
    start_time: datetime
    identity_id: int | None = None
    identity_name: str | None = None
    visitor_id: int | None = None
    watchlist: str | None = None
    score: float | None = None
    end_time: datetime | None = None
    frame_time: datetime | None = None
    reviewers_required: int = 1
    sighting_id: int | None = None
    has_snapshot: bool = False
    snapshot_quality: float | None = None  # quality of the best shot in the snapshot; None when not known
    review_state: str = "pending"
    confirmations: int = 0
    box: tuple[float, float, float, float] | None = None  # the snapshot's face, x1 y1 x2 y2 in frame pixels
    row_id: int | None = None  # the stored row's id, which the API's snapshot route takes
    public_url: str | None = None  # base of an absolute snapshot link (see Channels.public_url)
    has_clip: bool = False  # a recording of the event is kept (set by the clips feature)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Frigate's object label: ``face`` for a face event, ``person`` for someone (or no one) at a door."""
        return "face" if self.kind in FACE_KINDS else "person"

    @property
    def sub_label(self) -> list[Any] | None:
        """Frigate's ``sub_label``: ``[name, score]`` when the event names someone, else None."""
        if self.identity_name is None or self.identity_id is None:
            return None
        return [self.identity_name, _rounded(self.score, 4)]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: facetrail's fields and Frigate's (see the module's time rule)."""
        score = _rounded(self.score, 4)
        link = snapshot_url(self.row_id, self.public_url) if self.has_snapshot and self.row_id is not None else None
        return {
            "id": self.uid, "kind": self.kind, "camera": self.camera,
            "label": self.label, "sub_label": self.sub_label, "score": score, "top_score": score,
            "box": [round(float(v), 1) for v in self.box] if self.box is not None else None,
            "false_positive": self.review_state == "dismissed", "active": self.end_time is None,
            "identity": {"id": self.identity_id, "name": self.identity_name} if self.identity_id else None,
            "visitor_id": self.visitor_id, "watchlist": self.watchlist,
            "start_time": self.start_time.timestamp(), "start_time_iso": iso(self.start_time),
            "end_time": self.end_time.timestamp() if self.end_time else None,
            "end_time_iso": iso(self.end_time) if self.end_time else None,
            "frame_time": self.frame_time.timestamp() if self.frame_time else None,
            "review": {"state": self.review_state, "confirmations": self.confirmations,
                       "reviewers_required": self.reviewers_required},
            "sighting_id": self.sighting_id, "has_snapshot": self.has_snapshot, "has_clip": self.has_clip,
            "snapshot_url": link,
            "snapshot_quality": _rounded(self.snapshot_quality, 3),
            **self.extra,
        }


def _rounded(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None else None


def same(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether two descriptions say the same (the frame time aside): such an update is not sent."""
    return {k: v for k, v in before.items() if k not in VOLATILE} == {
        k: v for k, v in after.items() if k not in VOLATILE}


def mqtt_event(change: Change, before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """Frigate's ``events`` message: the type of change and the event before and after it (``new``: the same)."""
    return {"type": change, "before": before if before is not None else after, "after": after}


def webhook_event(change: WebhookChange, after: dict[str, Any], at: datetime) -> dict[str, Any]:
    """A Standard Webhooks payload: ``type`` (``<kind>.<change>``), ``timestamp`` (ISO 8601 with zone) and ``data``."""
    return {"type": f"{after['kind']}.{change}", "timestamp": iso(at), "data": after}


def face_update(*, track_id: str, name: str, score: float | None, camera: str, at: datetime) -> dict[str, Any]:
    """Frigate's (0.16+) ``tracked_object_update`` message of type ``face``: a tracked face was named."""
    return {"type": "face", "id": track_id, "name": name, "score": _rounded(score, 4), "camera": camera,
            "timestamp": at.timestamp(), "timestamp_iso": iso(at)}
