"""Client devices on the key store, with an asyncio API (SPEC.md §10.7).

* :class:`Client` (:mod:`e2e.client.device`): one device whose identity, certificate,
  prekeys, sessions, trust pins, device lists, history and outbox are records of its
  :mod:`e2e.store`; async send / sync / receipts / routing.
* :mod:`e2e.client.state`: those records and the synchronous steps over one transaction.
* :class:`Transport` (:mod:`e2e.client.transport`): the relay as a device sees it;
  :class:`LocalRelay` serves it in-process.
"""

from __future__ import annotations

from e2e.client.device import Client, KeyChange, StoreOpener, safety_number
from e2e.client.state import DeviceListHook, Message, Outgoing, Profile, ReceiptStatus
from e2e.client.transport import Connector, LocalRelay, LocalTransport, Transport

__all__ = [
    "Client",
    "StoreOpener",
    "KeyChange",
    "safety_number",
    "Message",
    "Outgoing",
    "Profile",
    "ReceiptStatus",
    "DeviceListHook",
    "Connector",
    "Transport",
    "LocalRelay",
    "LocalTransport",
]
