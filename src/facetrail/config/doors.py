"""The ``doors:`` section: a door is a camera (or a zone of it) plus the rule of who may pass."""

from __future__ import annotations

import re
from datetime import time
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

HOURS = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DoorLivenessConfig(_Strict):
    """What proves a live face at this door (see the README for what it stops and what it does not)."""

    require_blink: bool = Field(False, title="Require a blink",
                                description="Grant only after an eye blink (an active check; slower).")
    require_depth: bool = Field(False, title="Require depth",
                                description="Grant only after head movement in depth (stops a replayed video held "
                                            "still; asks people to turn their head a little).")
    min_frames: int = Field(8, ge=3, le=100, title="Frames", description="Frames of the face needed to judge.")


class DoorCommandConfig(_Strict):
    """Where the door command goes: the MQTT broker of the ``mqtt:`` section and/or an HTTP endpoint."""

    mqtt: bool = Field(True, title="MQTT", description="Publish to <prefix>/<door>/command on the mqtt: broker.")
    topic_prefix: str = Field("facetrail/doors", min_length=1, title="Topic prefix",
                              description="Commands on <prefix>/<door>/command, states on <prefix>/<door>/state.")
    require_state_ack: bool = Field(False, title="Wait for the door's state",
                                    description="Count a command delivered only when the controller reports the "
                                                "door's state back.")
    http_url: str | None = Field(None, title="HTTP URL", description="POST the command here as JSON.")
    http_secret: str | None = Field(None, title="HTTP secret",
                                    description="Standard Webhooks secret (whsec_...) to sign the command with.")
    deadline_s: float = Field(2.0, gt=0, le=30, title="Deadline",
                              description="Seconds a command may take, retries included; never delivered later.")


class DoorConfig(_Strict):
    """One door."""

    camera: str = Field(title="Camera", description="The camera that watches the door.")
    zone: tuple[float, float, float, float] | None = Field(
        None, title="Zone", description="x1, y1, x2, y2 as fractions of the frame; faces outside are ignored.")
    allow: list[str] = Field(min_length=1, title="Allowed watchlists",
                             description="Members of these watchlists (with a recorded consent) may pass.")
    hours: list[str] = Field(default_factory=list, title="Hours",
                             description="Opening hours, e.g. ['07:00-22:00']; empty: always.")
    timezone: str = Field("UTC", title="Time zone", description="For the hours, e.g. Europe/Paris.")
    threshold: float | None = Field(None, ge=-1, le=1, title="Threshold",
                                    description="Cosine a shot must reach; empty: the model's calibrated one.")
    consecutive: int = Field(3, ge=1, le=20, title="Consecutive shots",
                             description="Shots in a row that must match the same allowed person.")
    min_face_px: float = Field(100, ge=20, title="Smallest face",
                               description="Face size in pixels (2.5 times the eye distance); liveness needs 100.")
    second_factor: bool = Field(False, title="Second factor",
                                description="Also require the person's PIN or card, sent by the keypad or reader.")
    factor_timeout_s: float = Field(20, gt=0, le=300, title="Second factor time-out",
                                    description="Seconds to present the second factor after the face.")
    tailgating: Literal["deny", "event", "allow"] = Field(
        "deny", title="Tailgating",
        description="An authorised and an unauthorised person at the door together: deny, or deny and raise an "
                    "event for review, or allow.")
    decide_within_s: float = Field(8, gt=0, le=120, title="Decide within",
                                   description="Seconds after which an undecided approach is logged as no decision.")
    liveness: DoorLivenessConfig = Field(default_factory=DoorLivenessConfig, title="Liveness",
                                         description="Liveness requirements.")
    command: DoorCommandConfig = Field(default_factory=DoorCommandConfig, title="Command",
                                       description="Where the open command goes.")

    @field_validator("zone")
    @classmethod
    def _zone(cls, zone: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        if zone is not None and not (0 <= zone[0] < zone[2] <= 1 and 0 <= zone[1] < zone[3] <= 1):
            raise ValueError("a zone is x1, y1, x2, y2 with 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
        return zone

    @field_validator("hours")
    @classmethod
    def _hours(cls, hours: list[str]) -> list[str]:
        for span in hours:
            found = HOURS.match(span)
            if not found or int(found[1]) > 23 or int(found[3]) > 24 or int(found[2]) > 59 or int(found[4]) > 59:
                raise ValueError(f"hours {span!r}: write HH:MM-HH:MM, e.g. 07:00-22:00")
        return hours

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}; use an IANA name such as Europe/Paris") from None
        return name

    def opening_hours(self) -> tuple[tuple[time, time], ...]:
        """The hours as (start, end) times; 24:00 is read as the end of the day."""
        spans = []
        for span in self.hours:
            found = HOURS.match(span)
            assert found is not None
            end = time(23, 59, 59, 999999) if found[3] == "24" else time(int(found[3]), int(found[4]))
            spans.append((time(int(found[1]), int(found[2])), end))
        return tuple(spans)
