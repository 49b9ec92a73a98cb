"""Receiving, the delivery contract and the events API of a client device (SPEC.md §10.10,
§10.11). A part of :class:`~e2e.client.device.Client`.

The contract: a delivery is acknowledged to the relay only once it is durably opened into the
device's store (history and event), or durably kept as undecryptable with its reason, or held
until the application accepts a key change. A failure to reach the relay -- while fetching the
sender's device list, say -- is never a verdict on a message: the delivery stays in the
mailbox and is fetched again. What a batch leaves to do after it (its delivered receipts,
retry requests for what did not decrypt, resends others asked for, the recovery after a
restore, the deliveries held for a key change) is kept as store records and done by this and
every later :meth:`Receiver.sync` and by :meth:`~e2e.client.device.Client.open`; a transient
failure of any of it, or of the acknowledgement, only postpones it.

The application reads :mod:`e2e.client.events` from a cursor it advances itself
(:meth:`Receiver.events`, :meth:`Receiver.read_events`, :meth:`Receiver.ack`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

from e2e.client import events, inbox, state
from e2e.client.events import Event
from e2e.client.records import (
    MAX_RECEIPT_IDS,
    Message,
    Profile,
    ReceiptStatus,
    receipt_body,
    retry_body,
)
from e2e.client.state import Outgoing
from e2e.client.transport import Transport
from e2e.errors import (
    DuplicateMessage,
    E2EError,
    KeyChangePending,
    LogForked,
)
from e2e.keys import Rng
from e2e.platform.envelope import FRANKING_KEY_LEN, MESSAGE_ID_LEN, Delivery
from e2e.platform.policy import MessageClass, Template, check_class
from e2e.platform.templates import parse_ref
from e2e.platform.wire import MAX_WAIT_MS
from e2e.store import Address, StoreTransaction

__all__ = ["Receiver"]

_T = TypeVar("_T")
#: Opened deliveries of one batch: each message with its event.
_Opened = list[tuple[Message, Event | None]]


class Receiver:
    """Receiving and the events API, for :class:`~e2e.client.device.Client` (which supplies
    the attributes and the sending steps below)."""

    transport: Transport
    profile: Profile
    rng: Rng
    auto_receipts: bool
    classify: Callable[[bytes], MessageClass | None] | None
    errors: dict[str, int]
    monitor_seconds: int
    monitor_budget: int

    async def _tx(self, fn: Callable[[StoreTransaction], _T]) -> _T:
        raise NotImplementedError

    async def _seal(
        self,
        draft: state.Draft,
        *,
        renew: Sequence[Address] = (),
        also: Callable[[StoreTransaction], None] | None = None,
    ) -> Outgoing:
        raise NotImplementedError

    async def _deliver(self, out: Outgoing) -> Message:
        raise NotImplementedError

    async def _ensure_sessions(
        self, dests: list[Address], *, renew: Sequence[Address] = ()
    ) -> None:
        raise NotImplementedError

    async def refresh(self, account: str, chat: str | None = None) -> dict[int, bytes]:
        raise NotImplementedError

    async def _check_peer_heads(self) -> None:
        raise NotImplementedError

    async def _auto_monitor(self, every: int, budget: int) -> None:
        raise NotImplementedError

    def _count_error(self, exc: E2EError) -> None:
        raise NotImplementedError

    # -- the events API (SPEC §10.11) --------------------------------------------------------

    async def read_events(self, after: int | None = None, limit: int = 256) -> list[Event]:
        """Up to ``limit`` stored events after position ``after`` (default: the acknowledged
        cursor), oldest first. Reads the store only."""
        return await self._tx(lambda tx: events.read(tx, after, limit))

    async def cursor(self) -> int:
        """The position the application acknowledged last (0: none)."""
        return await self._tx(events.cursor)

    async def ack(self, upto: int | Event) -> int:
        """Acknowledge every event up to ``upto`` (a position or an event): the durable
        cursor moves there (never back) and those events are deleted. Returns the cursor."""
        seq = upto.seq if isinstance(upto, Event) else upto
        return await self._tx(lambda tx: events.ack(tx, seq))

    async def events(
        self, *, after: int | None = None, wait_ms: int = MAX_WAIT_MS
    ) -> AsyncIterator[Event]:
        """Every event after position ``after`` (default: the acknowledged cursor), oldest
        first, for ever: when none is left it syncs, the relay holding the fetch up to
        ``wait_ms`` until mail arrives. Transient failures (the relay unreachable, a request
        refused as such, :func:`~e2e.client.inbox.transient`) are waited out with a growing
        pause; anything else is raised.

        It does not acknowledge: the application calls :meth:`ack` once it has done what an
        event asks (or keeps the position in its own database, with what it did, and passes
        it as ``after`` when it starts again), so a crash in between neither loses nor
        repeats an event."""
        position = await self.cursor() if after is None else after
        pause = 0.05
        while True:
            batch = await self.read_events(after=position)
            for event in batch:
                position = event.seq
                yield event
            if batch:
                continue
            try:
                await self.sync(wait_ms=wait_ms)
                pause = 0.05
            except E2EError as exc:
                if not inbox.transient(exc):
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    # -- receiving ------------------------------------------------------------------------------

    async def sync(
        self,
        *,
        wait_ms: int = 0,
        on_error: Callable[[bytes, E2EError], None] | None = None,
    ) -> list[Message]:
        """Fetch, open and acknowledge what is waiting, then do what is due (SPEC §10.11):
        delivered receipts, retry requests, resends, deliveries held for a key change.

        Returns the messages (and receipts) this call opened; every one of them is also an
        event (:meth:`events`), which is what an application relies on: a failure after the
        batch is opened cannot take them back. With ``wait_ms`` and nothing waiting, the
        relay holds the fetch until mail arrives (push by long-poll) or the wait ends.
        With a log key pinned it then audits the key log for this account's entries, once
        every :attr:`monitor_seconds` (SPEC §13.4). Redelivered messages are acknowledged and
        skipped. A delivery that cannot be
        accepted is kept as an :class:`~e2e.client.events.Undecryptable` event, counted in
        :attr:`errors`, passed to ``on_error`` and acknowledged; one that failed only
        because the relay could not be reached stays in the mailbox."""
        raws = await self.transport.fetch(wait_ms)
        opened = await self._take(raws, on_error)
        opened += await self._follow_up()
        checked = await self._check_classes(opened)  # flags kept with the events first
        await self._auto_monitor(self.monitor_seconds, self.monitor_budget)
        return checked

    async def _take(
        self, raws: Sequence[bytes], on_error: Callable[[bytes, E2EError], None] | None
    ) -> _Opened:
        opened: _Opened = []
        acks: list[int] = []
        for raw in raws:
            try:
                seq = Delivery.from_bytes(raw).seq
            except E2EError as exc:  # the relay's record itself is broken: it cannot be acked
                await self._keep(raw, exc, on_error)
                continue
            try:
                opened.append(await self._open(raw))
            except DuplicateMessage:
                pass
            except KeyChangePending:
                await self._tx(functools.partial(inbox.hold, raw=raw, seq=seq))
            except E2EError as exc:
                if inbox.transient(exc):
                    continue  # not a verdict on the message: it is fetched again
                await self._keep(raw, exc, on_error)
            acks.append(seq)
        if acks:
            try:
                await self.transport.ack(acks)
            except E2EError as exc:
                if not inbox.transient(exc):
                    raise
                # the deliveries come again; each is recognised as seen and acknowledged then
        return opened

    async def _open(self, raw: bytes) -> tuple[Message, Event | None]:
        """Open one delivery; a sender device not (or differently) certified here gets its
        account's chat list, then its full list, fetched first."""
        for attempt in range(3):
            opener = functools.partial(
                inbox.open_event, profile=self.profile, raw=raw, receipts=self.auto_receipts,
                refreshed=attempt == 2,
            )  # fmt: skip
            try:
                return await self._tx(opener)
            except inbox.NeedDevices as need:
                if attempt == 0:
                    await self.refresh(need.account, self.profile.account)
                elif attempt == 1:
                    await self.refresh(need.account)
                else:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _keep(
        self, raw: bytes, exc: E2EError, on_error: Callable[[bytes, E2EError], None] | None
    ) -> None:
        """Keep a delivery that cannot be accepted (an event, and a retry request due)."""
        kept = await self._tx(lambda tx: inbox.undecryptable(tx, self.profile, raw, exc))
        if kept is None:
            return  # kept before
        self._count_error(exc)
        if on_error is not None:
            on_error(raw, exc)

    async def _check_classes(self, opened: _Opened) -> list[Message]:
        """On a customer's device, check each business message's content against its
        declared class with the business's registered templates (fetched once per business
        and sync, again if a template id is not among them): a mismatch is flagged, not
        refused (SPEC §10.2), and kept with the message's event."""
        if self.profile.kind != "customer":
            return [m for m, _ in opened]
        held: dict[str, dict[bytes, Template]] = {}
        out = []
        for m, event in opened:
            if m.outgoing or m.cls is MessageClass.RECEIPT:
                out.append(m)
                continue
            templates = held.get(m.conversation)
            if templates is None or (m.template_id is not None and m.template_id not in templates):
                try:
                    templates = await self.transport.templates(m.conversation)
                    if m.template_id is not None and parse_ref(m.template_id) is not None:
                        templates = templates | {  # a catalogue version (SPEC §17.1)
                            e.ref: Template(e.ref, e.spec.category.cls, e.text_hash, e.spec)
                            for e in await self.transport.catalogue(m.conversation)
                        }
                except E2EError:
                    out.append(m)  # unchecked for now: the relay could not say
                    continue
                held[m.conversation] = templates
            check = check_class(m.cls, m.template_id, m.body, templates, self.classify)
            checked = dataclasses.replace(m, class_check=check)
            if isinstance(event, events.MessageReceived):
                rewrite = functools.partial(
                    events.rewrite, event=events.MessageReceived(event.seq, checked)
                )
                await self._tx(rewrite)
            out.append(checked)
        return out

    # -- what a batch leaves to do (SPEC §10.11) ------------------------------------------------

    async def _follow_up(self) -> _Opened:
        """Do what is due; a transient failure of any step leaves it for the next time.
        Returns what held deliveries opened."""
        due = await self._tx(inbox.todo)
        opened: _Opened = []
        if due:
            for step in (
                self._reopen_held if due.held else None,
                self._flush_outbox if due.outbox else None,
                functools.partial(self._send_receipts, due.receipts) if due.receipts else None,
                functools.partial(self._ask_retries, due.retries) if due.retries else None,
                functools.partial(self._answer, due.asks) if due.asks else None,
                self._flush_resends if due.asks or due.resends else None,
                self._recover if due.recover else None,
            ):
                if step is None:
                    continue
                try:
                    got = await step()
                except E2EError as exc:
                    if not inbox.transient(exc):
                        raise
                    break
                if got:
                    opened += got
        try:
            await self._check_peer_heads()
        except E2EError as exc:
            if not inbox.transient(exc):
                raise
        return opened

    async def _reopen_held(self) -> _Opened:
        """Open the deliveries held for a key change the application has since accepted."""
        opened: _Opened = []
        for key, raw in await self._tx(inbox.held):
            try:
                opened.append(await self._open(raw))
            except (DuplicateMessage, KeyChangePending):
                pass
            except E2EError as exc:
                if inbox.transient(exc):
                    raise
                await self._keep(raw, exc, None)
            await self._tx(functools.partial(inbox.release, key=key))
        return opened

    async def _flush_outbox(self) -> None:
        """Submit what the outbox holds, in order (a refusal settles its entry)."""
        for out in await self._tx(state.outbox):
            try:
                await self._deliver(out)
            except E2EError as exc:
                if inbox.transient(exc):
                    raise
                # refused for good (the entry is gone, a SendRefused event written), or
                # waiting for the application (KeyChangePending): the rest still goes

    @staticmethod
    def _settle(exc: E2EError) -> bool:
        """Whether a follow-up refused with ``exc`` is settled for good (True) or stays due."""
        if inbox.transient(exc) or isinstance(exc, KeyChangePending):
            return False
        if isinstance(exc, LogForked):
            raise exc
        return True

    async def _send_message(
        self, to: str, body: bytes, *, renew: Sequence[Address] = (),
        also: Callable[[StoreTransaction], None] | None = None,
    ) -> None:  # fmt: skip
        """Seal and submit a message of class RECEIPT (``renew``, ``also``: as ``_seal``)."""
        draft = state.Draft(to, MessageClass.RECEIPT, self.rng(MESSAGE_ID_LEN),
                            self.rng(FRANKING_KEY_LEN), body)  # fmt: skip
        out = await self._seal(draft, renew=renew, also=also)
        await self._deliver(out)

    async def _send_receipts(self, due: dict[str, list[bytes]]) -> None:
        """One delivered receipt per conversation for the messages received there."""
        chunks = [(peer, ids[i : i + MAX_RECEIPT_IDS]) for peer, ids in due.items()
                  for i in range(0, len(ids), MAX_RECEIPT_IDS)]  # fmt: skip
        for peer, ids in chunks:
            done = functools.partial(inbox.receipts_done, conversation=peer, message_ids=ids)
            try:
                await self._send_message(
                    peer, receipt_body(ReceiptStatus.DELIVERED, ids), also=done
                )
            except E2EError as exc:
                if self._settle(exc):
                    await self._tx(done)  # refused (the customer blocked us): nothing to tell
                elif inbox.transient(exc):
                    raise

    async def _ask_retries(self, due: list[inbox.RetryDue]) -> None:
        """Ask each device whose messages did not decrypt to send them again, on a new
        session started for the request (SPEC §10.11)."""
        for d in due:
            sent = functools.partial(inbox.retries_sent, due=d)
            try:
                await self._send_message(d.conversation,
                                         retry_body(list(d.message_ids), d.since),
                                         renew=[d.sender], also=sent)  # fmt: skip
            except E2EError as exc:
                if self._settle(exc):
                    await self._tx(sent)
                elif inbox.transient(exc):
                    raise

    async def _answer(self, asks: list[inbox.ResendAsk]) -> None:
        """Seal again, for the device that asked, the messages this device sent that it
        names; each is kept until the relay takes it (:meth:`_flush_resends`)."""
        for ask in asks:
            plan = await self._tx(
                functools.partial(inbox.resend_plan, profile=self.profile, ask=ask)
            )
            if plan:
                try:
                    await self._ensure_sessions([ask.requester])
                except E2EError as exc:
                    if not self._settle(exc):
                        raise
                    plan = []  # the device cannot be reached: nothing to send it

            def seal(tx: StoreTransaction, ask: inbox.ResendAsk = ask,
                     plan: list[Message] = plan) -> None:  # fmt: skip
                sealed = []
                for m in plan:
                    [env] = state.seal_copies(tx, self.profile, state.Draft.of(m),
                                              [ask.requester])  # fmt: skip
                    sealed.append((m, env))
                inbox.resend_sealed(tx, ask, sealed)

            await self._tx(seal)

    async def _flush_resends(self) -> None:
        """Hand the relay the resends sealed and not yet taken."""
        for key, envs in await self._tx(inbox.resends_pending):
            try:
                await self.transport.resend(envs)
            except E2EError as exc:
                if not self._settle(exc):
                    raise
            await self._tx(functools.partial(inbox.resend_done, key=key))

    async def _recover(self) -> None:
        """After a restore from a backup: ask the devices of every recent conversation for
        everything they sent since this device's newest message there. The requests go on
        new sessions (the restored ones may not send, SPEC §6.5), which re-keys every peer."""
        plan = await self._tx(lambda tx: inbox.recovery_plan(tx, self.profile))
        for conv, since in plan.items():
            asked = functools.partial(inbox.recovery_asked, conversation=conv)
            try:
                await self._send_message(conv, retry_body([], since), also=asked)
            except E2EError as exc:
                if self._settle(exc):
                    await self._tx(asked)
                elif inbox.transient(exc):
                    raise
