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
from pathlib import Path
from typing import TypeVar

from e2e.attachment.pointer import Pointer
from e2e.attachment.transfer import REQUEST_BYTES, Progress, UploadState, download, upload
from e2e.client import inbox, state
from e2e.client.receiver import Receiver
from e2e.client.records import Message, Profile, ReceiptStatus, receipt_body
from e2e.client.state import DeviceListHook, Outgoing
from e2e.client.transport import Connector, Transport
from e2e.client.trust import GOSSIP, Trust
from e2e.errors import (
    DecodeError,
    DuplicateSubmission,
    E2EError,
    KeyChangePending,
    LogForked,
    PolicyError,
    ReportRejected,
    StaleDeviceList,
    StateError,
)
from e2e.keys import KeyPair, Rng
from e2e.platform.directory import DeviceCertificate
from e2e.platform.envelope import FRANKING_KEY_LEN, MESSAGE_ID_LEN
from e2e.platform.franking import MAX_REPORTED, Report, ReportItem
from e2e.platform.policy import MessageClass
from e2e.platform.wire import BillLines, Receipt, ReportVerdict
from e2e.store import Address, Store, StoreTransaction, upkeep
from e2e.suite import DEFAULT, Suite

__all__ = ["Client", "StoreOpener"]

_T = TypeVar("_T")


#: A store, or a function that opens one (run off the event loop: scrypt is slow).
StoreOpener = Store | Callable[[], Store]


class Client(Trust, Receiver):
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
    ) -> Client:
        """A new account ``name`` (``customer`` or ``business``, billing ``tier`` 0 free or
        1 API) with this store as its first device (device 1), which keeps the account key
        and certifies later devices."""
        pool = cls._new_pool()
        st = await cls._open_store(pool, store)

        def setup(tx: StoreTransaction) -> tuple[Profile, KeyPair]:
            ident = upkeep.ensure_identity(tx, rng)
            account = KeyPair.generate(rng)
            profile = Profile(name, 1, kind, suite, tier)
            cert = DeviceCertificate.issue(account, name.encode(), 1, ident.public, rng)
            state.create_profile(tx, profile, account.public, cert)
            state.store_account_key(tx, account, 2)
            return profile, ident

        def run() -> tuple[Profile, KeyPair]:
            with st.transaction() as tx:
                return setup(tx)

        profile, ident = await asyncio.get_running_loop().run_in_executor(pool, run)
        client = cls(st, connect(profile.addr, ident), profile, pool, rng=rng, hook=hook,
                     auto_receipts=auto_receipts)  # fmt: skip
        await client.resume(prekeys=prekeys)
        return client

    async def add_device(
        self,
        store: StoreOpener,
        connect: Connector,
        *,
        prekeys: int = 20,
        hook: DeviceListHook | None = None,
        auto_receipts: bool = True,
    ) -> Client:
        """A new device of this account on ``store``, certified by this device's account
        key (this must be the device holding it)."""
        pool = self._new_pool()
        st = await self._open_store(pool, store)

        def new_identity() -> bytes:
            with st.transaction() as tx:
                return upkeep.ensure_identity(tx, self.rng).public

        ident_pub = await asyncio.get_running_loop().run_in_executor(pool, new_identity)

        def certify(tx: StoreTransaction) -> tuple[bytes, int, bytes]:
            acct = state.account_key(tx)
            if acct is None:
                raise StateError("this device does not hold the account key")
            device_id = state.allocate_device_id(tx)
            cert = DeviceCertificate.issue(
                acct, self.profile.account.encode(), device_id, ident_pub, self.rng
            )
            return acct.public, device_id, cert.to_bytes()

        acct_pub, device_id, cert_raw = await self._tx(certify)
        p = self.profile
        profile = Profile(p.account, device_id, p.kind, p.suite, p.tier)

        def adopt() -> KeyPair:
            with st.transaction() as tx:
                cert = DeviceCertificate.from_bytes(cert_raw)
                state.create_profile(tx, profile, acct_pub, cert)
                state.mark_registered(tx, "account")
                return tx.local_identity()

        ident = await asyncio.get_running_loop().run_in_executor(pool, adopt)
        client = Client(st, connect(profile.addr, ident), profile, pool, rng=self.rng,
                        hook=hook, auto_receipts=auto_receipts)  # fmt: skip
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
        """Reopen the device a client set up in ``store``: finish any registration or
        prekey upload that was cut short and resubmit the outbox."""
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
        requests, resends; after a restore from a backup, the recovery)."""
        await self._tx(inbox.note_open)

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
            await self.transport.register_device(cert)
            await self._tx(lambda tx: state.mark_registered(tx, "device"))
        await self.upkeep(low=prekeys, target=prekeys)
        for out in await self._tx(state.outbox):
            await self._deliver(out)
        await self._follow_up()

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
    ) -> Message:
        """Send one message to ``to``'s devices for this chat and our other devices;
        ``template_id`` names a template the business registered for ``cls`` (SPEC §10.4).

        Messages left in the outbox by an earlier failed send go first. Raises the relay's
        refusal (a :class:`~e2e.errors.PolicyError`); the message is then not kept, and the
        refusal is also a :class:`~e2e.client.events.SendRefused` event. A business device
        asks the relay first (precheck), so a policy refusal spends no message key. If the
        relay cannot be reached the message stays in the outbox (:meth:`pending`) and is
        submitted again by the next send or :meth:`open`; its fate arrives as an event
        (:class:`~e2e.client.events.MessageSent` or ``SendRefused``). Message keys spent on a
        refused batch are never used again.

        ``message_id`` (16 bytes, chosen by the application, e.g. stored with its own record
        of the message before calling) makes the send idempotent across crashes: a message
        this account already sent under that id is returned as it was, one still in the
        outbox is submitted, and only an unknown id is sealed."""
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
        for earlier in await self._tx(state.outbox):  # left by a failed send: keep the order
            await self._deliver(earlier)
        message_id = message_id or self.rng(MESSAGE_ID_LEN)
        fk = self.rng(FRANKING_KEY_LEN)
        try:
            out = await self._seal(to, cls, message_id, fk, body, template_id)
        except PolicyError as exc:  # the precheck refused it: nothing was sealed
            await self._refused(to, cls, message_id, exc)
            raise
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
        out = await self._seal(to, cls, message_id, fk, body, None, pointer.to_bytes())
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
        self, to: str, cls: MessageClass, message_id: bytes, fk: bytes, body: bytes,
        template_id: bytes | None = None, attachment: bytes | None = None, *,
        renew: Sequence[Address] = (),
        also: Callable[[StoreTransaction], None] | None = None,
    ) -> Outgoing:  # fmt: skip
        """Seal a message for the chat's devices into the outbox. ``renew``: devices to start
        a new session with first (a retry request, SPEC §10.11); ``also`` runs in the sealing
        transaction (what the message settles, e.g. the receipts it carries)."""
        view = await self.log_view()
        if view is not None and view.forked:
            raise LogForked("the relay was caught showing a split view of the key log")
        gossip = b"" if view is None else view.gossip()
        if await self._tx(lambda tx: state.pending_key_change(tx, to)) is not None:
            raise KeyChangePending(f"the account key of {to} changed; accept it first")
        dests = await self._checked_destinations(to, cls, template_id)
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
            return state.seal(tx, self.profile, to, cls, message_id, fk, body, dests, carry,
                              template_id, attachment)  # fmt: skip

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
                accepted = await self.transport.submit(list(out.envelopes))
            except DuplicateSubmission:
                accepted = Receipt(out.message_id, int(time.time()), len(out.envelopes), 0)
            except StaleDeviceList as stale:
                if attempt == 3:
                    await self._refused(out.to, out.cls, out.message_id, stale)
                    raise
                await self._follow(stale, out.to)
                out = await self._seal(out.to, out.cls, out.message_id, out.franking_key,
                                       out.body, out.template_id, out.attachment)  # fmt: skip
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

    async def mark_read(self, conversation: str, message_ids: list[bytes]) -> None:
        """Send a read receipt for these messages of ``conversation``."""
        await self.send(
            conversation, receipt_body(ReceiptStatus.READ, message_ids),
            MessageClass.RECEIPT,
        )  # fmt: skip

    # -- reading state --------------------------------------------------------------------------

    async def history(self, conversation: str) -> list[Message]:
        """The stored messages of a conversation, oldest first."""
        return await self._tx(lambda tx: state.history(tx, conversation))

    async def conversations(self) -> list[str]:
        """The accounts this device has messages with."""
        return await self._tx(state.conversations)

    async def bill(self) -> BillLines:
        """(Business) this account's billing summary, as the relay keeps it."""
        return await self.transport.bill()

    async def window_open(self, peer: str) -> bool:
        """Is the 24 h window of this account's chat with ``peer`` open (SPEC §10.3)?"""
        return await self.transport.window_open(peer)

    async def receipt_status(self, message_id: bytes) -> dict[str, int]:
        """{account: :class:`~e2e.client.state.ReceiptStatus`} of one of our messages."""
        return await self._tx(lambda tx: inbox.receipt_status(tx, message_id))

    async def pending(self) -> list[Outgoing]:
        """Sealed messages the relay has not acknowledged yet."""
        return await self._tx(state.outbox)

    # -- business: routing ----------------------------------------------------------------------

    async def assign(self, customer: str, devices: list[int]) -> None:
        """(Business) route the chat with ``customer`` to these agent devices (plus the
        designated ones); an empty list routes it to every device again."""
        await self.transport.set_route(customer, devices)

    async def designate(self, devices: list[int]) -> None:
        """(Business) devices that receive every routed chat, e.g. an archive."""
        await self.transport.set_designated(devices)

    # -- customer: controls ---------------------------------------------------------------------

    async def block(self, business: str, on: bool = True) -> None:
        """(Customer) block ``business``."""
        await self.transport.control("block", business, on)

    async def limit(self, business: str, on: bool = True) -> None:
        """(Customer) limit ``business`` to important messages."""
        await self.transport.control("limit", business, on)

    async def opt_in(self, business: str, on: bool = True) -> None:
        """(Customer) opt in to ``business``'s marketing."""
        await self.transport.control("opt_in", business, on)

    async def report_spam(self, business: str, block: bool = True) -> int:
        """(Customer) reveal the last (at most 5) messages ``business`` sent and report
        them; returns how many the relay verified (:meth:`report` for the whole verdict)."""
        return len((await self.report(business, block=block)).message_ids)

    async def report(self, business: str, *, block: bool = True) -> ReportVerdict:
        """(Customer) :meth:`report_spam`, answering the relay's verdict: the messages it
        verified, and the revealed attachments whose stored blob is the one the business
        franked (SPEC §10.4, §16.4)."""
        received = [m for m in await self.history(business) if not m.outgoing and m.delivery][
            -MAX_REPORTED:
        ]
        items = tuple(
            ReportItem(m.delivery, m.franking_key, m.body, m.attachment) for m in received
        )
        report = Report(self.profile.account.encode(), business.encode(), items)
        return await self.transport.report_verdict(report.to_bytes(), block)

    async def register_template(
        self, template_id: bytes, cls: MessageClass, text: str | bytes
    ) -> None:
        """(Business) register a template (TEMPLATE or MARKETING) with the relay."""
        body = text.encode() if isinstance(text, str) else text
        await self.transport.register_template(template_id, cls, body)

    async def report_class(self, business: str, message_id: bytes) -> MessageClass:
        """(Customer) report that the message ``message_id`` from ``business`` does not fit
        its declared class, revealing that one message; returns the class the relay
        confirmed (it bills the business a penalty). A message whose content fits its class
        is refused with :class:`~e2e.platform.policy.ReportRejected`."""
        found = [
            m for m in await self.history(business)
            if not m.outgoing and m.delivery and m.message_id == message_id
        ]  # fmt: skip
        if not found:
            raise ReportRejected("no such received message to report")
        m = found[0]
        item = ReportItem(m.delivery, m.franking_key, m.body, m.attachment)
        return await self.transport.report_class(item.to_bytes())
