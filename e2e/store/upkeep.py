"""Prekey upkeep over a store (SPEC.md §9.6): replenish one-time prekeys, rotate signed and
last-resort KEM prekeys with a grace period, and build a bundle from what is stored.

Run these in a transaction and upload the returned public keys after it commits::

    with store.transaction() as tx:
        fresh = replenish(tx, PQ, target=100)
        rotated = rotate(tx, PQ, now=int(time.time()))

A superseded signed (or last-resort KEM) prekey stays usable for ``grace`` seconds after
the key that replaced it was created, so initial messages built from a bundle fetched just
before the rotation still decrypt; then it is deleted together with its use records.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Final

from e2e import xeddsa
from e2e.errors import StoreError
from e2e.keys import KemKeyPair, KeyPair, Rng
from e2e.prekeys import (
    KemPrekey,
    OneTimePrekey,
    PrekeyBundle,
    SignedPrekey,
    kem_prekey_message,
    signed_prekey_message,
)
from e2e.store.interface import Dated, StoreTransaction
from e2e.suite import Suite

__all__ = [
    "DAY",
    "Replenished",
    "Rotated",
    "ensure_identity",
    "replenish",
    "rotate",
    "bundle",
]

DAY: Final = 86400
#: Default age after which a signed / last-resort KEM prekey is replaced.
ROTATE_AFTER: Final = 7 * DAY
#: Default time a replaced prekey is still accepted.
GRACE: Final = 30 * DAY


@dataclass(slots=True)
class Replenished:
    one_time: list[OneTimePrekey] = field(default_factory=list)
    kem: list[Dated[KemPrekey]] = field(default_factory=list)


@dataclass(slots=True)
class Rotated:
    signed: Dated[SignedPrekey] | None = None
    last_resort: Dated[KemPrekey] | None = None
    removed_signed: list[int] = field(default_factory=list)
    removed_kem: list[int] = field(default_factory=list)


def ensure_identity(tx: StoreTransaction, rng: Rng = os.urandom) -> KeyPair:
    """The stored identity key pair, generated and stored on first use."""
    found = tx.get_local_identity()
    if found is not None:
        return found
    pair = KeyPair.generate(rng)
    tx.set_local_identity(pair)
    return pair


def _sign(identity: KeyPair, message: bytes, rng: Rng) -> bytes:
    return xeddsa.sign(identity.private_bytes(), message, rng(64))


def replenish(
    tx: StoreTransaction,
    suite: Suite,
    *,
    target: int = 100,
    now: int | None = None,
    rng: Rng = os.urandom,
) -> Replenished:
    """Top up unused one-time prekeys (and, for a PQ suite, one-time KEM prekeys) to
    ``target`` each. Returns the new ones, to upload."""
    if not 0 <= target <= 10_000:
        raise StoreError("replenish target out of range")
    created = int(time.time()) if now is None else now
    identity = tx.local_identity()
    out = Replenished()
    for _ in range(target - len(tx.one_time_prekeys())):
        out.one_time.append(tx.add_one_time_prekey(KeyPair.generate(rng)))
    have = sum(1 for k in tx.kem_prekeys() if not k.item.last_resort)
    for _ in range(target - have):
        pair = KemKeyPair.generate(rng)
        sig = _sign(identity, kem_prekey_message(suite, pair.public), rng)
        out.kem.append(tx.add_kem_prekey(pair, sig, False, created))
    return out


def rotate(
    tx: StoreTransaction,
    suite: Suite,
    *,
    now: int | None = None,
    rotate_after: int = ROTATE_AFTER,
    grace: int = GRACE,
    rng: Rng = os.urandom,
) -> Rotated:
    """Add a new signed prekey (and last-resort KEM prekey) when there is none
    or the newest is ``rotate_after`` seconds old; remove superseded ones after ``grace``."""
    t = int(time.time()) if now is None else now
    identity = tx.local_identity()
    out = Rotated()
    signed = tx.signed_prekeys()
    if not signed or t - signed[-1].created >= rotate_after:
        pair = KeyPair.generate(rng)
        sig = _sign(identity, signed_prekey_message(suite, pair.public), rng)
        out.signed = tx.add_signed_prekey(pair, sig, t)
        signed.append(out.signed)
    for old, newer in zip(signed, signed[1:], strict=False):
        if t - newer.created >= grace:
            tx.remove_signed_prekey(old.item.id)
            out.removed_signed.append(old.item.id)
    resort = [k for k in tx.kem_prekeys() if k.item.last_resort]
    if not resort or t - resort[-1].created >= rotate_after:
        kem_pair = KemKeyPair.generate(rng)
        sig = _sign(identity, kem_prekey_message(suite, kem_pair.public), rng)
        out.last_resort = tx.add_kem_prekey(kem_pair, sig, True, t)
        resort.append(out.last_resort)
    for old_k, newer_k in zip(resort, resort[1:], strict=False):
        if t - newer_k.created >= grace:
            tx.remove_kem_prekey(old_k.item.id)
            out.removed_kem.append(old_k.item.id)
    return out


def bundle(tx: StoreTransaction, suite: Suite, *, use_one_time: bool = True) -> PrekeyBundle:
    """A bundle of the newest signed prekey, the oldest unused one-time prekey (if any and
    ``use_one_time``) and the oldest unused one-time KEM prekey or else
    the newest last-resort one. Prekeys are not consumed here: the relay hands each one-time
    prekey out once."""
    identity = tx.local_identity()
    signed = tx.signed_prekeys()
    if not signed:
        raise StoreError("no signed prekey: run rotate() first", "spk")
    spk = signed[-1].item
    opks = tx.one_time_prekeys() if use_one_time else []
    opk = opks[0] if opks else None
    kem: KemPrekey | None = None
    kems = tx.kem_prekeys()
    fresh = [k.item for k in kems if not k.item.last_resort] if use_one_time else []
    resort = [k.item for k in kems if k.item.last_resort]
    if fresh:
        kem = fresh[0]
    elif resort:
        kem = resort[-1]
    else:
        raise StoreError("no KEM prekey: run rotate() first", "kem")
    return PrekeyBundle.from_keys(suite, identity.public, spk, opk, kem)
