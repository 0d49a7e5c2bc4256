"""Typed errors of event delivery."""

from __future__ import annotations


class EventsError(Exception):
    """Base class of every error the events package raises on purpose."""


class DeliveryError(EventsError):
    """A message was not delivered this time (no PUBACK, no 2xx, network error); it is retried later."""


class ChannelUnavailableError(DeliveryError):
    """The whole channel is down (MQTT broker not connected): nothing was attempted, no attempt is counted."""


class PermanentDeliveryError(DeliveryError):
    """The receiver refused the message for good (HTTP 410 Gone); retrying cannot help."""
