"""Delivery of one configuration: the MQTT publisher, the webhook sender, the Home Assistant bridge and the
outbox dispatcher, started and stopped together.

A one-process run's pipeline owns one; on a cluster the groups only store (their pipelines run with
``deliver=False``) and the driver owns the one that drains their outbox. The dispatcher's lease
(``events/lease.py``) guards it either way: a second process on the same database waits.
"""

from __future__ import annotations

from collections.abc import Sequence

from facetrail.config.schema import FacetrailConfig
from facetrail.events.dispatcher import Dispatcher
from facetrail.events.homeassistant import HomeAssistantBridge, site_of
from facetrail.events.mqtt import MqttPublisher
from facetrail.events.outlet import EventOutlet
from facetrail.events.webhooks import WebhookSender
from facetrail.pipeline import settings as cfg
from facetrail.store.db import Database


class Delivery:
    """The publisher, the webhook sender, the Home Assistant bridge and the dispatcher of one configuration."""

    def __init__(self, config: FacetrailConfig, db: Database, outlet: EventOutlet, cameras: Sequence[str]) -> None:
        """``outlet``: how Home Assistant's states are announced; ``cameras``: the ones its site lists."""
        self.mqtt: MqttPublisher | None = None
        self.home_assistant: HomeAssistantBridge | None = None
        mqtt = cfg.mqtt_settings(config)
        if mqtt is not None:
            self.mqtt = MqttPublisher(mqtt)
            site = site_of(mqtt.topic_prefix, config.mqtt.discovery_prefix, list(cameras),
                           {name: door.camera for name, door in config.doors.items()})
            self.home_assistant = HomeAssistantBridge(db, outlet, site, config.mqtt)
            self.home_assistant.attach(self.mqtt)
        targets = cfg.webhook_targets(config)
        self.webhooks = WebhookSender(targets) if targets else None
        self.dispatcher: Dispatcher | None = None
        if self.mqtt is not None or self.webhooks is not None:
            self.dispatcher = Dispatcher(db, mqtt=self.mqtt, webhooks=self.webhooks)

    def start(self) -> None:
        """Connect and start delivering."""
        if self.mqtt is not None:
            self.mqtt.start()
        if self.dispatcher is not None:
            self.dispatcher.start()
        if self.home_assistant is not None:
            self.home_assistant.start()

    def stop(self) -> None:
        """Deliver what is due one last time, then disconnect."""
        if self.home_assistant is not None:
            self.home_assistant.stop()
        if self.dispatcher is not None:
            self.dispatcher.drain_once()
            self.dispatcher.stop()
        if self.mqtt is not None:
            self.mqtt.stop()
        if self.webhooks is not None:
            self.webhooks.close()

    @property
    def held_by(self) -> str | None:
        """Who delivers instead, while another process holds the lease."""
        return self.dispatcher.held_by if self.dispatcher is not None else None

    def wake(self) -> None:
        """Deliver what was just enqueued now rather than at the dispatcher's next poll."""
        if self.dispatcher is not None:
            self.dispatcher.wake()
