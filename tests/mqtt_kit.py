"""An MQTT listener for tests that keeps payloads as bytes (snapshots are JPEG), with their retain flag."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from services import wait_until


@dataclass(frozen=True)
class Heard:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Listener:
    """Records every message on ``patterns`` (bytes, in arrival order); use as a context manager."""

    def __init__(self, port: int, *patterns: str) -> None:
        self.port = port
        self.patterns = patterns
        self.messages: list[Heard] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda client, *_a: client.subscribe([(p, 1) for p in patterns])
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.on_message = self._on_message

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Heard(message.topic, bytes(message.payload), bool(message.retain)))

    def __enter__(self) -> Listener:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        wait_until(self._subscribed.is_set, f"subscription to {', '.join(self.patterns)}")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, topic: str) -> list[Heard]:
        """Messages on ``topic``, oldest first."""
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> bytes | None:
        """The latest payload on ``topic`` (None: nothing yet)."""
        heard = self.on(topic)
        return heard[-1].payload if heard else None

    def topics(self, prefix: str = "") -> set[str]:
        with self._lock:
            return {m.topic for m in self.messages if m.topic.startswith(prefix)}

    def holding(self) -> dict[str, bytes]:
        """What the broker holds now, as far as heard: the latest payload per topic, empty ones dropped."""
        with self._lock:
            latest = {m.topic: m.payload for m in self.messages}
        return {topic: payload for topic, payload in latest.items() if payload}
