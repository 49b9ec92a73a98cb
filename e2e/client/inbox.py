"""The receiving side of a client device, one store transaction per step (SPEC.md §10.10,
§10.11): opening a delivery, keeping what could not be opened, and the durable to-do records
of the delivery contract and the retry protocol.

Records (besides the history, ``c/seen/`` and ``c/status/`` of :mod:`e2e.client.state`):

===================================  ==========================================================
key                                  value
===================================  ==========================================================
``c/held/<relay seq, 20 digits>``    a delivery whose sender's account key changed: opened
                                     again once the application accepted the new key
``c/rcpt/<account>/<id hex>``        empty: a delivered receipt to send for that message
``c/retry/<account>/<dev>/<id hex>``  {0: retry requests sent, 1: one is due, 2: conversation}:
                                     a message of that device this one could not decrypt
``c/resend/<account>/<dev>``         {0: conversation, 1: [message ids], 2?: since}: what
                                     that device asked this one to send again
``c/reout/<id hex>/<account>/<dev>``  {0: to, 1: [envelope]}: a message sealed again for that
                                     device, not yet accepted by the relay
``c/alive``                          empty, rewritten at every open: found stale (written
                                     before the store's restore point, SPEC §9.7), it says
                                     the store was restored from a backup
``c/recover``                        the recovery after a restore is not finished: empty, or
                                     {conversation: since} still to ask
``c/restored``                       {0: since, 1: [conversations]}: after a restore, the time
                                     of the newest message the restored store held, and the
                                     conversations already asked for everything since then
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
from e2e.client.contacts import (
    certified_devices,
    device_key,
    note_list_version,
    pending_key_change,
)
from e2e.client.records import (
    MAX_RECEIPT_IDS,
    Message,
    Profile,
    ReceiptStatus,
    dump,
    load,
    load_fields,
    parse_receipt,
    q,
)
from e2e.client.state import PEER_HEADS, _msg_key, conversations, history
from e2e.errors import (
    DecryptError,
    DuplicateMessage,
    E2EError,
    EnvelopeMismatch,
    FrankingMismatch,
    KeyAgreementError,
    RelayError,
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
    "asks_retry",
    "transient",
    "note_open",
    "MAX_RETRIES",
    "MAX_RESEND",
]

#: Retry requests one device sends for one message it cannot decrypt, at most.
MAX_RETRIES: Final = 2
#: Messages one retry request makes this device send again, at most (the newest).
MAX_RESEND: Final = 200
#: How far back a restored device asks again (the relay's de-duplication retention: it takes
#: a resend only of a message it still remembers accepting, SPEC §10.8).
RESEND_WINDOW: Final = 7 * 24 * 3600

_HELD: Final = "c/held/"
_RCPT: Final = "c/rcpt/"
_RETRY: Final = "c/retry/"
_RESEND: Final = "c/resend/"
_REOUT: Final = "c/reout/"
_ALIVE: Final = "c/alive"
_RECOVER: Final = "c/recover"
_RESTORED: Final = "c/restored"
#: How many conversations ``c/restored`` remembers as asked (the oldest are forgotten: one
#: of those is at most asked again).
MAX_RESTORED_ASKED: Final = 1000
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
    With ``receipts``, a delivered receipt for it is due (``c/rcpt/``). A retry request
    (SPEC §10.11) is recorded as a to-do, not as an event.

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
    tx.app_delete(_retry_key(sender, env.message_id))  # it arrived after all
    note_list_version(tx, sender.name, inner.list_version)  # a newer list: re-check it
    if inner.log_head:  # the sender's key-log head: checked after this batch (SPEC §13.4)
        tx.app_put(PEER_HEADS + hashlib.sha256(inner.log_head).hexdigest(), inner.log_head)
    own = inner.from_account == profile.account.encode()
    conversation = (inner.to_account if own else inner.from_account).decode()
    _restored_meets(tx, conversation)
    msg = Message(conversation, sender, inner.cls, inner.message_id, inner.body,
                  delivery.received_at, own, raw, inner.franking_key,
                  inner.template_id, attachment=inner.attachment)  # fmt: skip
    event: events.Event | None = None
    if inner.cls is MessageClass.RECEIPT:
        receipt = parse_receipt(inner.body)
        if receipt.kind == ReceiptStatus.RETRY:
            _asked_resend(tx, sender, conversation, receipt.message_ids, receipt.since)
        elif not own:
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


def transient(exc: E2EError) -> bool:
    """True if ``exc`` says nothing about the message being opened or sent: a retryable error
    (SPEC §8), or any refusal of the request itself by the relay (a ``RelayError``: e.g. a
    request the network duplicated is refused as replayed) while the device asked the relay
    something it needed (a device list, a bundle). Such a failure is never a verdict on a
    message (SPEC §10.11): the delivery stays in the mailbox, what is due stays due."""
    return exc.retryable or isinstance(exc, RelayError)


def asks_retry(exc: E2EError) -> bool:
    """True if a delivery refused with ``exc`` may open when its sender sends it again on a
    fresh session: the session could not decrypt it (lost or older state, an unknown or
    reused prekey), as opposed to a delivery that is not for us or not from its sender."""
    if isinstance(exc, DuplicateMessage | NeedDevices):
        return False
    if isinstance(exc, FrankingMismatch | UntrustedDevice):
        return False  # decrypted, but not what its envelope says: a resend would not differ
    return isinstance(exc, DecryptError | KeyAgreementError | StateError)


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
    event with the error's name and text and the raw delivery. If a resend could help
    (:func:`asks_retry`) and the sender is a certified device, a retry request to it is due
    (at most :data:`MAX_RETRIES` per message). A delivery whose relay record does not even
    decode (it has no sequence number to acknowledge, so it comes again) is kept once: None
    the next times."""
    c = _claims(raw)
    if c.sender is None:
        mark = f"{_BAD}{hashlib.sha256(raw).hexdigest()}"
        if tx.app_get(mark) is not None:
            return None
        tx.app_put(mark, b"")
    elif c.message_id is not None and c.to_account is not None and asks_retry(exc):
        if device_key(tx, c.sender) is not None:
            own = c.sender.name == profile.account
            conv = c.to_account if own else c.sender.name
            key = _retry_key(c.sender, c.message_id)
            sent_before = _retry_state(tx, key)[0]
            if sent_before < MAX_RETRIES:
                tx.app_put(key, dump({0: sent_before, 1: True, 2: conv}))
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


def _forget(tx: StoreTransaction, key: str, prefix: str, what: str) -> None:
    """Delete the record ``key``, which must be one under ``prefix`` (a ``what``): a key
    handed back by the application never reaches another kind of record."""
    if not key.startswith(prefix):
        raise StoreError(f"not a {what}", "app/" + key)
    tx.app_delete(key)


def release(tx: StoreTransaction, key: str) -> None:
    """Forget a held delivery (opened, or judged)."""
    _forget(tx, key, _HELD, "held delivery")


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


# -- retry requests (SPEC §10.11) ----------------------------------------------------------------


def _retry_key(sender: Address, message_id: bytes) -> str:
    return f"{_RETRY}{q(sender.name)}/{sender.device}/{message_id.hex()}"


def _retry_state(tx: StoreTransaction, key: str) -> tuple[int, bool, str]:
    fields = load_fields(tx, key, 3)
    if fields is None:
        return 0, False, ""
    count, due, conv = fields
    if type(count) is not int or type(due) is not bool or type(conv) is not str:
        raise StoreError("malformed record", "app/" + key)
    return count, due, conv


@dataclass(frozen=True, slots=True)
class RetryDue:
    """Message ids of ``sender`` (in ``conversation``) to ask for again; ``since``: also
    everything sent since then (the first request to a conversation the device learns of
    only after its store was restored, :func:`recovery_plan`)."""

    sender: Address
    conversation: str
    message_ids: tuple[bytes, ...]
    since: int | None = None


def _restored(tx: StoreTransaction) -> tuple[int, list[str]] | None:
    fields = load_fields(tx, _RESTORED, 2)
    if fields is None:
        return None
    since, asked = fields
    if type(since) is not int or not isinstance(asked, list):
        raise StoreError("malformed record", "app/" + _RESTORED)
    return since, asked


def _restored_asked(tx: StoreTransaction, conversation: str) -> None:
    got = _restored(tx)
    if got is not None and conversation not in got[1]:
        asked = [*got[1], conversation][-MAX_RESTORED_ASKED:]
        tx.app_put(_RESTORED, dump({0: got[0], 1: asked}))


def _restored_meets(tx: StoreTransaction, conversation: str) -> None:
    """A message of ``conversation`` opened after a restore: if the recovery has not asked
    that conversation yet (the backup did not know it), it is asked now for everything sent
    since the restored store's newest message (``c/recover``, done by the follow-ups)."""
    got = _restored(tx)
    if got is None or conversation in got[1]:
        return
    raw = tx.app_get(_RECOVER)
    if raw == b"":
        return  # the recovery plan, not yet computed, asks every conversation of the history
    _restored_asked(tx, conversation)
    left = {} if raw is None else dict(load(raw, "app/" + _RECOVER))
    left.setdefault(conversation, got[0])
    tx.app_put(_RECOVER, dump(left))


def retries_due(tx: StoreTransaction) -> list[RetryDue]:
    """The retry requests this device still has to send, one per sender device."""
    found: dict[tuple[Address, str], list[bytes]] = {}
    for key in tx.app_keys(_RETRY):
        _, due, conv = _retry_state(tx, key)
        if not due:
            continue
        name, device, mid = key[len(_RETRY) :].split("/")
        addr = Address(unquote(name), int(device))
        found.setdefault((addr, conv), []).append(bytes.fromhex(mid))
    restored = _restored(tx)
    out = []
    for (a, c), ids in found.items():
        since = restored[0] if restored is not None and c not in restored[1] else None
        out.append(RetryDue(a, c, tuple(ids[:MAX_RECEIPT_IDS]), since))
    return out


def retries_sent(tx: StoreTransaction, due: RetryDue) -> None:
    """The retry request for ``due`` is sealed (in the same transaction)."""
    if due.since is not None:
        _restored_asked(tx, due.conversation)
    for mid in due.message_ids:
        key = _retry_key(due.sender, mid)
        count, pending, conv = _retry_state(tx, key)
        if pending:
            tx.app_put(key, dump({0: count + 1, 1: False, 2: conv}))


# -- resending what a device asked for (SPEC §10.11) -------------------------------------------


@dataclass(frozen=True, slots=True)
class ResendAsk:
    """What ``requester`` asked this device to send again in ``conversation``."""

    requester: Address
    conversation: str
    message_ids: tuple[bytes, ...]
    since: int | None


def _resend_key(requester: Address) -> str:
    return f"{_RESEND}{q(requester.name)}/{requester.device}"


def _read_ask(tx: StoreTransaction, key: str) -> ResendAsk | None:
    raw = tx.app_get(key)
    if raw is None:
        return None
    name, _, device = key[len(_RESEND) :].partition("/")
    obj = load(raw, "app/" + key)
    try:
        return ResendAsk(Address(unquote(name), int(device)), obj[0], tuple(obj[1]), obj.get(2))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise StoreError("malformed record", "app/" + key) from None


def _asked_resend(
    tx: StoreTransaction, requester: Address, conversation: str, ids: Sequence[bytes],
    since: int | None,
) -> None:  # fmt: skip
    key = _resend_key(requester)
    before = _read_ask(tx, key)
    if before is not None:
        ids = list(dict.fromkeys([*before.message_ids, *ids]))[-1000:]
        if before.since is not None:
            since = before.since if since is None else min(since, before.since)
    obj: dict[int, object] = {0: conversation, 1: list(ids)}
    if since is not None:
        obj[2] = since
    tx.app_put(key, dump(obj))


def resends_asked(tx: StoreTransaction) -> list[ResendAsk]:
    """The retry requests received and not yet answered."""
    return [a for k in tx.app_keys(_RESEND) if (a := _read_ask(tx, k)) is not None]


def resend_plan(tx: StoreTransaction, profile: Profile, ask: ResendAsk) -> list[Message]:
    """The messages this device sent in ``ask.conversation`` that ``ask`` names (by id, or
    at or after ``since``), newest :data:`MAX_RESEND` of them, oldest first. Only what this
    device itself sent and still holds in its history: receipts are not kept, and a message
    sent before franking keys were kept in the history cannot be sealed again."""
    wanted = set(ask.message_ids)
    out = [
        m for m in history(tx, ask.conversation)
        if m.sender == profile.addr and m.franking_key
        and (m.message_id in wanted or (ask.since is not None and m.time >= ask.since))
    ]  # fmt: skip
    return out[-MAX_RESEND:]


def resend_sealed(
    tx: StoreTransaction, ask: ResendAsk, sealed: Sequence[tuple[Message, bytes]]
) -> None:
    """The answer to ``ask`` is sealed: each message's envelope for the requester is kept
    (``c/reout/``) until the relay accepts it, and the ask is done (one transaction)."""
    r = ask.requester
    for msg, env in sealed:
        tx.app_put(f"{_REOUT}{msg.message_id.hex()}/{q(r.name)}/{r.device}",
                   dump({0: msg.conversation, 1: [env]}))  # fmt: skip
    tx.app_delete(_resend_key(r))


def resends_pending(tx: StoreTransaction) -> list[tuple[str, list[bytes]]]:
    """Sealed resends not yet accepted by the relay: (record key, envelopes)."""
    out = []
    for key in tx.app_keys(_REOUT):
        raw = tx.app_get(key)
        if raw is None:
            continue
        obj = load(raw, "app/" + key)
        try:
            envs = list(obj[1])
        except (KeyError, TypeError):
            raise StoreError("malformed record", "app/" + key) from None
        out.append((key, envs))
    return out


def resend_done(tx: StoreTransaction, key: str) -> None:
    """The relay accepted (or refused for good) the resend kept under ``key``."""
    _forget(tx, key, _REOUT, "resend")


# -- what is due -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Todo:
    """What the delivery contract still has due on this device, read in one transaction."""

    held: bool = False
    receipts: dict[str, list[bytes]] = field(default_factory=dict)
    #: Sealed messages the relay has not taken yet (a send, or a receipt, whose submission
    #: failed in transport).
    outbox: bool = False
    retries: list[RetryDue] = field(default_factory=list)
    asks: list[ResendAsk] = field(default_factory=list)
    resends: bool = False
    recover: bool = False

    def __bool__(self) -> bool:
        return bool(self.held or self.receipts or self.outbox or self.retries or self.asks
                    or self.resends or self.recover)  # fmt: skip


def todo(tx: StoreTransaction) -> Todo:
    """Everything due (cheap when nothing is: one key range per kind)."""
    return Todo(
        bool(tx.app_keys(_HELD)), receipts_due(tx), bool(tx.app_keys("c/out/")),
        retries_due(tx), resends_asked(tx), bool(tx.app_keys(_REOUT)),
        tx.app_get(_RECOVER) is not None,
    )  # fmt: skip


# -- a store restored from a backup (SPEC §10.11) -------------------------------------------


def note_open(tx: StoreTransaction) -> bool:
    """Called at every open: True if the store was restored from a backup since the last
    open (``c/alive`` was written before the restore point, SPEC §9.7), which leaves the
    recovery due (``c/recover``) until :func:`recovered`; ``c/alive`` is rewritten."""
    raw, fresh = tx.app_get_fresh(_ALIVE)
    restored = raw is not None and not fresh
    if restored:
        tx.app_put(_RECOVER, b"")
    tx.app_put(_ALIVE, b"")
    return restored or tx.app_get(_RECOVER) is not None


def recovery_plan(tx: StoreTransaction, profile: Profile) -> dict[str, int]:
    """{conversation: relay time from which to ask again}, the restored device's to-do: the
    devices of each conversation are asked for everything they sent since its newest message
    there (conversations whose newest message is more than :data:`RESEND_WINDOW` older than
    the newest of all are left out: the relay no longer takes a resend of what was sent
    then), and of every other account it knows devices of, for everything (a conversation
    that began after the backup). Computed once, then kept in ``c/recover`` until every
    conversation was asked. A conversation the restored store did not know at all (its
    first message came after the backup, and only the device's own other devices or the
    peer know of it) is asked once it shows itself: ``c/restored`` keeps the newest time the
    store held, and the first retry request to such a conversation asks for everything sent
    since then (:func:`retries_due`)."""
    raw = tx.app_get(_RECOVER)
    if raw is None:
        return {}
    if raw:
        obj = load(raw, "app/" + _RECOVER)
        if not isinstance(obj, dict):
            raise StoreError("malformed record", "app/" + _RECOVER)
        return dict(obj)
    out: dict[str, int] = {}
    convs = conversations(tx)
    newest = {c: msgs[-1].time for c in convs if (msgs := history(tx, c))}
    now = max(newest.values(), default=0)  # the relay's time, as far as this device knows
    for conv, at in newest.items():
        if now - at <= RESEND_WINDOW:
            out[conv] = at
    known = {unquote(k.split("/")[2]) for k in tx.app_keys("c/devices/")}
    for account in sorted(known - set(convs) - {profile.account}):
        if certified_devices(tx, account):
            out[account] = 0
    tx.app_put(_RESTORED, dump({0: now, 1: sorted(out)}))
    if out:
        tx.app_put(_RECOVER, dump(out))
    else:
        tx.app_delete(_RECOVER)
    return out


def recovery_asked(tx: StoreTransaction, conversation: str) -> None:
    """The retry request of the recovery to ``conversation`` is sealed (same transaction)."""
    raw = tx.app_get(_RECOVER)
    if not raw:
        return
    left = dict(load(raw, "app/" + _RECOVER))
    left.pop(conversation, None)
    if left:
        tx.app_put(_RECOVER, dump(left))
    else:
        tx.app_delete(_RECOVER)
