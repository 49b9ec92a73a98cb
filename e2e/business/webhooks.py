"""Signed webhooks of the business gateway (SPEC.md §17.2): what each device event becomes,
how it is signed, and its delivery with retries.

A webhook is one JSON object, POSTed to the business's URL with the headers

* ``E2E-Webhook-Id``: ``<account>/<device>/<event position>``, the same for every attempt and
  across restarts of the gateway (the receiver's idempotency key);
* ``E2E-Signature``: ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.

The gateway acknowledges the device's event only once the receiver answered 2xx, so an event
is never lost; it is delivered again only if the gateway stopped between the receiver's answer
and that acknowledgement, with the same id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import httpx

from e2e.client.events import (
    CustomerNotice,
    DevicesChanged,
    Event,
    KeyChanged,
    MessageReceived,
    MessageSent,
    ReceiptReceived,
    SendRefused,
    Undecryptable,
    event_types,
)
from e2e.client.records import Message, ReceiptStatus
from e2e.errors import DecodeError

__all__ = ["payload", "sign", "verify", "Deliverer", "SIGNATURE_HEADER", "ID_HEADER"]

SIGNATURE_HEADER: Final = "E2E-Signature"
ID_HEADER: Final = "E2E-Webhook-Id"
#: A signature older (or newer) than this many seconds is refused by :func:`verify`.
TOLERANCE: Final = 300

log = logging.getLogger("e2e.business")


def message_json(m: Message) -> dict[str, Any]:
    """A message as the gateway's API and webhooks show it."""
    out: dict[str, Any] = {
        "message_id": m.message_id.hex(),
        "conversation": m.conversation,
        "sender": {"account": m.sender.name, "device": m.sender.device},
        "class": m.cls.name.lower(),
        "text": m.text,
        "time": m.time,
        "outgoing": m.outgoing,
    }
    if m.template_id is not None:
        out["template"] = m.template_id.decode("ascii", errors="replace")
        if m.template_params is not None:
            out["params"] = list(m.template_params)
    if m.attachment is not None:
        out["attachment"] = True
    return out


_E = TypeVar("_E", bound=Event)
_Payload = Callable[[Any], dict[str, Any]]
#: Event type -> its webhook body; checked below to cover every event type there is
#: (:func:`~e2e.client.events.event_types`), so a new event cannot be left without one.
_PAYLOADS: dict[type[Event], _Payload] = {}


def _webhook(kind: type[_E]) -> Callable[[Callable[[_E], dict[str, Any]]], _Payload]:
    def register(fn: Callable[[_E], dict[str, Any]]) -> _Payload:
        _PAYLOADS[kind] = fn
        return fn

    return register


@_webhook(MessageReceived)
def _message(event: MessageReceived) -> dict[str, Any]:
    kind = "message.echo" if event.message.outgoing else "message"
    return {"type": kind, "message": message_json(event.message)}


@_webhook(ReceiptReceived)
def _receipt(event: ReceiptReceived) -> dict[str, Any]:
    status = "read" if event.status == ReceiptStatus.READ else "delivered"
    ids = [i.hex() for i in event.message_ids]
    return {"type": "status", "status": status, "from": event.sender.name,
            "message_ids": ids, "time": event.time}  # fmt: skip


@_webhook(MessageSent)
def _sent(event: MessageSent) -> dict[str, Any]:
    m = event.message
    return {"type": "status", "status": "sent", "to": m.conversation,
            "message_ids": [m.message_id.hex()], "time": m.time}  # fmt: skip


@_webhook(SendRefused)
def _refused(event: SendRefused) -> dict[str, Any]:
    return {"type": "refused", "to": event.to, "message_id": event.message_id.hex(),
            "class": event.cls.name.lower(), "error": event.error,
            "reason": event.reason}  # fmt: skip


@_webhook(KeyChanged)
def _key_change(event: KeyChanged) -> dict[str, Any]:
    return {"type": "key_change", "account": event.account}


@_webhook(DevicesChanged)
def _devices(event: DevicesChanged) -> dict[str, Any]:
    return {"type": "devices", "account": event.account, "added": list(event.added),
            "removed": list(event.removed)}  # fmt: skip


@_webhook(Undecryptable)
def _undecryptable(event: Undecryptable) -> dict[str, Any]:
    return {"type": "undecryptable", "error": event.error, "reason": event.reason,
            "from": event.sender.name if event.sender else None}  # fmt: skip


@_webhook(CustomerNotice)
def _notice(event: CustomerNotice) -> dict[str, Any]:
    if event.kind == "spam_report":
        return {"type": "spam_report", "customer": event.customer, "messages": event.value,
                "time": event.time}  # fmt: skip
    return {"type": f"customer.{event.kind}", "customer": event.customer,
            "on": bool(event.value), "time": event.time}  # fmt: skip


if set(_PAYLOADS) != set(event_types()):  # pragma: no cover - a programming error
    raise RuntimeError("an event type has no webhook")


def payload(event: Event) -> dict[str, Any]:
    """The webhook body of one device event: ``{"type": ..., ...}``."""
    return _PAYLOADS[type(event)](event)


def sign(secret: bytes, body: bytes, now: int) -> str:
    """The ``E2E-Signature`` header value of ``body`` at ``now``."""
    mac = hmac.new(secret, str(now).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={now},v1={mac}"


def verify(secret: bytes, body: bytes, header: str, now: int) -> None:
    """A receiver's check of a webhook: the signature is over this body, made within
    :data:`TOLERANCE` seconds of ``now`` (:class:`~e2e.errors.DecodeError` if not)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
        mac = parts["v1"]
    except (KeyError, ValueError):
        raise DecodeError("malformed webhook signature") from None
    if abs(now - t) > TOLERANCE:
        raise DecodeError("webhook signature too old")
    want = sign(secret, body, t).split("v1=", 1)[1]
    if not hmac.compare_digest(want, mac):
        raise DecodeError("webhook signature does not verify")


class Deliverer:
    """POSTs webhooks to one URL until a 2xx answer, waiting 0.1 s after a failure, doubling up
    to ``max_pause`` seconds (for ever: a receiver that is down holds the events back, it does
    not lose them)."""

    def __init__(self, url: str, secret: bytes, *, max_pause: float = 30.0,
                 timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:  # fmt: skip
        """``transport``: httpx's (default: the network; the demo passes a receiver that runs
        in its own process)."""
        self.url = url
        self.secret = secret
        self.max_pause = max_pause
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        #: Attempts that failed (a refused answer, a timeout, a connection error).
        self.failures = 0

    async def deliver(self, webhook_id: str, body: dict[str, Any]) -> None:
        raw = json.dumps({"id": webhook_id, **body}, separators=(",", ":")).encode()
        event = webhook_id.rsplit("/", 1)[-1]  # logged: the event's number, not the account
        pause = 0.1
        while True:
            headers = {
                "content-type": "application/json",
                ID_HEADER: webhook_id,
                SIGNATURE_HEADER: sign(self.secret, raw, int(time.time())),
            }
            try:
                r = await self._http.post(self.url, content=raw, headers=headers)
                if 200 <= r.status_code < 300:
                    return
                log.info("webhook %s answered %d", event, r.status_code)
            except httpx.HTTPError as exc:
                log.info("webhook %s failed: %s", event, type(exc).__name__)
            self.failures += 1
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.max_pause)

    async def aclose(self) -> None:
        await self._http.aclose()
