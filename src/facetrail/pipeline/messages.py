"""What goes out: event payloads for MQTT (Frigate's topics) and for webhooks (Standard Webhooks)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Change = Literal["new", "update", "end"]


def slug(text: str) -> str:
    """A topic-safe name: lower case, [a-z0-9_-] only."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_")
    return cleaned or "unnamed"


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
            "review": {"state": "pending", "reviewers_required": self.reviewers_required},
            "sighting_id": self.sighting_id, "has_snapshot": self.has_snapshot, **self.extra,
        }


def mqtt_event(change: Change, before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """Frigate's ``events`` message: the type of change and the event before and after it."""
    return {"type": change, "before": before if before is not None else after, "after": after}


def webhook_event(change: Change, after: dict[str, Any], at: datetime) -> dict[str, Any]:
    """A Standard Webhooks payload: ``type``, ``timestamp`` and ``data``."""
    return {"type": f"{after['kind']}.{change}", "timestamp": at.isoformat(), "data": after}
