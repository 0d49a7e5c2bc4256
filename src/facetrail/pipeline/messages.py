"""What goes out: moved to :mod:`facetrail.events.messages` (below the pipeline, so the API can use it too)."""

from __future__ import annotations

from facetrail.events.messages import Change, Channels, EventView, mqtt_event, slug, webhook_event

__all__ = ["Change", "Channels", "EventView", "mqtt_event", "slug", "webhook_event"]
