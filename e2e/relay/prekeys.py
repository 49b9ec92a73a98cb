"""The relay's prekey directory (SPEC.md §10.7, §10.13): uploads, counts and claims.

A mixin of :class:`~e2e.relay.service.RelayService`. What costs CPU is kept out of the store's
transaction and bounded (SPEC §10.13):

* an upload's bundles are verified in :meth:`Prekeys.prepare_upload`, on a worker thread before
  the transaction, and each distinct signed prekey once per upload;
* a bundle this process has verified for the device's current key before is recognised by its
  SHA-256 and not decoded or verified again, so repeating an upload (a retry) costs its hashes
  and one statement;
* a device's pool of unclaimed one-time prekeys holds at most ``limits.prekey_pool``; an upload
  that would pass it is refused before any bundle is verified.

Claims are limited so that no one drains a device's one-time prekeys (SPEC §10.13): one
account claims at most ``limits.claim_burst`` prekeys of another account at once and
``limits.claims_per_hour`` after that (429); a device hands out at most
``limits.device_claim_burst`` one-time prekeys at once and ``limits.device_claims_per_hour``
after that, whoever claims: beyond it a claim gets the device's last-resort bundle (as if its
pool were empty), and the drain is counted (:attr:`Prekeys.drains`, the metrics'
``e2e_relay_prekey_drains_total``). Both are token buckets of the store (shared by every
relay process), rows of ``rate_buckets`` under device id -1 that the upkeep drops once full.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from e2e import xeddsa
from e2e.errors import (
    DecodeError,
    InvalidKey,
    InvalidSignature,
    LimitExceeded,
    RateLimited,
    Unauthenticated,
    UnknownAccount,
)
from e2e.platform.wire import ClaimedPrekey, ClaimPrekey, PrekeyCount, UploadPrekeys
from e2e.prekeys import PrekeyBundle, kem_prekey_message, signed_prekey_message
from e2e.relay.config import RelayConfig
from e2e.relay.store import Caller, RelayStore, Tx

__all__ = ["Prekeys", "PreparedUpload", "VERIFIED_BUNDLES"]

#: Most bundle digests remembered as verified, over all devices (emptied when full).
VERIFIED_BUNDLES: Final = 200_000


@dataclass(frozen=True, slots=True)
class PreparedUpload:
    """An upload checked before its transaction: the key its bundles verified under, the
    one-time bundles as (prekey id, bytes), and the last-resort bundle."""

    identity: bytes
    one_time: tuple[tuple[int, bytes], ...]
    last_resort: bytes | None


class Prekeys:
    """The prekey handlers, and the memory of bundles already verified."""

    store: RelayStore
    settings: RelayConfig
    clock: Callable[[], int]
    #: Claims answered with a last-resort bundle because the device's claim bucket was
    #: empty (a drain), since the process started.
    drains: int
    known_identity: Callable[[Caller], bytes | None]
    #: (device, its identity key) -> {SHA-256 of a bundle: its one-time prekey id or None}.
    _verified: dict[tuple[Caller, bytes], dict[bytes, int | None]]
    _verified_lock: threading.Lock
    _verified_size: int

    def _init_prekeys(self) -> None:
        self._verified = {}
        self._verified_lock = threading.Lock()
        self._verified_size = 0
        self.drains = 0

    def prepare_upload(self, caller: Caller, req: UploadPrekeys,
                       body: bytes | None = None) -> PreparedUpload:  # fmt: skip
        """Verify the upload's bundles under the caller's key, off the store: each bundle this
        process verified for that key before is taken as it is; an upload that would fill the
        pool past ``limits.prekey_pool`` is refused (413) before any is verified."""
        identity = self.known_identity(caller)
        if identity is None:
            identity = self.store.read(lambda tx: tx.device_identity(*caller))
            if identity is None:
                raise Unauthenticated("unknown device")
        key = (caller, identity)
        with self._verified_lock:
            known = dict(self._verified.get(key, {}))
        fresh: list[tuple[bytes, bytes]] = []
        one_time: list[tuple[int, bytes]] = []
        for raw in req.one_time:
            digest = hashlib.sha256(raw).digest()
            opk_id = known.get(digest, -1)
            if opk_id is None:
                raise DecodeError("a one-time bundle without a one-time prekey id")
            if opk_id == -1:
                fresh.append((digest, raw))
            else:
                one_time.append((opk_id, raw))
        if fresh:
            pool = self.settings.limits.prekey_pool
            held = self.store.read(lambda tx: tx.count_prekeys(*caller))
            if held + len(fresh) > pool:
                raise LimitExceeded("the device's prekey pool is full")
        spks: set[tuple[bytes, bytes]] = set()
        learned: dict[bytes, int | None] = {}
        for digest, raw in fresh:
            bundle = self._verify_bundle(raw, identity, spks)
            if bundle.opk_id is None:
                raise DecodeError("a one-time bundle without a one-time prekey id")
            one_time.append((bundle.opk_id, raw))
            learned[digest] = bundle.opk_id
        if len({i for i, _ in one_time}) != len(one_time):
            raise DecodeError("one-time prekey id uploaded twice in one request")
        last = req.last_resort
        if last is not None:
            digest = hashlib.sha256(last).digest()
            if digest not in known:
                if self._verify_bundle(last, identity, spks).opk_id is not None:
                    raise DecodeError("a last-resort bundle carries a one-time prekey")
                learned[digest] = None
            elif known[digest] is not None:
                raise DecodeError("a last-resort bundle carries a one-time prekey")
        self._remember(key, learned)
        return PreparedUpload(identity, tuple(one_time), last)

    @staticmethod
    def _verify_bundle(raw: bytes, identity: bytes, spks: set[tuple[bytes, bytes]]) -> PrekeyBundle:
        """Decode and verify one bundle under ``identity``; a signed prekey whose signature
        verified for an earlier bundle of the upload (``spks``) is not verified again."""
        bundle = PrekeyBundle.from_bytes(raw)
        if not hmac.compare_digest(bundle.identity_key, identity):
            raise InvalidSignature("bundle identity differs from the certified device key")
        spk = (bundle.spk, bundle.spk_signature)
        if spk not in spks:
            xeddsa.verify(identity, signed_prekey_message(bundle.suite, bundle.spk),
                          bundle.spk_signature)  # fmt: skip
            spks.add(spk)
        if bundle.kem_pk is None or bundle.kem_signature is None:
            raise InvalidKey("PQXDH bundle has no KEM prekey")
        xeddsa.verify(identity, kem_prekey_message(bundle.suite, bundle.kem_pk),
                      bundle.kem_signature)  # fmt: skip
        return bundle

    def _remember(self, key: tuple[Caller, bytes], learned: dict[bytes, int | None]) -> None:
        if not learned:
            return
        with self._verified_lock:
            if self._verified_size + len(learned) > VERIFIED_BUNDLES:
                self._verified.clear()
                self._verified_size = 0
            held = self._verified.setdefault(key, {})
            before = len(held)
            held.update(learned)
            self._verified_size += len(held) - before

    def upload_prekeys(self, tx: Tx, caller: Caller,
                       req: UploadPrekeys | PreparedUpload) -> PrekeyCount:  # fmt: skip
        """Store the verified one-time bundles (ids already held, claimed or not, are
        ignored) and the last-resort bundle; the device must still have the key they were
        verified under, and the pool stay within ``limits.prekey_pool``."""
        prep = req if isinstance(req, PreparedUpload) else self.prepare_upload(caller, req)
        identity = tx.device_identity(*caller)
        if identity is None or not hmac.compare_digest(identity, prep.identity):
            raise Unauthenticated("unknown device")
        added = tx.insert_prekeys(caller[0], caller[1], prep.one_time)
        held = tx.count_prekeys(*caller)
        if added and held > self.settings.limits.prekey_pool:
            raise LimitExceeded("the device's prekey pool is full")
        if prep.last_resort is not None:
            tx.set_last_resort(caller[0], caller[1], prep.last_resort)
        return PrekeyCount(held, tx.last_resort(*caller) is not None)

    def count_prekeys(self, tx: Tx, caller: Caller, req: object = None) -> PrekeyCount:
        return PrekeyCount(tx.count_prekeys(*caller), tx.last_resort(*caller) is not None)

    def claim_prekey(self, tx: Tx, caller: Caller, req: ClaimPrekey) -> ClaimedPrekey:
        if tx.device_identity(req.account, req.device_id) is None:
            raise UnknownAccount("unknown device")
        lim, now = self.settings.limits, self.clock()
        pair = b"\x01" + len(caller[0]).to_bytes(2, "big") + caller[0] + req.account
        if not tx.take_token(pair, -1, now, lim.claims_per_hour / 3600, lim.claim_burst):
            raise RateLimited("too many prekeys claimed of this account")
        device = b"\x02" + req.account + req.device_id.to_bytes(8, "big", signed=True)
        rate = lim.device_claims_per_hour / 3600
        bundle = None
        if tx.take_token(device, -1, now, rate, lim.device_claim_burst):
            bundle = tx.claim_prekey(req.account, req.device_id)
        elif tx.count_prekeys(req.account, req.device_id):
            self.drains += 1  # one-time prekeys left, but claimed too fast: kept for later
        if bundle is not None:
            return ClaimedPrekey(bundle, True)
        last = tx.last_resort(req.account, req.device_id)
        if last is None:
            raise UnknownAccount("device has not published prekeys")
        return ClaimedPrekey(last, False)
