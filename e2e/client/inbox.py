"""The receiving side of a client device, one store transaction per step (SPEC.md §10.10,
§10.11): opening a delivery, keeping what could not be opened, and the durable to-do records
of the delivery contract.

Records (besides the history, ``c/seen/`` and ``c/status/`` of :mod:`e2e.client.state`):

===================================  ==========================================================
key                                  value
===================================  ==========================================================
``c/held/<relay seq, 20 digits>``    a delivery whose sender's account key changed: opened
                                     again once the application accepted the new key
``c/rcpt/<account>/<id hex>``        empty: a delivered receipt to send for that message
``c/bad/<sha256 hex>``               empty: a delivery record that did not decode, kept once
===================================  ==========================================================
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote

from e2e.client import events
from e2e.client.records import (
    Message,
    Profile,
    ReceiptStatus,
    dump,
    load,
    parse_receipt,
    q,
)
from e2e.client.state import (
    PEER_HEADS,
    _msg_key,
    device_key,
    pending_key_change,
)
from e2e.errors import (
    DuplicateMessage,
    E2EError,
    EnvelopeMismatch,
    FrankingMismatch,
    StateError,
    StoreError,
    UntrustedDevice,
)
from e2e.frame import decode_message
from e2e.platform.envelope import Delivery, Envelope, Inner
from e2e.platform.franking import commit_inner
from e2e.platform.policy import MessageClass
from e2e.store import Address, StoreTransaction

__all__ = [
    "NeedDevices",
    "open_delivery",
    "open_event",
    "undecryptable",
    "receipt_status",
    "hold",
    "held",
    "release",
    "todo",
]

_HELD: Final = "c/held/"
_RCPT: Final = "c/rcpt/"
_BAD: Final = "c/bad/"


class NeedDevices(StateError):
    """The sender's device is not (yet) in this device's certified list: refresh it."""

    def __init__(self, account: str) -> None:
        super().__init__("sender device not in the certified device list")
        self.account = account


# -- opening --------------------------------------------------------------------------------


def open_delivery(tx: StoreTransaction, profile: Profile, raw: bytes) -> Message:
    """:func:`open_event`'s message (for callers that want only the message)."""
    return open_event(tx, profile, raw)[0]


def open_event(
    tx: StoreTransaction, profile: Profile, raw: bytes, *, receipts: bool = False,
    refreshed: bool = True,
) -> tuple[Message, events.Event | None]:  # fmt: skip
    """Open one delivery: decrypt, check it against its envelope and franking commitment,
    record it (history or receipt status), its id and its event, all in this transaction.
    With ``receipts``, a delivered receipt for it is due (``c/rcpt/``).

    Raises (and, the transaction rolling back, changes nothing): :class:`NeedDevices` if
    the sender is not a known certified device (or, unless ``refreshed``, a prekey message
    names another key for it than the certified one: the device may have been installed
    again), :class:`DuplicateMessage` if already processed, or the E2EError that makes it
    unacceptable.
    """
    delivery = Delivery.from_bytes(raw)
    env = delivery.open_envelope()
    if env.dest != profile.addr.wire:
        raise EnvelopeMismatch("delivery addressed to another device")
    sender = Address.from_wire(*env.sender)
    identity = device_key(tx, sender)
    if identity is None:
        raise NeedDevices(sender.name)
    seen_key = f"c/seen/{q(sender.name)}/{env.message_id.hex()}"
    tx.app_lock(seen_key)  # another process opening the same delivery waits, then sees it
    if tx.app_get(seen_key) is not None:
        raise DuplicateMessage("message id already received")
    parsed = decode_message(env.frame)
    if parsed.prekey is not None and not hmac.compare_digest(parsed.prekey.identity_key, identity):
        if not refreshed:
            raise NeedDevices(sender.name)
        raise UntrustedDevice("prekey message identity is not the sender's device key")
    plaintext = tx.decrypt(sender, env.frame, allowed_suites=(profile.suite,))
    current = tx.load_session(sender)
    if current is None or not hmac.compare_digest(current.remote_identity, identity):
        raise UntrustedDevice("session is not with the sender's certified device key")
    inner = Inner.from_padded(plaintext)
    if not inner.matches(env):
        raise EnvelopeMismatch("envelope metadata differs from the sealed metadata")
    expected = commit_inner(inner)
    if not hmac.compare_digest(expected, env.commitment):
        raise FrankingMismatch("franking commitment does not match the message")
    tx.app_put(seen_key, b"")
    if inner.log_head:  # the sender's key-log head: checked after this batch (SPEC §13.4)
        tx.app_put(PEER_HEADS + inner.log_head.hex(), b"")
    own = inner.from_account == profile.account.encode()
    conversation = (inner.to_account if own else inner.from_account).decode()
    msg = Message(conversation, sender, inner.cls, inner.message_id, inner.body,
                  delivery.received_at, own, raw, inner.franking_key,
                  inner.template_id, attachment=inner.attachment)  # fmt: skip
    event: events.Event | None = None
    if inner.cls is MessageClass.RECEIPT:
        receipt = parse_receipt(inner.body)
        if not own:
            for mid in receipt.message_ids:
                _raise_status(tx, mid, sender.name, receipt.kind)
            event = events.append(tx, events.ReceiptReceived(
                0, sender, receipt.kind, receipt.message_ids, delivery.received_at))  # fmt: skip
    else:
        key = _msg_key(tx, conversation, delivery.received_at, inner.message_id)
        tx.app_put(key, msg.to_record())
        event = events.append(tx, events.MessageReceived(0, msg))
        if receipts and not own:
            tx.app_put(f"{_RCPT}{q(conversation)}/{inner.message_id.hex()}", b"")
    return msg, event


def _raise_status(tx: StoreTransaction, message_id: bytes, by: str, kind: int) -> None:
    key = f"c/status/{message_id.hex()}"
    raw = tx.app_get(key)
    status: dict[str, int] = {} if raw is None else dict(load(raw, "app/" + key))
    if status.get(by, ReceiptStatus.SENT) < kind:
        status[by] = kind
        tx.app_put(key, dump(status))


def receipt_status(tx: StoreTransaction, message_id: bytes) -> dict[str, int]:
    """{account: highest receipt kind} for one of our messages."""
    raw = tx.app_get(f"c/status/{message_id.hex()}")
    return {} if raw is None else dict(load(raw, f"app/c/status/{message_id.hex()}"))


# -- what could not be opened ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claims:
    """What a delivery's envelope says, as far as it decodes."""

    sender: Address | None = None
    message_id: bytes | None = None
    to_account: str | None = None
    received_at: int = 0


def _claims(raw: bytes) -> _Claims:
    try:
        delivery = Delivery.from_bytes(raw)
    except E2EError:
        return _Claims()
    try:
        env = Envelope.from_bytes(delivery.envelope)
        return _Claims(Address.from_wire(*env.sender), env.message_id, env.to_account.decode(),
                       delivery.received_at)  # fmt: skip
    except (E2EError, UnicodeDecodeError):
        return _Claims(received_at=delivery.received_at)


def undecryptable(
    tx: StoreTransaction, profile: Profile, raw: bytes, exc: E2EError
) -> events.Undecryptable | None:
    """Keep a delivery that could not be accepted: an :class:`~e2e.client.events.Undecryptable`
    event with the error's name and text and the raw delivery. A delivery whose relay record
    does not even decode (it has no sequence number to acknowledge, so it comes again) is kept
    once: None the next times."""
    c = _claims(raw)
    if c.sender is None:
        mark = f"{_BAD}{hashlib.sha256(raw).hexdigest()}"
        if tx.app_get(mark) is not None:
            return None
        tx.app_put(mark, b"")
    event = events.Undecryptable(0, c.sender, c.message_id, type(exc).__name__,
                                 str(exc)[:512], raw, c.received_at)  # fmt: skip
    return events.append(tx, event)


# -- held deliveries -------------------------------------------------------------------------


def hold(tx: StoreTransaction, raw: bytes, seq: int) -> None:
    """Keep a delivery that cannot be judged until the application accepts a key change."""
    tx.app_put(f"{_HELD}{seq:020d}", raw)


def held(tx: StoreTransaction) -> list[tuple[str, bytes]]:
    """Held deliveries (record key, delivery) whose sender's key change is no longer
    pending (accepted, or withdrawn), oldest first."""
    out = []
    for key in tx.app_keys(_HELD):
        raw = tx.app_get(key)
        if raw is None:
            continue
        sender = _claims(raw).sender
        if sender is None or pending_key_change(tx, sender.name) is None:
            out.append((key, raw))
    return out


def release(tx: StoreTransaction, key: str) -> None:
    """Forget a held delivery (opened, or judged)."""
    if not key.startswith(_HELD):
        raise StoreError("not a held delivery", "app/" + key)
    tx.app_delete(key)


# -- delivered receipts due ----------------------------------------------------------------------


def receipts_due(tx: StoreTransaction) -> dict[str, list[bytes]]:
    """{conversation: [message ids]} whose delivered receipts are still to be sent."""
    out: dict[str, list[bytes]] = {}
    for key in tx.app_keys(_RCPT):
        conv, _, mid = key[len(_RCPT) :].partition("/")
        out.setdefault(unquote(conv), []).append(bytes.fromhex(mid))
    return out


def receipts_done(tx: StoreTransaction, conversation: str, message_ids: Sequence[bytes]) -> None:
    """The receipts for these messages are sealed (in the same transaction)."""
    for mid in message_ids:
        tx.app_delete(f"{_RCPT}{q(conversation)}/{mid.hex()}")


@dataclass(frozen=True, slots=True)
class Todo:
    """What the delivery contract still has due on this device, read in one transaction."""

    held: bool = False
    receipts: dict[str, list[bytes]] = field(default_factory=dict)
    #: Sealed messages the relay has not taken yet (a send, or a receipt, whose submission
    #: failed in transport).
    outbox: bool = False

    def __bool__(self) -> bool:
        return bool(self.held or self.receipts or self.outbox)


def todo(tx: StoreTransaction) -> Todo:
    """Everything due (cheap when nothing is: one key range per kind)."""
    return Todo(bool(tx.app_keys(_HELD)), receipts_due(tx), bool(tx.app_keys("c/out/")))
