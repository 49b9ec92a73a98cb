"""What a client device holds about accounts (SPEC.md §10.10, §13.3): pinned account keys,
pending key changes, the signed device lists it accepted, the certified devices and the
routes of chats. One trust model: an account identity key is pinned (on first use, or out
of band with :func:`pin`); a device is trusted only if a device list signed by its
account's pinned key lists its certificate. :func:`accept_device_list` is the one place a
fetched device list enters the store.

Records (application records of the key store): ``c/pin/<account>`` (32 bytes),
``c/keychange/<account>`` ({0: old key, 1: new key}), ``c/devlist/<account>`` (the newest
signed device list accepted), ``c/devices/<account>`` ({device id: identity key}) and
``c/route/<account>/<chat>`` ([device ids]).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Final
from urllib.parse import unquote

from e2e.client import events
from e2e.client.records import dump as _dump
from e2e.client.records import load as _load
from e2e.client.records import load_fields
from e2e.client.records import q as _q
from e2e.errors import (
    DecodeError,
    KeyMismatch,
    StaleProof,
    StateError,
    StoreError,
    UnknownAccount,
    UntrustedDevice,
)
from e2e.platform.directory import SignedDeviceList, check_signed
from e2e.store import Address, StoreTransaction

__all__ = [
    "DeviceListHook",
    "LISTS",
    "pinned",
    "pin",
    "unpin",
    "note_key_change",
    "pending_key_change",
    "key_changes",
    "accept_key_change",
    "certified_devices",
    "route",
    "device_list",
    "note_list_version",
    "needs_recheck",
    "accept_device_list",
    "device_key",
    "forget_lists",
    "forget_routes",
    "put_devices",
]

#: Records of the newest signed device list accepted per account.
LISTS: Final = "c/devlist/"
#: Records of when each account's device list was last accepted (u64 Unix seconds).
CHECKED: Final = "c/listed-at/"
#: Records of the device-list version an account's own message said it has (u64), newer
#: than the one accepted: the list is re-checked before the next send to it.
STALE: Final = "c/stale/"


def _u64(raw: bytes | None) -> int:
    return 0 if raw is None or len(raw) != 8 else int.from_bytes(raw, "big")


def note_list_version(tx: StoreTransaction, account: str, version: int) -> None:
    """A message of ``account`` said its device list is at ``version``: if that is newer
    than the one accepted, mark the list for a re-check before the next send to it."""
    held = device_list(tx, account)
    if version and (held is None or version > held.version):
        key = f"{STALE}{_q(account)}"
        if version > _u64(tx.app_get(key)):
            tx.app_put(key, version.to_bytes(8, "big"))


def needs_recheck(tx: StoreTransaction, account: str, now: int, every: int) -> bool:
    """True if ``account``'s cached device list must be fetched again before a send: an
    account's message said it changed, or it was last checked ``every`` seconds ago or
    more."""
    if tx.app_get(f"{STALE}{_q(account)}") is not None:
        return True
    at = tx.app_get(f"{CHECKED}{_q(account)}")
    return at is not None and now - _u64(at) >= every


_KEYCHANGE: Final = "c/keychange/"

#: Called with (account, account identity key, certificates) before a fetched device list is
#: accepted; raise an :class:`~e2e.errors.E2EError` to refuse it (key transparency hooks here).
DeviceListHook = Callable[[str, bytes, list[bytes]], None]


# -- trust: pins and certified device lists ---------------------------------------------------


def pinned(tx: StoreTransaction, account: str) -> bytes | None:
    """The pinned identity key of ``account``, if any."""
    raw = tx.app_get(f"c/pin/{_q(account)}")
    if raw is not None and len(raw) != 32:
        raise StoreError("malformed record", f"app/c/pin/{_q(account)}")
    return raw


def pin(tx: StoreTransaction, account: str, identity: bytes) -> None:
    """Pin ``account``'s identity key (verified out of band, or on first use).

    A different key than the one pinned raises :class:`UntrustedDevice`; re-pinning to a new
    key is a deliberate act: :func:`unpin` first."""
    if type(identity) is not bytes or len(identity) != 32:
        raise StoreError("an account identity key is 32 bytes")
    found = pinned(tx, account)
    if found is not None:
        if not hmac.compare_digest(found, identity):
            raise UntrustedDevice("account identity key differs from the pinned one")
        return
    tx.app_put(f"c/pin/{_q(account)}", identity)


def note_key_change(tx: StoreTransaction, account: str, identity: bytes) -> bool:
    """Record that the relay serves ``identity`` for ``account`` (SPEC §13.3). True (and a
    pending change ``c/keychange/<account>`` kept, the newest served key) if another key is
    pinned; False if it is the pinned key or nothing is pinned yet (first use). A change
    not seen before (or to yet another key) is a :class:`~e2e.client.events.KeyChanged`
    event."""
    found = pinned(tx, account)
    if found is None or hmac.compare_digest(found, identity):
        return False
    before = pending_key_change(tx, account)
    if before is None or not hmac.compare_digest(before[1], identity):
        tx.app_put(f"{_KEYCHANGE}{_q(account)}", _dump({0: found, 1: identity}))
        events.append(tx, events.KeyChanged(0, account, found, identity))
    return True


def pending_key_change(tx: StoreTransaction, account: str) -> tuple[bytes, bytes] | None:
    """(old key, new key) of ``account``'s key change the application has not accepted."""
    key = f"{_KEYCHANGE}{_q(account)}"
    fields = load_fields(tx, key, 2)
    if fields is None:
        return None
    old, new = fields
    if type(old) is not bytes or type(new) is not bytes or len(old) != 32 or len(new) != 32:
        raise StoreError("malformed record", "app/" + key)
    return old, new


def key_changes(tx: StoreTransaction) -> dict[str, tuple[bytes, bytes]]:
    """{account: (old key, new key)} of every pending key change."""
    out: dict[str, tuple[bytes, bytes]] = {}
    for key in tx.app_keys(_KEYCHANGE):
        account = unquote(key[len(_KEYCHANGE) :])
        found = pending_key_change(tx, account)
        if found is not None:
            out[account] = found
    return out


def accept_key_change(tx: StoreTransaction, account: str, new: bytes) -> None:
    """The application accepts ``account``'s new key ``new`` (the one it was shown): the
    pin moves to it, the old certified devices and cached routes are forgotten (fetched
    again, under the new key, by the next send). :class:`StateError` if no change is
    pending or the pending one is for another key (the relay changed it again)."""
    found = pending_key_change(tx, account)
    if found is None:
        raise StateError("no key change pending for this account")
    if not hmac.compare_digest(found[1], new):
        raise StateError("the pending key change is for another key")
    for device_id in certified_devices(tx, account):
        tx.delete_session(Address(account, device_id))  # sessions under the old key are void
    unpin(tx, account)
    for key in tx.app_keys(f"c/route/{_q(account)}/"):
        tx.app_delete(key)
    tx.app_delete(f"{_KEYCHANGE}{_q(account)}")
    pin(tx, account, new)


def unpin(tx: StoreTransaction, account: str) -> None:
    """Forget ``account``'s pin and certified devices (before trusting a new account key)."""
    tx.app_delete(f"c/pin/{_q(account)}")
    tx.app_delete(f"c/devices/{_q(account)}")


def certified_devices(tx: StoreTransaction, account: str) -> dict[int, bytes]:
    """The certified devices of ``account`` this device knows: {device id: identity key}."""
    raw = tx.app_get(f"c/devices/{_q(account)}")
    if raw is None:
        return {}
    obj = _load(raw, f"app/c/devices/{_q(account)}")
    if not isinstance(obj, dict):
        raise StoreError("malformed record", f"app/c/devices/{_q(account)}")
    return dict(obj)


def put_devices(tx: StoreTransaction, account: str, devices: dict[int, bytes]) -> None:
    tx.app_put(f"c/devices/{_q(account)}", _dump(devices))


def route(tx: StoreTransaction, account: str, chat: str) -> list[int] | None:
    """The cached devices of business ``account`` that receive ``chat``, if fetched."""
    raw = tx.app_get(f"c/route/{_q(account)}/{_q(chat)}")
    if raw is None:
        return None
    obj = _load(raw, f"app/c/route/{_q(account)}/{_q(chat)}")
    if not isinstance(obj, list):
        raise StoreError("malformed record", f"app/c/route/{_q(account)}/{_q(chat)}")
    return list(obj)


def device_list(tx: StoreTransaction, account: str) -> SignedDeviceList | None:
    """The newest signed device list of ``account`` this device accepted."""
    raw = tx.app_get(f"{LISTS}{_q(account)}")
    if raw is None:
        return None
    try:
        return SignedDeviceList.from_bytes(raw)
    except DecodeError:
        raise StoreError("malformed record", f"app/{LISTS}{_q(account)}") from None


def accept_device_list(
    tx: StoreTransaction,
    account: str,
    identity: bytes,
    certificates: list[bytes],
    signed: bytes,
    *,
    chat: str | None = None,
    hook: DeviceListHook | None = None,
    now: int | None = None,
) -> dict[int, bytes]:
    """THE place a device list fetched from the relay is accepted. Returns {id: key}.

    ``identity`` must equal the pinned account key (pinned here on first use); ``signed``
    must be ``account``'s device list signed by it (SPEC §10.1), not older than the newest
    accepted before (:class:`~e2e.errors.StaleProof`) and a valid successor of it (every
    tombstone kept, :class:`~e2e.errors.KeyMismatch`); the served ``certificates`` must be
    exactly its certificates, or (a chat's list) some of them (:class:`KeyMismatch`).
    ``hook`` (key transparency) may refuse the list first. A full list (``chat`` None)
    replaces the certified devices and deletes the sessions of devices no longer in it; a
    chat's list adds its devices and records them as that chat's route. Each certified
    device key becomes the store's approved identity for its address. A change of a list
    this device knew before (devices added, re-keyed or removed) is a
    :class:`~e2e.client.events.DevicesChanged` event. A list older than the version the
    account's own message announced (:func:`note_list_version`) is
    :class:`~e2e.errors.StaleProof`: the relay is withholding the newer one. ``now``
    records when the list was checked (:func:`needs_recheck`).
    """
    if hook is not None:
        hook(account, identity, list(certificates))
    pin(tx, account, identity)
    if not signed:
        raise UntrustedDevice("the account has no signed device list")
    dl = check_signed(signed, account.encode(), identity)
    if dl.deleted:
        raise UnknownAccount("the account was deleted")
    before = device_list(tx, account)
    if before is not None and dl.version < before.version:
        raise StaleProof("device list older than one this device accepted")
    if before is not None and dl.version > before.version:
        before.check_successor(dl)
    stale = f"{STALE}{_q(account)}"
    if dl.version < _u64(tx.app_get(stale)):
        raise StaleProof("the account announced a newer device list than the relay serves")
    tx.app_delete(stale)
    if now is not None:
        tx.app_put(f"{CHECKED}{_q(account)}", now.to_bytes(8, "big"))
    if (chat is None and set(certificates) != set(dl.certificates)) or not set(certificates) <= set(
        dl.certificates
    ):
        raise KeyMismatch("served certificates are not the account's signed device list")
    if before is None or dl.version > before.version:
        tx.app_put(f"{LISTS}{_q(account)}", signed)
    listed: dict[int, bytes] = {}
    for raw in certificates:
        cert = dl.certificate(raw)
        if cert.device_id in listed:
            raise UntrustedDevice("device listed twice")
        listed[cert.device_id] = cert.identity
    known = certified_devices(tx, account)
    if chat is None:
        for gone in set(known) - set(listed):
            tx.delete_session(Address(account, gone))
        devices = listed
    else:
        # Devices the newest list no longer carries go, even from a chat's list.
        current = dl.devices()
        devices = {d: k for d, k in known.items() if d in current} | listed
        for gone in set(known) - set(devices):
            tx.delete_session(Address(account, gone))
        tx.app_put(f"c/route/{_q(account)}/{_q(chat)}", _dump(sorted(listed)))
    removed = sorted(set(known) - set(devices))
    added: list[int] = []
    for device_id, key in sorted(listed.items()):
        addr = Address(account, device_id)
        old = known.get(device_id)
        if old is None:
            added.append(device_id)
        elif not hmac.compare_digest(old, key):
            tx.delete_session(addr)  # a re-installed device: its old sessions are void
            added.append(device_id)
        tx.approve_identity(addr, key)
    put_devices(tx, account, devices)
    if known and (added or removed):
        events.append(tx, events.DevicesChanged(0, account, tuple(added), tuple(removed)))
    return listed


def forget_routes(tx: StoreTransaction, account: str) -> None:
    """Forget ``account``'s cached chat routes (fetched again by the next send)."""
    for key in tx.app_keys(f"c/route/{_q(account)}/"):
        tx.app_delete(key)


def forget_lists(tx: StoreTransaction, keep: str) -> None:
    """Forget every cached device list and route but ``keep``'s (they were proven in a log
    that is no longer trusted): the next send fetches and proves them again. Pins stay, so
    a changed account key is still a key change."""
    mine = {f"{LISTS}{_q(keep)}", f"c/devices/{_q(keep)}", f"{CHECKED}{_q(keep)}"}
    for prefix in (LISTS, "c/devices/", "c/route/", CHECKED):
        for key in tx.app_keys(prefix):
            if key not in mine and not key.startswith(f"c/route/{_q(keep)}/"):
                tx.app_delete(key)


def device_key(tx: StoreTransaction, addr: Address) -> bytes | None:
    """The certified identity key of ``addr``, if known."""
    return certified_devices(tx, addr.name).get(addr.device)
