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
* :func:`~e2e.client.joining.begin_link`, :func:`~e2e.client.joining.recover_account`
  (:mod:`e2e.client.joining`): a device that joins an existing account, linked from one of
  its devices or recovering it with its recovery key (SPEC §10.1).
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
from e2e.platform.directory import ADMIN, AGENT

if TYPE_CHECKING:
    from e2e.client.http import HttpTransport, RelayClient
    from e2e.client.joining import LinkRequest, begin_link, recover_account

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
    "LinkRequest",
    "begin_link",
    "recover_account",
    "ADMIN",
    "AGENT",
]


def __getattr__(name: str) -> object:
    """The HTTP transport and the joining of devices, imported on first use (they need
    httpx, the ``client`` extra)."""
    if name in ("RelayClient", "HttpTransport"):
        from e2e.client import http

        return getattr(http, name)
    if name in ("LinkRequest", "begin_link", "recover_account"):
        from e2e.client import joining

        return getattr(joining, name)
    raise AttributeError(f"module 'e2e.client' has no attribute {name!r}")
