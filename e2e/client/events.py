"""The events API: what a device hands its application, and their durable log (SPEC.md
§10.11).

Everything a device receives or learns is one typed :class:`Event`, written into the device's
store in the same transaction as the state change it reports, so the two never disagree after
a crash:

* :class:`MessageReceived` -- a message opened (from the other party, or a copy of one our
  account sent from another device);
* :class:`ReceiptReceived` -- a delivered or read receipt for messages we sent;
* :class:`MessageSent` / :class:`SendRefused` -- the fate of one of our own sends: the relay
  accepted it, or refused it for good (a policy refusal, with the error's name and text);
* :class:`KeyChanged` -- the relay serves another account key than the pinned one (sending
  to that account waits until the application accepts it, SPEC §13.3);
* :class:`DevicesChanged` -- a peer's certified device list gained or lost devices;
* :class:`Undecryptable` -- a delivery that could not be accepted, kept with its reason and
  its raw bytes (never dropped); a retry request asks its sender to send it again;
* :class:`CustomerNotice` -- (a business device) a customer blocked, limited or opted in to
  the business, or turned that off, or reported it for spam (the relay's notices, SPEC §17.2).

Each event has a position, ``seq``: positions increase in the order events are written, also
across a restore of the store from a backup (a position is never below the wall clock in
microseconds at the time it is written). The application reads the events after a cursor and
advances the cursor itself (:func:`ack`, durable in the store, or a cursor it keeps in its own
database with what it did with each event): a crash anywhere between the device's store and
the application then neither loses nor repeats an event.

Records: ``c/ev/<position, 20 digits>`` one event (below), ``c/ev-next`` u64 the next
position, ``c/ev-cursor`` u64 the position the application acknowledged (acknowledged events
are deleted).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Final, TypeVar

from e2e.client.records import Message, dump, load
from e2e.errors import StoreError
from e2e.platform.policy import MessageClass
from e2e.store import Address, StoreTransaction

__all__ = [
    "Event",
    "MessageReceived",
    "ReceiptReceived",
    "MessageSent",
    "SendRefused",
    "KeyChanged",
    "DevicesChanged",
    "Undecryptable",
    "CustomerNotice",
    "append",
    "read",
    "cursor",
    "ack",
    "rewrite",
    "EVENTS",
    "event_types",
]

#: Prefix of the event records.
EVENTS: Final = "c/ev/"
_NEXT: Final = "c/ev-next"
_CURSOR: Final = "c/ev-cursor"

_E = TypeVar("_E", bound="Event")


def _ids(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, list) or not all(type(i) is bytes for i in value):
        raise TypeError("a list of byte strings")
    return tuple(value)


def _ints(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(i) is int for i in value):
        raise TypeError("a list of integers")
    return tuple(value)


def _text(value: Any) -> str:
    if type(value) is not str:
        raise TypeError("text")
    return value


def _blob(value: Any) -> bytes:
    if type(value) is not bytes:
        raise TypeError("bytes")
    return value


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a device's log; ``seq`` is its position (0 until it is written)."""

    #: The record kind of this event type.
    KIND: ClassVar[int] = 0

    seq: int

    def _obj(self) -> dict[int, Any]:  # pragma: no cover - every event type has its own
        raise NotImplementedError

    @classmethod
    def _parse(cls, seq: int, obj: dict[int, Any], what: str) -> Event:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _MessageEvent(Event):
    """An event that carries one message of the history, and nothing else."""

    message: Message

    def _obj(self) -> dict[int, Any]:
        return {1: self.message.to_obj()}

    @classmethod
    def _parse(cls, seq: int, obj: dict[int, Any], what: str) -> Event:
        return cls(seq, Message.from_obj(obj[1], what))


@dataclass(frozen=True, slots=True)
class MessageReceived(_MessageEvent):
    """A message opened and stored in the history (its ``class_check`` set for a business's
    message to a customer once checked)."""

    KIND: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class ReceiptReceived(Event):
    """``sender`` (a device of the other account) saw our messages ``message_ids``:
    ``status`` is :attr:`~e2e.client.records.ReceiptStatus.DELIVERED` or ``READ``."""

    KIND: ClassVar[int] = 2
    sender: Address
    status: int
    message_ids: tuple[bytes, ...]
    time: int

    def _obj(self) -> dict[int, Any]:
        return {1: self.sender.name, 2: self.sender.device, 3: self.status,
                4: list(self.message_ids), 5: self.time}  # fmt: skip

    @classmethod
    def _parse(cls, seq: int, obj: dict[int, Any], what: str) -> Event:
        return cls(seq, Address(obj[1], obj[2]), obj[3], _ids(obj[4]), obj[5])


@dataclass(frozen=True, slots=True)
class MessageSent(_MessageEvent):
    """The relay accepted our message (``message.time`` is the relay's time)."""

    KIND: ClassVar[int] = 3


@dataclass(frozen=True, slots=True)
class SendRefused(Event):
    """The relay refused our message ``message_id`` to ``to`` for good: ``error`` names the
    :mod:`e2e.errors` class (``WindowClosed``, ``Blocked``...), ``reason`` is its text. The
    message is not kept; nothing of it was delivered."""

    KIND: ClassVar[int] = 4
    to: str
    message_id: bytes
    cls: MessageClass
    error: str
    reason: str

    def _obj(self) -> dict[int, Any]:
        return {1: self.to, 2: self.message_id, 3: int(self.cls), 4: self.error, 5: self.reason}

    @classmethod
    def _parse(cls, seq: int, obj: dict[int, Any], what: str) -> Event:
        return cls(seq, _text(obj[1]), _blob(obj[2]), MessageClass(obj[3]), _text(obj[4]),
                   _text(obj[5]))  # fmt: skip


@dataclass(frozen=True, slots=True)
class KeyChanged(Event):
    """The relay serves ``new`` as ``account``'s key where ``old`` is pinned: nothing is
    sent to that account until the application accepts it
    (:meth:`~e2e.client.Client.accept_key_change`, after comparing safety numbers)."""

    KIND: ClassVar[int] = 5
    account: str
    old: bytes
    new: bytes

    def _obj(self) -> dict[int, Any]:
        return {1: self.account, 2: self.old, 3: self.new}

    @classmethod
    def _parse(cls, seq: int, obj: dict[int, Any], what: str) -> Event:
        return cls(seq, _text(obj[1]), _blob(obj[2]), _blob(obj[3]))


@dataclass(frozen=True, slots=True)
class DevicesChanged(Event):
    """``account``'s certified device list changed: devices ``added`` and ``removed``."""

    KIND: ClassVar[int] = 6
    account: str
    added: tuple[int, ...]
    removed: tuple[int, ...]

    def _obj(self) -> dict[int, Any]:
        return {1: self.account, 2: list(self.added), 3: list(self.removed)}

    @classmethod
    def _parse(cls, seq: int, obj: dict[int, Any], what: str) -> Event:
        return cls(seq, _text(obj[1]), _ints(obj[2]), _ints(obj[3]))


@dataclass(frozen=True, slots=True)
class Undecryptable(Event):
    """A delivery this device could not accept: ``error`` names the :mod:`e2e.errors` class
    that refused it and ``reason`` is its text; ``sender`` and ``message_id`` are what its
    envelope claims (None if it did not decode); ``delivery`` is the delivery as received
    (kept, never dropped). A message the sender sends again after a retry request arrives
    as a later :class:`MessageReceived` with the same message id."""

    KIND: ClassVar[int] = 7
    sender: Address | None
    message_id: bytes | None
    error: str
    reason: str
    delivery: bytes = field(repr=False)
    time: int

    def _obj(self) -> dict[int, Any]:
        obj: dict[int, Any] = {3: self.error, 4: self.reason, 5: self.delivery, 6: self.time}
        if self.sender is not None:
            obj[1] = [self.sender.name, self.sender.device]
        if self.message_id is not None:
            obj[2] = self.message_id
        return obj

    @classmethod
    def _parse(cls, seq: int, obj: dict[int, Any], what: str) -> Event:
        sender = obj.get(1)
        mid = obj.get(2)
        return cls(
            seq,
            None if sender is None else Address(sender[0], sender[1]),
            None if mid is None else _blob(mid),
            _text(obj[3]), _text(obj[4]), _blob(obj[5]), obj[6],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class CustomerNotice(Event):
    """(A business device) what ``customer`` did about this business at ``time`` (the relay's
    time): ``kind`` is ``"block"``, ``"limit"`` or ``"opt_in"`` with ``value`` 1 (turned on)
    or 0 (off), or ``"spam_report"`` with ``value`` the messages it newly reported."""

    KIND: ClassVar[int] = 8
    #: The relay's notice kinds (:class:`~e2e.platform.wire.Notices`) by name.
    KINDS: ClassVar[tuple[str, ...]] = ("block", "limit", "opt_in", "spam_report")
    customer: str
    kind: str
    value: int
    time: int

    def _obj(self) -> dict[int, Any]:
        return {1: self.customer, 2: self.kind, 3: self.value, 4: self.time}

    @classmethod
    def _parse(cls, seq: int, obj: dict[int, Any], what: str) -> Event:
        kind = _text(obj[2])
        if kind not in cls.KINDS or type(obj[3]) is not int or type(obj[4]) is not int:
            raise ValueError("a customer notice")
        return cls(seq, _text(obj[1]), kind, obj[3], obj[4])


def event_types() -> tuple[type[Event], ...]:
    """Every event type, in the order of their record kinds: the classes below
    :class:`Event` defined here that have a record kind of their own (a base such as
    ``_MessageEvent`` has none; a slots dataclass replaces its class, so each name's class in
    this module is the one in use)."""
    found: set[type[Event]] = set()
    below: list[type[Event]] = [Event]
    while below:
        for c in below.pop().__subclasses__():
            below.append(c)
            if c.KIND:
                found.add(globals()[c.__name__])
    return tuple(sorted(found, key=lambda t: t.KIND))


_KINDS: Final[dict[int, type[Event]]] = {t.KIND: t for t in event_types()}
if len(_KINDS) != len(event_types()):  # pragma: no cover - a programming error
    raise RuntimeError("two event types share a record kind")


def _key(seq: int) -> str:
    return f"{EVENTS}{seq:020d}"


def _u64(tx: StoreTransaction, key: str) -> int:
    raw = tx.app_get(key)
    if raw is None:
        return 0
    if len(raw) != 8:
        raise StoreError("malformed record", "app/" + key)
    return int.from_bytes(raw, "big")


def append(tx: StoreTransaction, event: _E) -> _E:
    """Write ``event`` at the next position (in ``tx``, with the change it reports); returns
    it with its position."""
    seq = max(_u64(tx, _NEXT), time.time_ns() // 1000, _u64(tx, _CURSOR) + 1)
    tx.app_put(_NEXT, (seq + 1).to_bytes(8, "big"))
    written = replace(event, seq=seq)
    tx.app_put(_key(seq), dump({0: event.KIND, **written._obj()}))
    return written


def rewrite(tx: StoreTransaction, event: Event) -> None:
    """Replace the stored event at ``event.seq`` (a message's class check, added after it was
    opened), unless the application has acknowledged it already."""
    if tx.app_get(_key(event.seq)) is not None:
        tx.app_put(_key(event.seq), dump({0: event.KIND, **event._obj()}))


def _decode(key: str, raw: bytes) -> Event:
    what = "app/" + key
    obj = load(raw, what)
    try:
        seq = int(key[len(EVENTS) :])
        kind = _KINDS[obj[0]]
        return kind._parse(seq, obj, what)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        raise StoreError("malformed record", what) from None


def cursor(tx: StoreTransaction) -> int:
    """The position the application acknowledged last (0: none)."""
    return _u64(tx, _CURSOR)


def read(tx: StoreTransaction, after: int | None = None, limit: int = 256) -> list[Event]:
    """Up to ``limit`` events after position ``after`` (default: the acknowledged cursor),
    oldest first."""
    start = cursor(tx) if after is None else after
    out: list[Event] = []
    for key in tx.app_keys(EVENTS):  # in key order, which is position order
        if int(key[len(EVENTS) :]) <= start:
            continue
        raw = tx.app_get(key)
        if raw is None:  # acknowledged by another process sharing the store meanwhile
            continue
        out.append(_decode(key, raw))
        if len(out) >= limit:
            break
    return out


def ack(tx: StoreTransaction, upto: int) -> int:
    """Move the acknowledged cursor to ``upto`` (never backwards) and delete the events up
    to it; returns the cursor."""
    current = cursor(tx)
    if upto <= current:
        return current
    for key in tx.app_keys(EVENTS):
        if int(key[len(EVENTS) :]) > upto:
            break
        tx.app_delete(key)
    tx.app_put(_CURSOR, upto.to_bytes(8, "big"))
    return upto
