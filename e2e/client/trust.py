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
    E2EError,
    InvalidProof,
    KeyChangePending,
    KeyTransparencyError,
    LogForked,
    StateError,
)
from e2e.fingerprint import displayable, logical_fingerprint
from e2e.platform.certificates import BusinessIdentity, verify_business
from e2e.platform.merkle import ConsistencyFetcher, ConsistencyProof, InclusionProof, SignedTreeHead
from e2e.platform.transparency import ForkEvidence, LogView
from e2e.store import StoreTransaction

__all__ = ["Trust", "KeyChange", "safety_number", "LOG", "GOSSIP"]

_T = TypeVar("_T")
#: Store record of this device's view of the key log (SPEC §13.4).
LOG = "c/keylog"
#: Store records of the log head last carried to each account.
GOSSIP = "c/gossip/"
#: Store records of the fork evidence of each log key given up (SPEC §13.4).
FORKS = "c/forks/"
#: When this device last audited the log for its account (u64 Unix seconds), and what an
#: audit found (text), if anything.
MONITORED = "c/monitored-at"
ALARM = "c/monitor-alarm"


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

    async def pin_log_key(self, log_key: bytes, *, replace: bool = False) -> None:
        """Pin the relay's key-log key (shipped with the application). From then on every
        device list is proven against the log before it is used, and the view of the log
        (every head seen) is kept in this device's store.

        ``replace`` is how an application update ships the operator's new log key, and the
        way out of a proven fork (SPEC §13.4): once this device holds
        :meth:`fork_evidence`, the log key it pinned is burnt; the new key is pinned here,
        the evidence kept (record ``c/forks/<old key hex>``), and every device list cached
        from the old log is dropped, to be fetched and proven again under the new one.
        Without ``replace`` another key is refused
        (:class:`~e2e.errors.KeyTransparencyError`)."""

        def run(tx: StoreTransaction) -> None:
            raw = tx.app_get(LOG)
            if raw is not None:
                view = LogView.from_bytes(raw)
                if hmac.compare_digest(view.log_key, log_key):
                    return
                if not replace:
                    raise KeyTransparencyError("another log key is pinned on this device")
                if view.evidence is not None:
                    tx.app_put(FORKS + view.log_key.hex(), view.evidence.to_bytes())
                contacts.forget_lists(tx, keep=self.profile.account)
            tx.app_put(LOG, LogView(log_key).to_bytes())

        await self._tx(run)

    async def log_view(self) -> LogView | None:
        """This device's view of the key log (None: no log key pinned)."""
        raw = await self._tx(lambda tx: tx.app_get(LOG))
        return None if raw is None else LogView.from_bytes(raw)

    async def _save_view(self, view: LogView) -> None:
        raw = view.to_bytes()
        await self._tx(lambda tx: tx.app_put(LOG, raw))

    async def _proofs(self, view: LogView, size: int) -> ConsistencyFetcher:
        """The consistency proofs the view needs to join a head of ``size``, fetched; a
        proof the relay refuses is missing (the view then finds the fork). A retryable
        failure (the relay unreachable or busy) is raised: it proves nothing."""
        proofs: dict[tuple[int, int], ConsistencyProof] = {}
        for a, b in view.proofs_needed(size):
            try:
                raw = await self.transport.log_consistency(a, b)
                proofs[(a, b)] = ConsistencyProof.from_bytes(raw)
            except E2EError as exc:
                if exc.retryable:
                    raise
                # the relay cannot join the heads: the view decides (rolled back, forked)

        def prove(a: int, b: int) -> ConsistencyProof:
            got = proofs.get((a, b))
            if got is None:
                raise InvalidProof("consistency proof not available")
            return got

        return prove

    async def _learn_vrf_key(self, view: LogView) -> None:
        if not view.vrf_key:
            view.learn_vrf_key(*await self.transport.log_vrf_key())

    async def _accept_head(self, view: LogView) -> SignedTreeHead:
        head = SignedTreeHead.from_bytes(await self.transport.log_head())
        view.check_head(head, await self._proofs(view, head.size))
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
            await self._learn_vrf_key(view)
            raw, proof = await self.transport.log_lookup(account, head.size)
            view.check_served(
                account.encode(), identity, device_list, raw,
                InclusionProof.from_bytes(proof), head,
            )  # fmt: skip
        finally:
            await self._save_view(view)  # accepted heads, and a proven fork, are kept

    async def monitor(self, budget: int | None = None) -> int:
        """Audit every key-log entry since the last audit (at most ``budget`` of them: the
        rest at the next call): one under our account with another account key, a device
        list our account key did not sign, or an older device list logged again (a removed
        device brought back) raises :class:`~e2e.errors.KeyMismatch`. Returns the number of
        entries audited. :meth:`~e2e.client.device.Client.sync` runs it by itself (SPEC
        §13.4)."""
        view = await self.log_view()
        if view is None:
            raise KeyTransparencyError("no log key pinned")
        me = await self.account_identity()
        account = self.profile.account.encode()
        try:
            head = await self._accept_head(view)
            await self._learn_vrf_key(view)
            if not view.own_label:  # our label: from our own entry's proof (SPEC §13.5)
                raw, _ = await self.transport.log_lookup(self.profile.account, head.size)
                view.learn_own_label(account, raw)
            got: list[tuple[bytes, InclusionProof]] = []
            while view.audited + len(got) < head.size and (budget is None or len(got) < budget):
                page = await self.transport.log_entries(view.audited + len(got), head.size)
                if not page:
                    raise InvalidProof("the relay returned no entries")
                got += [(e, InclusionProof.from_bytes(p)) for e, p in page]
            got = got if budget is None else got[:budget]
            openings: dict[int, bytes] = {}
            for index in view.own_leaves(got):
                try:
                    openings[index] = (await self.transport.log_open(index, head.size))[0]
                except E2EError as exc:
                    if exc.retryable:
                        raise
                    # not opened: the audit finds an entry under our label it cannot check
            before = view.audited
            view.audit(account, me, got, openings, partial=budget is not None)
            return view.audited - before
        finally:
            await self._save_view(view)

    async def _auto_monitor(self, every: int, budget: int) -> None:
        """(From each sync) audit the log for this account's entries once ``every`` seconds,
        at most ``budget`` entries a time. A finding is kept (:meth:`monitor_alarm`) and
        raised once; the relay unreachable defers the audit."""
        now = int(time.time())

        def due(tx: StoreTransaction) -> bool:
            if tx.app_get(LOG) is None or tx.app_get(ALARM) is not None:
                return False
            at = tx.app_get(MONITORED)
            return at is None or now - int.from_bytes(at, "big") >= every

        if not await self._tx(due):
            return
        try:
            await self.monitor(budget)
        except LogForked:
            raise
        except KeyTransparencyError as exc:
            why = str(exc).encode()
            await self._tx(lambda tx: tx.app_put(ALARM, why))
            raise
        except E2EError as exc:
            if exc.retryable:
                return
            raise
        await self._tx(lambda tx: tx.app_put(MONITORED, now.to_bytes(8, "big")))

    async def monitor_alarm(self) -> str | None:
        """What this account's own monitor found in the key log (a key or device list it
        never published), or None. Kept until the application deals with it: sync no longer
        monitors meanwhile; :meth:`monitor` still can."""
        raw = await self._tx(lambda tx: tx.app_get(ALARM))
        return None if raw is None else raw.decode(errors="replace")

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
                tx, account, identity, certs, signed, chat=chat, hook=self.hook,
                now=int(time.time()),
            )  # fmt: skip

        listed = await self._tx(accept)
        if listed is None:
            raise KeyChangePending(f"the account key of {account} changed; accept it first")
        return listed

    async def _check_peer_heads(self) -> None:
        """Compare the log heads received messages carried with our view of the log
        (SPEC §13.4). A head not signed by the pinned log key proves nothing: it is dropped
        and counted in :attr:`errors`. A signed head the relay cannot show consistent with
        ours is a proven fork: :class:`~e2e.errors.LogForked`, the two heads kept in the
        store as the evidence (:meth:`fork_evidence`). A head that cannot be checked now
        (the relay unreachable) waits for the next sync."""
        keys = await self._tx(lambda tx: tx.app_keys(state.PEER_HEADS))
        if not keys:
            return
        view = await self.log_view()
        try:
            for key in keys:
                raw = await self._tx(lambda tx, k=key: tx.app_get(k))  # type: ignore[misc]
                if view is not None and raw:
                    try:
                        head = view.peer_head(raw)
                    except (DecodeError, InvalidProof) as exc:
                        self._count_error(exc)
                    else:
                        try:
                            await self._check_peer(view, head)
                        except E2EError as exc:
                            if not exc.retryable:
                                raise
                            return  # checked at a later sync
                await self._tx(functools.partial(_forget, key=key))
        finally:
            if view is not None:
                await self._save_view(view)

    def _count_error(self, exc: E2EError) -> None:
        raise NotImplementedError  # the client's

    async def _check_peer(self, view: LogView, head: SignedTreeHead) -> None:
        latest = view.latest
        if latest is None or head.size > latest.size:
            await self._accept_head(view)
        view.check_peer(head, await self._proofs(view, head.size))

    async def fork_evidence(self) -> ForkEvidence | None:
        """The proof that the relay showed this device a split view of its key log (two
        tree heads signed by its log key that one log cannot both have produced), or None.
        Anyone with the log key can check it (:meth:`ForkEvidence.verify`): the application
        shows it to the user and reports it (SPEC §13.4, the way out)."""
        view = await self.log_view()
        return None if view is None else view.evidence


def _forget(tx: StoreTransaction, key: str) -> None:
    tx.app_delete(key)
