"""The ``doors:`` section: a door is a camera (or a zone of it) plus the rule of who may pass.

The settings the door layer reads are defined there, once: ``DoorSettings`` (the rule), ``LivenessRequirements``
and ``MqttDoorChannel``; the classes below add only what the configuration alone knows.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from facetrail.door.commands import MqttDoorChannel
from facetrail.door.decision import DoorSettings
from facetrail.door.liveness import LivenessRequirements

__all__ = ["DoorCommandConfig", "DoorConfig", "DoorLivenessConfig"]

DoorLivenessConfig = LivenessRequirements  # a door's ``liveness:``


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class DoorCommandConfig(MqttDoorChannel):
    """Where the door command goes: the MQTT broker of the ``mqtt:`` section and/or an HTTP endpoint."""

    mqtt: bool = Field(default=True, title="MQTT",
                       description="Publish to <prefix>/<door>/command on the mqtt: broker.")
    http_url: str | None = Field(default=None, title="HTTP URL", description="POST the command here as JSON.")
    http_secret: str | None = Field(default=None, title="HTTP secret",
                                    description="Standard Webhooks secret (whsec_...) to sign the command with.")
    deadline_s: float = Field(default=2.0, gt=0, le=30, title="Deadline",
                              description="Seconds a command may take, retries included; never delivered later.")


@dataclass(frozen=True, kw_only=True, config=ConfigDict(extra="forbid"))
class DoorConfig(DoorSettings):
    """One door."""

    allow: list[str] = Field(min_length=1, title="Allowed watchlists",
                             description="Members of these watchlists (with a recorded consent) may pass.")
    factor_timeout_s: float = Field(default=20, gt=0, le=300, title="Second factor time-out",
                                    description="Seconds to present the second factor after the face.")
    command: DoorCommandConfig = Field(default_factory=DoorCommandConfig, title="Command",
                                       description="Where the open command goes.")
