"""The asyncio client: one device whose whole state lives in its store (SPEC.md §10.10).

Every store transaction, every key generation and every signature runs on the client's own
worker thread (one per client, so a device's steps keep their order); the event loop only
moves bytes. The relay is reached through a :class:`~e2e.client.transport.Transport`.

Sending seals the message for every destination device and commits the advanced sessions
with an outbox entry before anything leaves; the entry is dropped once the relay accepts
the batch. A device reopened after a crash resubmits what is in its outbox (the relay
answers a message id it already accepted with ``DuplicateSubmission``, taken as accepted).
Receiving opens each delivery in one transaction (history, seen id, new session state) and
acknowledges it only after that commits; a redelivered message is recognised and acked.
What a device trusts -- pins, key changes, verified businesses, the key directory -- is
:class:`~e2e.client.trust.Trust`'s, a part of :class:`Client`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from e2e.attachment.pointer import Pointer
from e2e.attachment.transfer import REQUEST_BYTES, Progress, UploadState, download, upload
from e2e.client import contacts, inbox, state
from e2e.client.catalogue import Catalogue
from e2e.client.controls import Controls
from e2e.client.lifecycle import Grant
from e2e.client.receiver import Receiver
from e2e.client.records import MAX_RECEIPT_IDS, Message, Profile, ReceiptStatus, receipt_body
from e2e.client.state import DeviceListHook, Outgoing
from e2e.client.transport import Connector, Transport
from e2e.client.trust import GOSSIP
from e2e.errors import (
    DecodeError,
    DuplicateSubmission,
    E2EError,
    KeyChangePending,
    KeyMismatch,
    LogForked,
    PolicyError,
    StaleDeviceList,
    StateError,
    WireFailure,
)
from e2e.keys import KeyPair, Rng
from e2e.platform.directory import ADMIN, AGENT, DeviceCertificate, SignedDeviceList
from e2e.platform.envelope import FRANKING_KEY_LEN, MESSAGE_ID_LEN
from e2e.platform.names import check_account_name
from e2e.platform.policy import MessageClass
from e2e.platform.wire import Receipt
from e2e.store import Address, Store, StoreTransaction, upkeep
from e2e.suite import DEFAULT, Suite

__all__ = ["Client", "StoreOpener"]

_T = TypeVar("_T")
#: Default age after which a cached device list is checked again (a day).
RECHECK_SECONDS = 24 * 3600
#: Default pace and bound of the monitor sync runs (an hour; 4 pages of entries).
MONITOR_SECONDS = 3600
MONITOR_BUDGET = 1024


#: A store, or a function that opens one (run off the event loop: scrypt is slow).
StoreOpener = Store | Callable[[], Store]


class Client(Controls, Receiver, Catalogue):
    """One device (a customer's phone, a business agent) on its own store.

    Make one with :meth:`create_account` (a new account and its first device),
    :meth:`add_device` (on the device holding the account key) or :meth:`open` (a store a
    client set up before).

    Concurrency (SPEC §10.10). One client belongs to one event loop. Its store work runs on
    its own worker thread, one transaction at a time in the order asked, so several tasks of
    that loop may call it at once: a task may :meth:`send` while another waits in
    :meth:`sync` with ``wait_ms`` (the long-poll holds no store transaction and no lock),
    and sends and syncs may overlap. Each message is then handed to the application by
    exactly one of the overlapping syncs, and no message key is used twice; what is not
    promised is an order between messages sent by overlapping sends, or between the results
    of overlapping syncs. Not safe: calling it from another thread or event loop,
    :meth:`aclose` while any call is still running, and replacing :attr:`transport` while
    calls are in flight.
    """

    def __init__(
        self,
        store: Store,
        transport: Transport,
        profile: Profile,
        pool: concurrent.futures.ThreadPoolExecutor,
        *,
        rng: Rng = os.urandom,
        hook: DeviceListHook | None = None,
        auto_receipts: bool = True,
    ) -> None:
        self.store = store
        self.transport = transport
        self.profile = profile
        self._pool = pool
        self.rng = rng
        self.hook = hook
        self.auto_receipts = auto_receipts
        #: Optional classifier of free text for the class check of business messages
        #: (:func:`~e2e.platform.policy.check_class`; None: no opinion).
        self.classify: Callable[[bytes], MessageClass | None] | None = None
        #: Errors of deliveries that could not be accepted, by error name.
        self.errors: dict[str, int] = {}
        #: The recovery key :meth:`create_account` made, to show the user once (never
        #: stored; None on a device opened or linked later).
        self.recovery_key: str | None = None
        #: Seconds after which a cached device list is fetched and proven again before a
        #: send (SPEC §10.10); an account's message announcing a newer list does it at once.
        self.recheck_seconds = RECHECK_SECONDS
        #: With a log key pinned, :meth:`sync` audits the log for this account's entries
        #: once every this many seconds, at most :attr:`monitor_budget` entries a time.
        self.monitor_seconds = MONITOR_SECONDS
        self.monitor_budget = MONITOR_BUDGET

    def __repr__(self) -> str:
        return f"Client({self.profile.account}/{self.profile.device})"

    @property
    def addr(self) -> Address:
        """This device's address."""
        return self.profile.addr

    # -- running off the loop ---------------------------------------------------------------

    @staticmethod
    def _new_pool() -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="e2e-client")

    async def _off(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _tx(self, fn: Callable[[StoreTransaction], _T]) -> _T:
        """Run ``fn`` in one store transaction on the worker thread."""

        def run() -> _T:
            with self.store.transaction() as tx:
                return fn(tx)

        return await self._off(run)

    @staticmethod
    async def _open_store(pool: concurrent.futures.ThreadPoolExecutor, store: StoreOpener) -> Store:
        if callable(store) and not hasattr(store, "transaction"):
            return await asyncio.get_running_loop().run_in_executor(pool, store)
        return store  # type: ignore[return-value]

    # -- making clients -----------------------------------------------------------------------

    @classmethod
    async def create_account(
        cls,
        store: StoreOpener,
        connect: Connector,
        name: str,
        kind: str,
        *,
        suite: Suite = DEFAULT,
        tier: int = 0,
        prekeys: int = 20,
        rng: Rng = os.urandom,
        hook: DeviceListHook | None = None,
        auto_receipts: bool = True,
        recovery: bool = True,
    ) -> Client:
        """A new account ``name`` (``customer`` or ``business``, billing ``tier`` 0 free or
        1 API) with this store as its first device (device 1), which keeps the account key
        and certifies later devices. ``name`` must be in its one visible form
        (:func:`~e2e.platform.names.check_account_name`: NFC, nothing invisible, one
        script), else :class:`~e2e.errors.InvalidName` before anything is made. With
        ``recovery`` (the default) it also makes the account's recovery key
        (:meth:`setup_recovery`): :attr:`recovery_key` holds its text, to show the user once
        (it is kept nowhere)."""
        check_account_name(name.encode())
        pool = cls._new_pool()
        st = await cls._open_store(pool, store)

        def setup(tx: StoreTransaction) -> tuple[Profile, KeyPair]:
            ident = upkeep.ensure_identity(tx, rng)
            account = KeyPair.generate(rng)
            profile = Profile(name, 1, kind, suite, tier)
            cert = DeviceCertificate.issue(account, name.encode(), 1, ident.public, 1, ADMIN,
                                           rng)  # fmt: skip
            first = SignedDeviceList.sign(account, name.encode(), 1, [cert.to_bytes()], rng=rng)
            state.create_profile(tx, profile, account.public, cert, first.to_bytes())
            state.store_account_key(tx, account, 2)
            return profile, ident

        def run() -> tuple[Profile, KeyPair]:
            with st.transaction() as tx:
                return setup(tx)

        profile, ident = await asyncio.get_running_loop().run_in_executor(pool, run)
        client = cls(st, connect(profile.addr, ident), profile, pool, rng=rng, hook=hook,
                     auto_receipts=auto_receipts)  # fmt: skip
        await client.resume(prekeys=prekeys)
        if recovery:
            client.recovery_key = await client.setup_recovery()
        return client

    async def add_device(
        self,
        store: StoreOpener,
        connect: Connector,
        *,
        role: int = AGENT,
        prekeys: int = 20,
        hook: DeviceListHook | None = None,
        auto_receipts: bool = True,
    ) -> Client:
        """A new device of this account on ``store``, certified by this device's account
        key (this must be an admin device, holding it) with ``role`` (:data:`AGENT`, or
        :data:`ADMIN`: it gets the account key too), and the account's next device list
        carrying it, which its registration publishes (SPEC §10.1). A ``store`` that
        already belongs to a device is refused (:class:`StateError`) before anything is
        certified."""
        pool = self._new_pool()
        st = await self._open_store(pool, store)
        grant = await self._certify(await self._new_identity(pool, st, self.rng), role)
        p = self.profile
        profile = Profile(p.account, grant.device_id, p.kind, p.suite, p.tier)
        return await self._adopt(pool, st, connect, replace(grant, profile=profile),
                                 prekeys=prekeys, hook=hook, auto_receipts=auto_receipts,
                                 rng=self.rng)  # fmt: skip

    @staticmethod
    async def _new_identity(
        pool: concurrent.futures.ThreadPoolExecutor, st: Store, rng: Rng
    ) -> bytes:
        """The public identity key of a new device on ``st``, made now; :class:`StateError`
        if the store already belongs to a device."""

        def make() -> bytes:
            with st.transaction() as tx:
                if state.load_profile(tx) is not None:
                    raise StateError("this store already belongs to a device")
                return upkeep.ensure_identity(tx, rng).public

        return await asyncio.get_running_loop().run_in_executor(pool, make)

    @classmethod
    async def _adopt(
        cls, pool: concurrent.futures.ThreadPoolExecutor, st: Store, connect: Connector,
        grant: Grant, *, prekeys: int, hook: DeviceListHook | None, auto_receipts: bool,
        rng: Rng,
    ) -> Client:  # fmt: skip
        """Make the device ``grant`` describes (its profile names the account and this
        device) on ``st``, after checking the grant is for it, and register it: linked,
        added by an admin device of this process, or recovering its account."""
        profile = grant.profile
        if profile is None:
            raise StateError("a grant names its account")

        def adopt() -> KeyPair:
            with st.transaction() as tx:
                cert = DeviceCertificate.from_bytes(grant.certificate)
                ident = tx.local_identity()
                if (cert.account, cert.device_id) != (profile.account.encode(), profile.device):
                    raise KeyMismatch("the grant's certificate is for another device")
                if cert.identity != ident.public:
                    raise KeyMismatch("the grant certifies another device key")
                state.create_profile(tx, profile, grant.account_identity, cert, grant.device_list)
                state.mark_registered(tx, "account")
                if grant.account_key is not None:
                    if grant.account_key.public != grant.account_identity:
                        raise KeyMismatch("the grant's account key is not the account's")
                    state.store_account_key(tx, grant.account_key, profile.device + 1)
                return ident

        ident = await asyncio.get_running_loop().run_in_executor(pool, adopt)
        client = cls(st, connect(profile.addr, ident), profile, pool, rng=rng, hook=hook,
                     auto_receipts=auto_receipts)  # fmt: skip
        await client.resume(prekeys=prekeys)
        return client

    @classmethod
    async def open(
        cls,
        store: StoreOpener,
        connect: Connector,
        *,
        rng: Rng = os.urandom,
        hook: DeviceListHook | None = None,
        auto_receipts: bool = True,
        prekeys: int = 20,
    ) -> Client:
        """Reopen the device a client set up in ``store`` (the load step), then
        :meth:`resume`: finish any registration or prekey upload that was cut short,
        resubmit the outbox and do the work the delivery contract left due (SPEC §10.11).
        Without the relay it opens all the same: its history reads and that work stays due
        for the next :meth:`resume`, :meth:`sync`, :meth:`flush` or send (SPEC §10.10)."""
        pool = cls._new_pool()
        st = await cls._open_store(pool, store)

        def load() -> tuple[Profile, KeyPair]:
            with st.transaction() as tx:
                profile = state.load_profile(tx)
                if profile is None:
                    raise StateError("no client device in this store")
                return profile, tx.local_identity()

        profile, ident = await asyncio.get_running_loop().run_in_executor(pool, load)
        client = cls(st, connect(profile.addr, ident), profile, pool, rng=rng, hook=hook,
                     auto_receipts=auto_receipts)  # fmt: skip
        await client.resume(prekeys=prekeys)
        return client

    async def resume(self, *, prekeys: int = 20) -> None:
        """Register what the relay has not acknowledged, top up prekeys, flush the outbox,
        and finish what the delivery contract left due (SPEC §10.11: receipts, retry
        requests, resends; after a restore from a backup, the recovery). If the relay cannot
        be reached (a retryable error) what is left waits: the device works offline -- its
        history reads, and sends are sealed into the outbox when they can be -- and the next
        :meth:`resume`, :meth:`flush`, :meth:`sync` or send finishes it."""
        await self._tx(inbox.note_open)
        try:
            await self._resume(prekeys)
        except E2EError as exc:
            if not exc.retryable or not await self._tx(
                lambda tx: state.registered(tx, "device")
            ):  # fmt: skip
                raise

    async def _resume(self, prekeys: int) -> None:

        def todo(tx: StoreTransaction) -> tuple[bool, bool, bytes, KeyPair | None]:
            return (
                state.registered(tx, "account"),
                state.registered(tx, "device"),
                state.certificate(tx),
                state.account_key(tx),
            )

        has_account, has_device, cert, acct = await self._tx(todo)
        if not has_account:
            if acct is None:
                raise StateError("account not registered and its key is not here")
            await self.transport.register_account(self.profile.kind, acct, self.profile.tier)
            await self._tx(lambda tx: state.mark_registered(tx, "account"))
        if not has_device:
            signed = await self._tx(lambda tx: tx.app_get(state.REG_LIST))
            await self.transport.register_device(cert, signed)
            await self._tx(lambda tx: state.mark_registered(tx, "device"))
        await self.upkeep(low=prekeys, target=prekeys)
        await self.flush()
        await self._follow_up()

    async def flush(self) -> list[Message]:
        """Submit what the outbox holds, in order (sealed while the relay was unreachable,
        or left by a send that failed); returns the messages the relay accepted."""
        return [await self._deliver(out) for out in await self._tx(state.outbox)]

    async def aclose(self) -> None:
        """Close the transport, the worker thread and the store."""
        await self.transport.aclose()
        await self._off(self.store.close)
        self._pool.shutdown(wait=True)

    # -- prekeys ----------------------------------------------------------------------------

    async def upkeep(self, *, low: int = 10, target: int = 20) -> int:
        """If the relay holds fewer than ``low`` one-time bundles of this device, generate
        enough for ``target`` and upload them with any not yet published; rotate signed
        prekeys when due. Returns the relay's count after. Never publishes a prekey twice.
        """
        count = await self.transport.prekey_count()
        add = target - count if count < low else 0
        suite = self.profile.suite

        def prepare(tx: StoreTransaction) -> state.PrekeyUpload:
            state.forget_published(tx)
            unpublished = state.prepare_prekeys(tx, suite, rng=self.rng)
            extra = max(0, add - len(unpublished.one_time))
            if extra:
                return state.prepare_prekeys(tx, suite, add=extra, rng=self.rng)
            return unpublished

        batch = await self._tx(prepare)
        count = await self.transport.upload_prekeys(batch.one_time, batch.last_resort)
        if batch.ids:
            await self._tx(lambda tx: state.mark_published(tx, batch.ids))
        return count

    async def _destinations(self, to: str) -> list[Address]:
        me = self.profile.account
        now = int(time.time())

        def due(tx: StoreTransaction) -> list[str]:
            return [a for a in dict.fromkeys((to, me))
                    if contacts.needs_recheck(tx, a, now, self.recheck_seconds)]  # fmt: skip

        for account in await self._tx(due):
            # A cached list the account said changed, or not checked for a while: fetched
            # and proven again (full list, then the chat's routes) before anything is sealed.
            await self.refresh(account)
            await self._tx(functools.partial(contacts.forget_routes, account=account))

        def cached(tx: StoreTransaction) -> tuple[list[int] | None, list[int] | None]:
            return state.route(tx, to, me), state.route(tx, me, to)

        peer, own = await self._tx(cached)
        if peer is None:
            peer = sorted(await self.refresh(to, me))
        if own is None:
            own = sorted(await self.refresh(me, to))
        return [Address(to, d) for d in peer] + [
            Address(me, d) for d in own if d != self.profile.device
        ]

    # -- sending ------------------------------------------------------------------------------

    async def send(
        self,
        to: str,
        text: str | bytes,
        cls: MessageClass = MessageClass.SERVICE,
        *,
        template_id: bytes | None = None,
        message_id: bytes | None = None,
        entry: bytes | None = None,
    ) -> Message:
        """Send one message to ``to``'s devices for this chat and our other devices;
        ``template_id`` names a template the business registered for ``cls`` (SPEC §10.4).
        ``message_id`` (16 bytes) is the caller's, for a send it may repeat after a crash
        (the business gateway's idempotency keys, SPEC §17.2); default: a random one.

        Messages left in the outbox by an earlier failed send go first. Raises the relay's
        refusal (a :class:`~e2e.errors.PolicyError`); the message is then not kept, and the
        refusal is also a :class:`~e2e.client.events.SendRefused` event. A business device
        asks the relay first (precheck), so a policy refusal spends no message key. If the
        relay cannot be reached the message stays in the outbox (:meth:`pending`;
        :class:`~e2e.errors.WireFailure` is raised) and is submitted by the next send,
        :meth:`flush`, :meth:`sync` or :meth:`open`: offline, a message is sealed whenever its
        destinations and sessions are cached (a business device then seals without the
        relay's precheck); its fate arrives as an event
        (:class:`~e2e.client.events.MessageSent` or ``SendRefused``). Message keys spent on
        a refused batch are never used again.

        ``message_id`` (16 bytes, chosen by the application, e.g. stored with its own record
        of the message before calling) makes the send idempotent across crashes: a message
        this account already sent under that id is returned as it was, one still in the
        outbox is submitted, and only an unknown id is sealed.

        ``entry`` (a customer's): the entry token of the ad the customer tapped (SPEC §17.4),
        kept with the message in the outbox and presented beside its envelopes, never inside
        them; the relay refuses the message whole if it does not take the token
        (:class:`~e2e.errors.EntryRefused`)."""
        body = text.encode() if isinstance(text, str) else text
        if message_id is not None:
            if type(message_id) is not bytes or len(message_id) != MESSAGE_ID_LEN:
                raise StateError("a message id is 16 bytes")
            mid = message_id
            done, queued = await self._tx(
                lambda tx: (state.was_sent(tx, self.profile, mid), state.pending(tx, mid))
            )
            if done:
                return await self._sent_message(to, mid)
            if queued is not None:
                return await self._deliver(queued)
        offline: WireFailure | None = None
        try:
            await self.flush()  # left by a failed send: keep the order
        except E2EError as exc:
            if not exc.retryable:
                raise
            offline = WireFailure(f"the relay cannot be reached ({type(exc).__name__})")
        message_id = message_id or self.rng(MESSAGE_ID_LEN)
        fk = self.rng(FRANKING_KEY_LEN)
        try:
            draft = state.Draft(to, cls, message_id, fk, body, template_id, entry=entry)
            out = await self._seal(draft)
        except PolicyError as exc:  # the precheck refused it: nothing was sealed
            await self._refused(to, cls, message_id, exc)
            raise
        if offline is not None:
            raise offline  # sealed after the earlier ones, in the outbox: flushed in order
        return await self._deliver(out)

    async def send_attachment(
        self,
        to: str,
        source: str | os.PathLike[str] | AsyncIterable[bytes],
        *,
        content_type: str,
        file_name: str | None = None,
        text: str | bytes = b"",
        caption: str | None = None,
        thumbnail: bytes | None = None,
        size: int | None = None,
        cls: MessageClass = MessageClass.SERVICE,
        progress: Progress | None = None,
        on_state: Callable[[UploadState], None] | None = None,
        resume: UploadState | None = None,
        request_bytes: int = REQUEST_BYTES,
    ) -> Message:
        """Send a file or an async byte stream to ``to`` as an attachment (SPEC §16): it is
        encrypted under a fresh key as it is read, uploaded to the relay's blob store
        resumably (``progress(done, total)`` after each acknowledged request; ``on_state`` /
        ``resume``: continue a file's upload after a restart, :mod:`e2e.attachment.transfer`),
        then sent as a message like any other (the same classes, window, billing and
        franking), carrying the pointer inside the encryption and its blob id on the
        envelopes. Memory stays flat in the file's size. A business device asks the relay
        first, so a refused message uploads nothing."""
        if self.profile.kind == "business":
            await self._checked_destinations(to, cls, None)
        src: Path | AsyncIterable[bytes] = (
            source if isinstance(source, AsyncIterable) else Path(source)
        )
        pointer = await upload(
            self.transport.blobs(), src, content_type=content_type, file_name=file_name,
            size=size, caption=caption, thumbnail=thumbnail, progress=progress,
            on_state=on_state, resume=resume, request_bytes=request_bytes,
        )  # fmt: skip
        body = text.encode() if isinstance(text, str) else text
        for earlier in await self._tx(state.outbox):
            await self._deliver(earlier)
        message_id = self.rng(MESSAGE_ID_LEN)
        fk = self.rng(FRANKING_KEY_LEN)
        out = await self._seal(state.Draft(to, cls, message_id, fk, body, None, pointer.to_bytes()))
        return await self._deliver(out)

    async def download(
        self,
        message: Message | Pointer,
        dest: str | os.PathLike[str] | Callable[[bytes], Awaitable[None]],
        *,
        progress: Progress | None = None,
    ) -> int:
        """Fetch a message's attachment from the relay and write it, verified chunk by chunk
        as it arrives, to the file ``dest`` (which appears only complete and verified) or to
        an async sink; resumes by range when the connection drops. Returns its size. Raises
        an :class:`~e2e.errors.AttachmentError` for a blob that is not the one the pointer
        names (nothing unverified is ever written)."""
        if isinstance(message, Pointer):
            pointer = message
        elif message.attachment is None:
            raise StateError("the message carries no attachment")
        else:
            pointer = Pointer.from_bytes(message.attachment)
        target = dest if callable(dest) else Path(dest)
        return await download(self.transport.blobs(), pointer, target, progress=progress)

    async def _sent_message(self, to: str, message_id: bytes) -> Message:
        """Our message ``message_id`` to ``to`` as the history holds it."""
        for m in await self.history(to):
            if m.outgoing and m.message_id == message_id:
                return m
        raise StateError("this account sent that message id in another conversation")

    async def _seal(
        self,
        draft: state.Draft,
        *,
        renew: Sequence[Address] = (),
        also: Callable[[StoreTransaction], None] | None = None,
    ) -> Outgoing:
        """Seal ``draft`` for the chat's devices into the outbox, with our newest log head
        where the peer has not seen it (in place of the draft's own). ``renew``: devices to
        start a new session with first (a retry request, SPEC §10.11); ``also`` runs in the
        sealing transaction (what the message settles, e.g. the receipts it carries)."""
        to = draft.to
        view = await self.log_view()
        if view is not None and view.forked:
            raise LogForked("the relay was caught showing a split view of the key log")
        gossip = b"" if view is None else view.gossip()
        if await self._tx(lambda tx: contacts.pending_key_change(tx, to)) is not None:
            raise KeyChangePending(f"the account key of {to} changed; accept it first")
        dests = await self._checked_destinations(to, draft.cls, draft.template_id)
        await self._ensure_sessions(dests, renew=[d for d in renew if d in dests])
        mark = f"{GOSSIP}{to}"

        def seal(tx: StoreTransaction) -> Outgoing:
            # Our newest log head rides along when it changed since our last message to
            # this account (SPEC §13.4): a split view shows up at the peer.
            carry = b"" if tx.app_get(mark) == gossip else gossip
            if carry:
                tx.app_put(mark, carry)
            if also is not None:
                also(tx)
            return state.seal(tx, self.profile, replace(draft, log_head=carry), dests)

        return await self._tx(seal)

    async def _checked_destinations(
        self, to: str, cls: MessageClass, template_id: bytes | None
    ) -> list[Address]:
        """The devices to seal for. A business device asks the relay first (SPEC §10.3,
        /v1/messages/precheck): a refusal then costs no message key and claims no prekey,
        and a stale device list is refreshed before anything is sealed. (A customer's sends
        are refused only for a wrong role or class, so they are not asked about.)"""
        for attempt in range(3):
            dests = await self._destinations(to)
            if not dests:
                raise StateError("no device to send to in this chat")
            if self.profile.kind != "business":
                return dests
            try:
                await self.transport.precheck(cls, to, dests, template_id)
                return dests
            except StaleDeviceList as stale:
                if attempt == 2:
                    raise
                await self._follow(stale, to)
            except E2EError as exc:
                if exc.retryable:
                    return dests  # offline: sealed into the outbox unasked
                raise
        raise StateError("unreachable")  # pragma: no cover

    async def _follow(self, stale: StaleDeviceList, to: str) -> None:
        """The relay says the chat's devices changed: fetch both chat lists again, and the
        full list of every account with a device the batch should not have named (removed,
        or no longer routed), which drops the sessions of devices no longer certified."""
        me = self.profile.account
        for account in sorted({a for a, _ in stale.extra}):
            try:
                await self.refresh(account.decode())
            except UnicodeDecodeError:
                continue  # not an account name this device could have named
        await self.refresh(to, me)
        await self.refresh(me, to)

    async def _ensure_sessions(
        self, dests: list[Address], *, renew: Sequence[Address] = ()
    ) -> None:
        """A session with every destination that may send (a new one from a claimed bundle
        where there is none, or only a restored one, SPEC §6.5); with each of ``renew`` a new
        one unless the current one is ours and still unanswered (its first message carries
        the key agreement, so the peer can set it up)."""

        def todo(tx: StoreTransaction) -> list[Address]:
            missing = state.needs_session(tx, dests)
            for d in renew:
                current = tx.load_session(d)
                if d not in missing and (current is None or current.pending is None):
                    missing.append(d)
            return missing

        missing = await self._tx(todo)
        if not missing:
            return
        bundles = await asyncio.gather(*(self.transport.fetch_bundle(d) for d in missing))

        def start(tx: StoreTransaction) -> None:
            for dest, raw in zip(missing, bundles, strict=True):
                state.start_session(tx, self.profile, dest, raw)

        await self._tx(start)

    async def _deliver(self, out: Outgoing) -> Message:
        for attempt in range(4):
            try:
                if out.entry is None:
                    accepted = await self.transport.submit(list(out.envelopes))
                else:
                    accepted = await self.transport.submit(list(out.envelopes), out.entry)
            except DuplicateSubmission:
                accepted = Receipt(out.message_id, int(time.time()), len(out.envelopes), 0)
            except StaleDeviceList as stale:
                if attempt == 3:
                    await self._refused(out.to, out.cls, out.message_id, stale)
                    raise
                await self._follow(stale, out.to)
                out = await self._seal(out.draft)
                continue
            except (PolicyError, DecodeError) as exc:
                # refused for good: forget it. Anything else (the relay unreachable, a rate
                # limit) keeps it in the outbox, resubmitted by the next send or reopen.
                await self._refused(out.to, out.cls, out.message_id, exc)
                raise
            at = accepted.received_at
            return await self._tx(
                functools.partial(state.sent, profile=self.profile, out=out, received_at=at)
            )
        raise PolicyError("device list kept changing")  # pragma: no cover

    async def _refused(self, to: str, cls: MessageClass, message_id: bytes, exc: E2EError) -> None:
        await self._tx(functools.partial(state.refused, to=to, cls=cls, message_id=message_id,
                                         error=exc))  # fmt: skip

    async def transaction(self, fn: Callable[[StoreTransaction], _T]) -> _T:
        """Run ``fn`` in one transaction of this device's store, in order with the client's
        own store work: an application's records beside the device's (keys outside ``c/``),
        such as the business gateway's (SPEC §17.2)."""
        return await self._tx(fn)

    def _count_error(self, exc: E2EError) -> None:
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1

    async def mark_read(self, conversation: str, message_ids: list[bytes]) -> None:
        """Send read receipts for these messages of ``conversation`` (one per
        :data:`~e2e.client.records.MAX_RECEIPT_IDS` ids)."""
        step = MAX_RECEIPT_IDS
        for i in range(0, len(message_ids), step):
            body = receipt_body(ReceiptStatus.READ, message_ids[i : i + step])
            await self.send(conversation, body, MessageClass.RECEIPT)
