"""A client device's whole state as records of its :mod:`e2e.store` (SPEC.md §10.10).

Everything here is synchronous and runs inside one store transaction, so a step either
commits completely or leaves the store exactly as it was. The async client
(:mod:`e2e.client.device`) runs these functions off the event loop.

Records (application records of the store, sealed like every other record; values are
canonical CBOR maps with small integer keys unless noted):

==============================  ===============================================================
key                             value
==============================  ===============================================================
``c/profile``                   {0: account, 1: device id, 2: kind, 3: suite id, 4: tier}
``c/cert``                      this device's certificate (DeviceCertificate bytes)
``c/account-key``               the account identity key pair (secret | public), on the one
                                device that issues certificates (the account's first device)
``c/next-device``               u64: the next device id the account key hands out
``c/reg/<what>``                empty: ``account`` / ``device`` registration acknowledged
``c/pin/<account>``             32 bytes: the pinned account identity key
``c/keychange/<account>``       {0: old key, 1: new key}: the relay now serves another account
                                key than the pinned one; sending waits until accepted
``c/platform-key``              32 bytes: the pinned platform key (business certificates)
``c/devices/<account>``         {device id: identity key} of certified devices
``c/devlist/<account>``         the newest signed device list of ``account`` accepted
``c/route/<account>/<chat>``    [device ids]: the devices of a business that receive ``chat``
``c/pub/<prekey id>``           empty: this one-time (X25519 or KEM) prekey was accepted by the
                                relay, never uploaded again
``c/seen/<account>/<id hex>``   empty: a message id of that sender already processed
``c/msg/<conv>/<t>/<n>/<id>``   a :class:`Message` (``t``: 12-digit relay time, ``n``: 12-digit
                                local count, so a prefix scan is in time, then arrival order)
``c/seq``                       u64: the next local count
``c/out/<id hex>``              an outgoing message not yet acknowledged by the relay:
                                {0: to, 1: class, 2: franking key, 3: body, 4: [envelopes],
                                5: message id, 6?: template id}
``c/status/<id hex>``           {account: receipt status} for one of our messages
==============================  ===============================================================

The receiving side's records are :mod:`e2e.client.inbox`'s, the event log
:mod:`e2e.client.events`'; account names in keys are percent-encoded
(:func:`~e2e.client.records.q`), so no name can reach into another's records.

One trust model: an account identity key is pinned (on first use, or out of band with
:func:`pin`); a device is trusted only with a certificate that verifies under its account's
pinned key. A list under another account key than the pinned one is not accepted: it
becomes a pending key change (:func:`note_key_change`) that the application accepts
(:func:`accept_key_change`) before anything is sent to that account again.
:func:`accept_device_list` is the one place a fetched device list enters the
store; it records each certified device key as the store's approved identity for that
address, so the store's own per-device checks (``initiate``, ``encrypt``) agree with the
certificates.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field, replace
from typing import Final
from urllib.parse import unquote

from e2e.client import events
from e2e.client.contacts import (
    DeviceListHook,
    accept_device_list,
    certified_devices,
    device_key,
    device_list,
    pin,
    pinned,
    route,
)
from e2e.client.records import Message, Profile, ReceiptStatus, dump, load, q
from e2e.errors import (
    DecodeError,
    E2EError,
    StateError,
    StoreError,
    UntrustedDevice,
)
from e2e.keys import KeyPair, Rng
from e2e.platform.directory import DeviceCertificate, SignedDeviceList
from e2e.platform.envelope import Envelope, Inner
from e2e.platform.franking import commit_inner
from e2e.platform.policy import MessageClass
from e2e.prekeys import PrekeyBundle
from e2e.store import Address, StoreTransaction, upkeep
from e2e.suite import Suite, get_suite

__all__ = [
    "Profile",
    "Message",
    "ReceiptStatus",
    "DeviceListHook",
    "Draft",
    "Outgoing",
    "load_profile",
    "create_profile",
    "accept_device_list",
    "pin",
    "pinned",
    "certified_devices",
    "route",
    "prepare_prekeys",
    "mark_published",
    "seal",
    "sent",
    "refused",
    "history",
]

_KINDS: Final = ("customer", "business")
_ACCOUNT_KEY: Final = "c/account-key"


PLATFORM_KEY: Final = "c/platform-key"


def _msg_key(tx: StoreTransaction, conversation: str, time: int, message_id: bytes) -> str:
    raw = tx.app_get("c/seq")
    seq = 0 if raw is None else int.from_bytes(raw, "big")
    tx.app_put("c/seq", (seq + 1).to_bytes(8, "big"))
    return f"c/msg/{q(conversation)}/{time:012d}/{seq:012d}/{message_id.hex()}"


# -- profile and identity ------------------------------------------------------------------


def load_profile(tx: StoreTransaction) -> Profile | None:
    """The stored profile, or None for a store no client has set up."""
    raw = tx.app_get("c/profile")
    if raw is None:
        return None
    obj = load(raw, "app/c/profile")
    try:
        return Profile(obj[0], obj[1], obj[2], get_suite(obj[3]), obj.get(4, 0))
    except (KeyError, TypeError, ValueError, DecodeError):
        raise StoreError("malformed record", "app/c/profile") from None


def create_profile(
    tx: StoreTransaction,
    profile: Profile,
    account_identity: bytes,
    certificate: DeviceCertificate,
    device_list: bytes,
) -> None:
    """Record who this device is, its certificate and the signed device list that carries
    it (sent along with its registration, ``c/reg/list``), and pin its own account key."""
    if profile.kind not in _KINDS:
        raise StateError("an account is a customer or a business")
    if load_profile(tx) is not None:
        raise StateError("this store already belongs to a device")
    ident = tx.local_identity()
    if not hmac.compare_digest(certificate.identity, ident.public):
        raise StateError("certificate is for another device key")
    certificate.verify(account_identity)
    tx.app_put("c/profile", dump({0: profile.account, 1: profile.device, 2: profile.kind,
                                    3: profile.suite.id, 4: profile.tier}))  # fmt: skip
    tx.app_put("c/cert", certificate.to_bytes())
    tx.app_put(REG_LIST, device_list)
    accept_device_list(
        tx,
        profile.account,
        account_identity,
        list(SignedDeviceList.from_bytes(device_list).certificates),
        device_list,
    )
    if device_key(tx, profile.addr) is None:
        raise StateError("the device list does not carry this device")


#: The signed device list a device's registration carries.
REG_LIST: Final = "c/reg/list"


def store_account_key(tx: StoreTransaction, pair: KeyPair, next_device: int) -> None:
    """Keep the account identity key (on the device that certifies the others)."""
    tx.app_put(_ACCOUNT_KEY, pair.private_bytes() + pair.public)
    tx.app_put("c/next-device", next_device.to_bytes(8, "big"))


def account_key(tx: StoreTransaction) -> KeyPair | None:
    """The account identity key pair if this device holds it."""
    raw = tx.app_get(_ACCOUNT_KEY)
    if raw is None:
        return None
    if len(raw) != 64:
        raise StoreError("malformed record", "app/" + _ACCOUNT_KEY)
    return KeyPair.from_stored(raw[:32], raw[32:])


def allocate_device_id(tx: StoreTransaction) -> int:
    """The next device id of the account (only on the device holding the account key)."""
    raw = tx.app_get("c/next-device")
    if raw is None or len(raw) != 8:
        raise StateError("this device does not hold the account key")
    value = int.from_bytes(raw, "big")
    tx.app_put("c/next-device", (value + 1).to_bytes(8, "big"))
    return value


def certificate(tx: StoreTransaction) -> bytes:
    """This device's certificate."""
    raw = tx.app_get("c/cert")
    if raw is None:
        raise StoreError("no certificate", "app/c/cert")
    return raw


def registered(tx: StoreTransaction, what: str) -> bool:
    """True once the relay acknowledged registering ``what`` (account / device)."""
    return tx.app_get(f"c/reg/{what}") is not None


def mark_registered(tx: StoreTransaction, what: str) -> None:
    """Record that the relay acknowledged registering ``what``."""
    tx.app_put(f"c/reg/{what}", b"")


# -- prekeys -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrekeyUpload:
    """Bundles to upload: one per unpublished one-time prekey, plus the last-resort one."""

    one_time: list[bytes]
    last_resort: bytes
    ids: list[int]


def prepare_prekeys(
    tx: StoreTransaction,
    suite: Suite,
    *,
    add: int = 0,
    now: int | None = None,
    rng: Rng = os.urandom,
) -> PrekeyUpload:
    """Rotate the signed / last-resort prekeys if due, add ``add`` new one-time prekeys, and
    return the bundles of every unused one-time prekey not yet marked published.

    The same unpublished prekeys come back until :func:`mark_published` records them, so an
    upload whose answer was lost is repeated with the same ids (the relay ignores ids it
    has seen) and a prekey is never published twice.
    """
    upkeep.rotate(tx, suite, now=now, rng=rng)
    if add:
        have = len(tx.one_time_prekeys())
        upkeep.replenish(tx, suite, target=have + add, now=now, rng=rng)
    identity = tx.local_identity().public
    spk = tx.signed_prekeys()[-1].item
    published = {int(k.rsplit("/", 1)[1]) for k in tx.app_keys("c/pub/")}
    opks = [p for p in tx.one_time_prekeys() if p.id not in published]
    kems = tx.kem_prekeys()
    fresh = [k.item for k in kems if not k.item.last_resort and k.item.id not in published]
    resort = [k.item for k in kems if k.item.last_resort]
    bundles: list[bytes] = []
    ids: list[int] = []
    for i, opk in enumerate(opks):
        kem = fresh[i] if i < len(fresh) else None
        if kem is None:
            break
        bundles.append(PrekeyBundle.from_keys(suite, identity, spk, opk, kem).to_bytes())
        ids.append(opk.id)
        if kem is not None:
            ids.append(kem.id)
    last = PrekeyBundle.from_keys(suite, identity, spk, None, resort[-1] if resort else None)
    return PrekeyUpload(bundles, last.to_bytes(), ids)


def mark_published(tx: StoreTransaction, ids: list[int]) -> None:
    """Record that the relay accepted these prekey ids."""
    for pid in ids:
        tx.app_put(f"c/pub/{pid}", b"")


def forget_published(tx: StoreTransaction) -> int:
    """Drop published marks of prekeys that are gone (used or removed). Returns how many."""
    live = {p.id for p in tx.one_time_prekeys()} | {k.item.id for k in tx.kem_prekeys()}
    n = 0
    for key in tx.app_keys("c/pub/"):
        if int(key.rsplit("/", 1)[1]) not in live:
            tx.app_delete(key)
            n += 1
    return n


# -- sending -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Draft:
    """One logical message to seal, everything of it but the devices it goes to: what
    :func:`seal` and :func:`seal_copies` put into the inner message, the franking commitment
    and the envelopes. ``log_head`` is the signed log head it carries (SPEC §13.4; empty:
    none), ``template_id`` the registered template a business sends (SPEC §10.2),
    ``attachment`` an attachment's pointer encoding (SPEC §16.5), ``entry`` an ad's entry
    token the relay sees beside the envelopes (SPEC §17.4; never sealed)."""

    to: str
    cls: MessageClass
    message_id: bytes
    franking_key: bytes
    body: bytes
    template_id: bytes | None = None
    attachment: bytes | None = None
    entry: bytes | None = None
    log_head: bytes = b""

    def __repr__(self) -> str:
        return f"Draft({self.cls.name}, id={self.message_id.hex()[:8]}, {len(self.body)} B)"

    @classmethod
    def of(cls, message: Message) -> Draft:
        """The draft that seals ``message`` of the history again, unchanged (its own id,
        franking key and body, no log head)."""
        return cls(message.conversation, message.cls, message.message_id,
                   message.franking_key, message.body, message.template_id,
                   message.attachment)  # fmt: skip


@dataclass(frozen=True, slots=True, repr=False)
class Outgoing(Draft):
    """A sealed outgoing message, kept in ``c/out/`` until the relay acknowledges it: the
    draft it was sealed from (its log head is not kept) and its envelopes."""

    envelopes: tuple[bytes, ...] = field(kw_only=True)

    def __repr__(self) -> str:
        return f"Outgoing({self.cls.name}, id={self.message_id.hex()[:8]}, {len(self.envelopes)})"

    @property
    def draft(self) -> Draft:
        """The draft to seal this message again (for devices that changed)."""
        return Draft(self.to, self.cls, self.message_id, self.franking_key, self.body,
                     self.template_id, self.attachment, self.entry)  # fmt: skip

    def to_record(self) -> bytes:
        """The ``c/out/...`` record value."""
        opt = {k: v for k, v in ((6, self.template_id), (7, self.attachment), (8, self.entry))
               if v is not None}  # fmt: skip
        return dump({0: self.to, 1: int(self.cls), 2: self.franking_key, 3: self.body,
                      4: list(self.envelopes), 5: self.message_id, **opt})  # fmt: skip

    @classmethod
    def from_record(cls, raw: bytes, what: str) -> Outgoing:
        """Inverse of :meth:`to_record`."""
        obj = load(raw, what)
        try:
            return cls(obj[0], MessageClass(obj[1]), obj[5], obj[2], obj[3], obj.get(6),
                       obj.get(7), obj.get(8), envelopes=tuple(obj[4]))  # fmt: skip
        except (KeyError, TypeError, ValueError):
            raise StoreError("malformed record", what) from None


def outbox(tx: StoreTransaction) -> list[Outgoing]:
    """Outgoing messages sealed but not yet acknowledged by the relay. (An entry listed but
    gone when read was recorded as sent meanwhile by another process sharing this store.)"""
    out = []
    for key in tx.app_keys("c/out/"):
        raw = tx.app_get(key)
        if raw is not None:
            out.append(Outgoing.from_record(raw, "app/" + key))
    return out


#: Store records of log heads carried by received messages, still to be compared with ours.
PEER_HEADS = "c/peerhead/"


def seal(tx: StoreTransaction, profile: Profile, draft: Draft, dests: list[Address]) -> Outgoing:
    """Encrypt one logical message for every destination and commit the advanced sessions
    together with the outbox entry, before any byte leaves (SPEC.md §9.4). The draft's
    template id travels inside the frame, in the franking commitment and on every envelope;
    so does its attachment (SPEC §16.5).

    Every destination must have a session (:func:`needs_session`). Each frame spends a
    message key for good: a refused send is sealed again, never rolled back.
    """
    d = draft
    tx.app_lock(f"c/out/{d.message_id.hex()}")
    envs = seal_copies(tx, profile, d, dests)
    out = Outgoing(d.to, d.cls, d.message_id, d.franking_key, d.body, d.template_id,
                   d.attachment, d.entry, envelopes=envs)  # fmt: skip
    tx.app_put(f"c/out/{d.message_id.hex()}", out.to_record())
    return out


def seal_copies(
    tx: StoreTransaction, profile: Profile, draft: Draft, dests: list[Address]
) -> tuple[bytes, ...]:
    """The envelopes of one logical message for ``dests``, each frame encrypted with the
    current session of its device (saved in ``tx``); the caller keeps them in a record of
    the same transaction before any leaves."""
    d = draft
    me = profile.account.encode()
    to = d.to.encode()
    own = device_list(tx, profile.account)
    inner = Inner(d.cls, me, to, d.message_id, d.franking_key, d.body, d.log_head,
                  template_id=d.template_id, attachment=d.attachment,
                  list_version=0 if own is None else own.version)  # fmt: skip
    padded = inner.to_padded()
    commitment = commit_inner(inner)
    envs: list[bytes] = []
    for dest in dests:
        frame = tx.encrypt(dest, padded)
        env = Envelope(d.cls, me, profile.device, to, dest.account, dest.device,
                       d.message_id, commitment, frame, d.template_id, inner.blob_id)  # fmt: skip
        envs.append(env.to_bytes())
    return tuple(envs)


def needs_session(tx: StoreTransaction, dests: list[Address]) -> list[Address]:
    """The destinations without a current session that may send: none at all, or one loaded
    from a restored store that has not taken a fresh ratchet step (SPEC §6.5). Each gets a
    new session from a claimed bundle, so no message key of an older state is used again."""
    out = []
    for d in dests:
        session = tx.load_session(d)
        if session is None or session.needs_ratchet_step:
            out.append(d)
    return out


def start_session(
    tx: StoreTransaction, profile: Profile, dest: Address, bundle_bytes: bytes
) -> None:
    """Set up a session with ``dest`` from a fetched bundle, whose identity key must be the
    certified key of that device."""
    bundle = PrekeyBundle.from_bytes(bundle_bytes)
    key = device_key(tx, dest)
    if key is None or not hmac.compare_digest(bundle.identity_key, key):
        raise UntrustedDevice("bundle identity differs from the certified device key")
    tx.initiate(dest, bundle, allowed_suites=(profile.suite,))


def sent(tx: StoreTransaction, profile: Profile, out: Outgoing, received_at: int) -> Message:
    """The relay accepted ``out``: drop it from the outbox, add it to the history (with its
    franking key, to send it again to a device that asks, SPEC §10.11) and write a
    :class:`~e2e.client.events.MessageSent` event -- once, even if another process sharing
    this store submitted the same outbox entry."""
    tx.app_lock(f"c/out/{out.message_id.hex()}")
    seen = f"c/seen/{q(profile.account)}/{out.message_id.hex()}"
    msg = Message(out.to, profile.addr, out.cls, out.message_id, out.body, received_at, True,
                  franking_key=out.franking_key, template_id=out.template_id,
                  attachment=out.attachment)  # fmt: skip
    if tx.app_get(seen) is not None:
        return msg  # recorded already
    tx.app_delete(f"c/out/{out.message_id.hex()}")
    tx.app_put(seen, b"")
    if out.cls is not MessageClass.RECEIPT:
        tx.app_put(_msg_key(tx, out.to, received_at, out.message_id), msg.to_record())
        events.append(tx, events.MessageSent(0, msg))
    return msg


def was_sent(tx: StoreTransaction, profile: Profile, message_id: bytes) -> bool:
    """True if this account recorded ``message_id`` as sent (here or on another device)."""
    return tx.app_get(f"c/seen/{q(profile.account)}/{message_id.hex()}") is not None


def pending(tx: StoreTransaction, message_id: bytes) -> Outgoing | None:
    """The outbox entry of ``message_id``, if it is still waiting for the relay."""
    key = f"c/out/{message_id.hex()}"
    raw = tx.app_get(key)
    return None if raw is None else Outgoing.from_record(raw, "app/" + key)


def refused(
    tx: StoreTransaction, to: str, cls: MessageClass, message_id: bytes, error: E2EError
) -> None:
    """The relay refused our message for good (or a business's precheck did, before it was
    sealed): forget its outbox entry and, unless it is a receipt, write a
    :class:`~e2e.client.events.SendRefused` event."""
    tx.app_lock(f"c/out/{message_id.hex()}")
    tx.app_delete(f"c/out/{message_id.hex()}")
    if cls is not MessageClass.RECEIPT:
        events.append(tx, events.SendRefused(0, to, message_id, cls, type(error).__name__,
                                             str(error)[:512]))  # fmt: skip


# -- history -------------------------------------------------------------------------------


def history(tx: StoreTransaction, conversation: str) -> list[Message]:
    """Every stored message of a conversation, oldest first."""
    prefix = f"c/msg/{q(conversation)}/"
    return [Message.from_record(tx.app_get(k) or b"", "app/" + k) for k in tx.app_keys(prefix)]


def conversations(tx: StoreTransaction) -> list[str]:
    """The accounts this device has messages with."""
    return sorted({unquote(k.split("/")[2]) for k in tx.app_keys("c/msg/")})


def with_time(msg: Message, time: int) -> Message:
    """``msg`` at another time (a helper for callers re-dating a local message)."""
    return replace(msg, time=time)
