"""What goes out: the public description of an event, its MQTT (Frigate) and webhook (Standard Webhooks) payloads.

Store-free on purpose: the pipeline, the API and the outlet all describe events with these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from facetrail.config.schema import FacetrailConfig

Change = Literal["new", "update", "end"]
WebhookChange = Literal["new", "update", "end", "reviewed"]
REVIEW = "review"  # the webhook subscription to every review outcome, whatever the event's kind
# Keys that change with every message without saying anything new: ignored when deciding whether an update is one.
VOLATILE = frozenset({"frame_time", "message_id"})


def slug(text: str) -> str:
    """A topic-safe name: lower case, [a-z0-9_-] only."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_")
    return cleaned or "unnamed"


@dataclass(frozen=True)
class Channels:
    """Where messages go: the MQTT topic prefix (None: MQTT off) and webhooks with the event kinds they want."""

    mqtt_prefix: str | None = None
    webhooks: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: FacetrailConfig | None) -> Channels:
        """The channels a configuration names; none without a configuration."""
        if config is None:
            return cls()
        return cls(mqtt_prefix=config.mqtt.topic_prefix if config.mqtt.enabled else None,
                   webhooks={hook.name: frozenset(hook.events) for hook in config.webhooks})

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
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form; times are UNIX seconds, as in Frigate's events."""
        return {
            "id": self.uid, "kind": self.kind, "camera": self.camera,
            "identity": {"id": self.identity_id, "name": self.identity_name} if self.identity_id else None,
            "visitor_id": self.visitor_id, "watchlist": self.watchlist,
            "score": round(self.score, 4) if self.score is not None else None,
            "start_time": self.start_time.timestamp(),
            "end_time": self.end_time.timestamp() if self.end_time else None,
            "frame_time": self.frame_time.timestamp() if self.frame_time else None,
            "review": {"state": self.review_state, "confirmations": self.confirmations,
                       "reviewers_required": self.reviewers_required},
            "sighting_id": self.sighting_id, "has_snapshot": self.has_snapshot,
            "snapshot_quality": round(self.snapshot_quality, 3) if self.snapshot_quality is not None else None,
            **self.extra,
        }


def same(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether two descriptions say the same (the frame time aside): such an update is not sent."""
    return {k: v for k, v in before.items() if k not in VOLATILE} == {
        k: v for k, v in after.items() if k not in VOLATILE}


def mqtt_event(change: Change, before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """Frigate's ``events`` message: the type of change and the event before and after it (``new``: the same)."""
    return {"type": change, "before": before if before is not None else after, "after": after}


def webhook_event(change: WebhookChange, after: dict[str, Any], at: datetime) -> dict[str, Any]:
    """A Standard Webhooks payload: ``type`` (``<kind>.<change>``), ``timestamp`` and ``data``."""
    return {"type": f"{after['kind']}.{change}", "timestamp": at.isoformat(), "data": after}
