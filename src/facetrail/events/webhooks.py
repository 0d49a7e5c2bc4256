"""Webhooks signed per the Standard Webhooks spec (https://www.standardwebhooks.com).

Each POST carries ``webhook-id`` (the outbox message id, the same on every
retry: receivers deduplicate on it), ``webhook-timestamp`` (seconds since the
epoch, of this attempt) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256>``
made by ``standardwebhooks.Webhook``). A 2xx answer is a delivery; any other
answer or a network error is retried later, except ``410 Gone``, which per the
spec means the endpoint is gone: that message is abandoned, not retried. An
attempt that takes longer than the target's ``timeout_s`` in all is cut off and
counts as a failure (see :class:`Deadline`).
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass
from standardwebhooks import Webhook

from facetrail import __version__
from facetrail.events.errors import DeliveryError, PermanentDeliveryError
from facetrail.store.models import as_utc, utcnow

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class WebhookTarget:
    """A receiver of signed webhooks (Standard Webhooks)."""

    name: str = Field(title="Name", description="Short name of the receiver (letters, digits, - and _).")
    url: str = Field(title="URL", description="http(s) address the events are POSTed to.")
    secret: str = Field(title="Secret",
                        description="Signing secret, whsec_ followed by base64; write {FACETRAIL_WEBHOOK_SECRET} "
                                    "to take it from the environment.")
    timeout_s: float = Field(default=5, gt=0, le=120, title="Timeout",
                             description="Seconds one attempt may take in all, from connecting to the last byte "
                                         "of the answer; a slower receiver is cut off and tried again later.")
    include_snapshot: bool = Field(default=False, title="Include snapshot",
                                   description="Carry the event's snapshot JPEG in the payload, base64, as "
                                               "data.snapshot_base64 (some 50-200 kB a message). Off: "
                                               "data.snapshot_url links to it.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("use lower-case letters, digits, - and _")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("a webhook URL starts with http:// or https://")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        body = value.removeprefix("whsec_")
        try:
            if not base64.b64decode(body, validate=True):
                raise ValueError
        except ValueError:
            raise ValueError("a Standard Webhooks secret is whsec_ followed by base64") from None
        return value


class Deadline:
    """A watchdog that cuts one HTTP attempt's connection when its total time is up.

    httpx's timeouts are per operation: a receiver that sends a byte now and
    then never trips them. Pass :meth:`trace` as the request's ``trace``
    extension so the watchdog learns the attempt's socket; at the deadline it
    shuts that socket down, which ends whatever read or write is waiting on it.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._socket = None

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: remember the socket of the connection it opened."""
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with self._lock:
                self._socket = sock
                if self.expired:
                    _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._socket is not None:
                _shut(self._socket)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


class WebhookSender:
    """POSTs outbox payloads to named, configured receivers; safe to share between threads.

    A ``client`` passed in must not keep connections alive, or the deadline cannot cut a reused one.
    """

    def __init__(self, targets: Sequence[WebhookTarget], client: httpx.Client | None = None) -> None:
        self._targets: dict[str, WebhookTarget] = {}
        self._signers: dict[str, Webhook] = {}
        for target in targets:
            if target.name in self._targets:
                raise ValueError(f"two webhooks are named {target.name!r}")
            try:
                self._signers[target.name] = Webhook(target.secret)
            except Exception as exc:  # the library raises binascii.Error, its own errors or RuntimeError
                raise ValueError(f"webhook {target.name!r}: unusable secret ({exc})") from None
            self._targets[target.name] = target
        self._owns_client = client is None
        # No kept-alive connections: each attempt opens its own, which the deadline's watchdog can cut.
        self._client = client if client is not None else httpx.Client(
            headers={"user-agent": f"facetrail/{__version__}"}, follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0))

    @property
    def names(self) -> list[str]:
        """The names of the configured webhooks."""
        return list(self._targets)

    def send(self, name: str, message_id: str, payload: str, *, timestamp: datetime | None = None) -> None:
        """Deliver one payload (JSON text) to the webhook ``name``.

        Raises :class:`PermanentDeliveryError` on 410 Gone and
        :class:`DeliveryError` on any other non-2xx answer or network error.
        """
        target = self._targets.get(name)
        if target is None:
            raise DeliveryError(f"no webhook named {name!r} is configured")
        moment = as_utc(timestamp or utcnow())
        headers = {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": self._signers[name].sign(message_id, moment, payload),
            "content-type": "application/json",
        }
        deadline = Deadline(target.timeout_s)
        try:
            with deadline:
                response = self._client.post(
                    target.url, content=payload.encode(), headers=headers, timeout=target.timeout_s,
                    extensions={"trace": deadline.trace})
        except httpx.HTTPError as exc:
            if deadline.expired:
                raise DeliveryError(f"no complete answer within {target.timeout_s:g} s") from exc
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status == httpx.codes.GONE:
            raise PermanentDeliveryError(f"HTTP {status} {response.reason_phrase}")
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status} {response.reason_phrase}")

    def close(self) -> None:
        """Close the HTTP client, unless the caller passed it in."""
        if self._owns_client:
            self._client.close()
