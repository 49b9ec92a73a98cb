"""Client devices on the key store, with an asyncio API (SPEC.md §10.10).

* :class:`Client` (:mod:`e2e.client.device`): one device whose identity, certificate,
  prekeys, sessions, trust pins, device lists, history and outbox are records of its
  :mod:`e2e.store`; async send / sync / receipts / routing.
* :mod:`e2e.client.events`: the typed events a device hands its application, from a durable
  cursor the application advances (SPEC §10.11).
* :mod:`e2e.client.state`, :mod:`e2e.client.inbox`, :mod:`e2e.client.records`: those records
  and the synchronous steps over one transaction (sending; receiving, the delivery contract
  and the retry protocol).
* :class:`Transport` (:mod:`e2e.client.transport`): the relay as a device sees it;
  :class:`~e2e.client.http.RelayClient` (:mod:`e2e.client.http`, the ``client`` extra:
  httpx) reaches the relay service over HTTP, or runs it in this process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from e2e.client.device import Client, StoreOpener
from e2e.client.events import (
    DevicesChanged,
    Event,
    KeyChanged,
    MessageReceived,
    MessageSent,
    ReceiptReceived,
    SendRefused,
    Undecryptable,
)
from e2e.client.records import Message, Profile, ReceiptStatus
from e2e.client.state import DeviceListHook, Outgoing
from e2e.client.transport import Connector, Transport
from e2e.client.trust import KeyChange, safety_number

if TYPE_CHECKING:
    from e2e.client.http import HttpTransport, RelayClient

__all__ = [
    "Client",
    "StoreOpener",
    "KeyChange",
    "safety_number",
    "Message",
    "Event",
    "MessageReceived",
    "ReceiptReceived",
    "MessageSent",
    "SendRefused",
    "KeyChanged",
    "DevicesChanged",
    "Undecryptable",
    "Outgoing",
    "Profile",
    "ReceiptStatus",
    "DeviceListHook",
    "Connector",
    "Transport",
    "RelayClient",
    "HttpTransport",
]


def __getattr__(name: str) -> object:
    """The HTTP transport, imported on first use (it needs httpx, the ``client`` extra)."""
    if name in ("RelayClient", "HttpTransport"):
        from e2e.client import http

        return getattr(http, name)
    raise AttributeError(f"module 'e2e.client' has no attribute {name!r}")
