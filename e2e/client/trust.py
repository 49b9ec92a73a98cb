"""What a client device trusts (SPEC.md §10.10, §13.3, §13.4): pinned account keys, key
changes the application accepts, verified businesses, and the relay's key directory (the
device's view of the log, kept in its store; device lists proven before they are accepted;
monitoring; log heads carried in messages). A part of :class:`~e2e.client.device.Client`.
"""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from e2e.client import contacts, state
from e2e.client.state import DeviceListHook, Profile
from e2e.client.transport import Transport
from e2e.errors import (
    CertificateError,
    DecodeError,
    InvalidProof,
    KeyChangePending,
    KeyTransparencyError,
    StateError,
)
from e2e.fingerprint import displayable, logical_fingerprint
from e2e.platform.certificates import BusinessIdentity, verify_business
from e2e.platform.merkle import ConsistencyProof, InclusionProof, SignedTreeHead
from e2e.platform.transparency import LogView
from e2e.store import StoreTransaction

__all__ = ["Trust", "KeyChange", "safety_number", "LOG", "GOSSIP"]

_T = TypeVar("_T")
#: Store record of this device's view of the key log (SPEC §13.4).
LOG = "c/keylog"
#: Store records of the log head last carried to each account.
GOSSIP = "c/gossip/"


def safety_number(me: str, my_key: bytes, peer: str, peer_key: bytes) -> str:
    """The 60-digit safety number of two accounts (SPEC §13.1), stable identifiers being
    the account names."""
    return displayable(
        logical_fingerprint(me.encode(), my_key), logical_fingerprint(peer.encode(), peer_key)
    )


@dataclass(frozen=True, slots=True)
class KeyChange:
    """A pending change of ``account``'s key: the pinned ``old`` one, the ``new`` one the
    relay serves, and the safety number with the new key (to compare out of band)."""

    account: str
    old: bytes
    new: bytes
    safety_number: str

    def __repr__(self) -> str:
        return f"KeyChange({self.account})"


class Trust:
    """Pins, key changes, verified businesses and the key directory, for
    :class:`~e2e.client.device.Client` (which supplies the attributes below)."""

    transport: Transport
    profile: Profile
    hook: DeviceListHook | None

    async def _tx(self, fn: Callable[[StoreTransaction], _T]) -> _T:
        raise NotImplementedError

    # -- trust --------------------------------------------------------------------------------

    async def pin(self, account: str, identity: bytes) -> None:
        """Pin ``account``'s identity key (verified out of band)."""
        await self._tx(lambda tx: state.pin(tx, account, identity))

    async def pinned(self, account: str) -> bytes | None:
        """The pinned identity key of ``account``."""
        return await self._tx(lambda tx: state.pinned(tx, account))

    async def account_identity(self) -> bytes:
        """This account's identity key (what a peer pins)."""
        key = await self.pinned(self.profile.account)
        assert key is not None  # noqa: S101 - pinned at creation
        return key

    # -- key changes and verified businesses (SPEC §13.3) ------------------------------------

    async def key_changes(self) -> list[KeyChange]:
        """The key changes the application has not accepted: an account whose key the relay
        (and the key log, when pinned) now gives differs from the pinned one. Sending to it
        raises :class:`~e2e.errors.KeyChangePending` until :meth:`accept_key_change`."""
        me, my_key = self.profile.account, await self.account_identity()
        found = await self._tx(contacts.key_changes)
        return [
            KeyChange(name, old, new, safety_number(me, my_key, name, new))
            for name, (old, new) in sorted(found.items())
        ]

    async def accept_key_change(self, account: str, new: bytes | None = None) -> None:
        """Accept ``account``'s changed key (the user compared the new safety number, or
        decided to trust it). With ``new``, only if that is still the pending key. The next
        send fetches the devices certified under the new key."""

        def run(tx: StoreTransaction) -> None:
            found = contacts.pending_key_change(tx, account)
            if found is None:
                raise StateError("no key change pending for this account")
            contacts.accept_key_change(tx, account, found[1] if new is None else new)

        await self._tx(run)

    async def pin_platform_key(self, platform_key: bytes) -> None:
        """Pin the platform's certifying key (shipped with the application); a different
        key pinned before is a :class:`~e2e.errors.CertificateError`."""
        if type(platform_key) is not bytes or len(platform_key) != 32:
            raise CertificateError("a platform key is 32 bytes")

        def run(tx: StoreTransaction) -> None:
            raw = tx.app_get(state.PLATFORM_KEY)
            if raw is not None:
                if not hmac.compare_digest(raw, platform_key):
                    raise CertificateError("another platform key is pinned on this device")
                return
            tx.app_put(state.PLATFORM_KEY, platform_key)

        await self._tx(run)

    async def business_identity(self, account: str) -> BusinessIdentity:
        """What to show for ``account``: verified with the platform-certified display name,
        or unverified (no certificate, or no platform key pinned). The certificate must be
        for the account key this device trusts (pinned, proven in the key log when a log key
        is pinned); one that does not verify is a :class:`~e2e.errors.CertificateError`."""
        platform_key = await self._tx(lambda tx: tx.app_get(state.PLATFORM_KEY))
        identity = await self.pinned(account)
        if identity is None:
            await self.refresh(account)
            identity = await self.pinned(account)
            assert identity is not None  # noqa: S101 - pinned by the refresh
        raw = await self.transport.business_certificate(account)
        if platform_key is None:
            return BusinessIdentity(account.encode(), "unverified")
        return verify_business(raw, platform_key, account.encode(), identity, int(time.time()))

    # -- key directory (SPEC §13.4) ------------------------------------------------------------

    async def pin_log_key(self, log_key: bytes) -> None:
        """Pin the relay's key-log key (shipped with the application). From then on every
        device list is proven against the log before it is used, and the view of the log
        (every head seen) is kept in this device's store."""

        def run(tx: StoreTransaction) -> None:
            raw = tx.app_get(LOG)
            if raw is not None:
                if not hmac.compare_digest(LogView.from_bytes(raw).log_key, log_key):
                    raise KeyTransparencyError("another log key is pinned on this device")
                return
            tx.app_put(LOG, LogView(log_key).to_bytes())

        await self._tx(run)

    async def log_view(self) -> LogView | None:
        """This device's view of the key log (None: no log key pinned)."""
        raw = await self._tx(lambda tx: tx.app_get(LOG))
        return None if raw is None else LogView.from_bytes(raw)

    async def _save_view(self, view: LogView) -> None:
        raw = view.to_bytes()
        await self._tx(lambda tx: tx.app_put(LOG, raw))

    async def _accept_head(self, view: LogView) -> SignedTreeHead:
        head = SignedTreeHead.from_bytes(await self.transport.log_head())
        proofs: dict[tuple[int, int], ConsistencyProof] = {}
        for a, b in view.proofs_needed(head.size):
            try:
                raw = await self.transport.log_consistency(a, b)
                proofs[(a, b)] = ConsistencyProof.from_bytes(raw)
            except (DecodeError, KeyTransparencyError):
                pass  # the relay cannot join the heads: check_head decides (rolled back, forked)

        def prove(a: int, b: int) -> ConsistencyProof:
            got = proofs.get((a, b))
            if got is None:
                raise InvalidProof("consistency proof not available")
            return got

        view.check_head(head, prove)
        return head

    async def verify_directory(self, account: str, identity: bytes, device_list: bytes) -> None:
        """Prove ``account``'s key and signed device list (as the relay served them) in the
        key log; a :class:`~e2e.errors.KeyTransparencyError` before anything is encrypted
        to them. Does nothing while no log key is pinned."""
        view = await self.log_view()
        if view is None:
            return
        try:
            head = await self._accept_head(view)
            raw, proof = await self.transport.log_lookup(account, head.size)
            view.check_served(
                account.encode(), identity, device_list, raw,
                InclusionProof.from_bytes(proof), head,
            )  # fmt: skip
        finally:
            await self._save_view(view)  # accepted heads, and a proven fork, are kept

    async def monitor(self) -> int:
        """Audit every key-log entry since the last audit: one under our account with
        another account key, a device list our account key did not sign, or an older device
        list logged again (a removed device brought back) raises
        :class:`~e2e.errors.KeyMismatch`. Returns the number of entries audited."""
        view = await self.log_view()
        if view is None:
            raise KeyTransparencyError("no log key pinned")
        me = await self.account_identity()
        try:
            head = await self._accept_head(view)
            got: list[tuple[bytes, InclusionProof]] = []
            while view.audited + len(got) < head.size:
                page = await self.transport.log_entries(view.audited + len(got), head.size)
                if not page:
                    raise InvalidProof("the relay returned no entries")
                got += [(e, InclusionProof.from_bytes(p)) for e, p in page]
            before = view.audited
            view.audit(self.profile.account.encode(), me, got)
            return view.audited - before
        finally:
            await self._save_view(view)

    async def refresh(self, account: str, chat: str | None = None) -> dict[int, bytes]:
        """Fetch ``account``'s device list (with ``chat``: the devices routed that chat),
        prove it in the key log when a log key is pinned, and accept it through
        :func:`~e2e.client.state.accept_device_list`."""
        identity, certs, signed = await self.transport.fetch_devices(account, chat)
        # The signed device list comes whole with a chat's devices too: it is what is proven,
        # and the chat's devices must be some of its devices (accept_device_list).
        await self.verify_directory(account, identity, signed)

        def accept(tx: StoreTransaction) -> dict[int, bytes] | None:
            if contacts.note_key_change(tx, account, identity):
                return None  # kept (committed) as a pending change: nothing is accepted
            return state.accept_device_list(
                tx, account, identity, certs, signed, chat=chat, hook=self.hook
            )  # fmt: skip

        listed = await self._tx(accept)
        if listed is None:
            raise KeyChangePending(f"the account key of {account} changed; accept it first")
        return listed

    async def _check_peer_heads(self) -> None:
        """Compare the log heads received messages carried with our view of the log;
        :class:`~e2e.errors.LogForked` (kept in the store) if the relay showed us and a
        peer different logs."""
        keys = await self._tx(lambda tx: tx.app_keys(state.PEER_HEADS))
        if not keys:
            return
        view = await self.log_view()
        try:
            for key in keys:
                gossip = bytes.fromhex(key[len(state.PEER_HEADS) :])
                if view is not None:
                    await self._check_peer(view, gossip)
                await self._tx(functools.partial(_forget, key=key))
        finally:
            if view is not None:
                await self._save_view(view)

    async def _check_peer(self, view: LogView, gossip: bytes) -> None:
        if len(gossip) != 40:
            raise InvalidProof("a peer's log head must be 40 bytes")
        size = int.from_bytes(gossip[:8], "big")
        latest = view.latest
        if latest is None or size > latest.size:
            await self._accept_head(view)
            latest = view.latest
        proofs: dict[tuple[int, int], ConsistencyProof] = {}
        if latest is not None and size != latest.size and size > 0:
            pair = (size, latest.size) if size < latest.size else (latest.size, size)
            if not any(h.size == size for h in view.heads):
                try:
                    raw = await self.transport.log_consistency(*pair)
                    proofs[pair] = ConsistencyProof.from_bytes(raw)
                except (DecodeError, KeyTransparencyError):
                    pass  # the relay cannot join the two heads: check_peer finds the fork

        def prove(a: int, b: int) -> ConsistencyProof:
            got = proofs.get((a, b))
            if got is None:
                raise InvalidProof("consistency proof not available")
            return got

        view.check_peer(gossip, prove, lambda: None)


def _forget(tx: StoreTransaction, key: str) -> None:
    tx.app_delete(key)
