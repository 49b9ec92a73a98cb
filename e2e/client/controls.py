"""What a device reads of its own state and asks of the relay beside messaging (SPEC.md
§10.10): history and receipts, the bill and the window, a business's routing, a customer's
controls and reports. A part of :class:`~e2e.client.device.Client`.
"""

from __future__ import annotations

import functools

from e2e.client import events, inbox, state
from e2e.client.events import CustomerNotice
from e2e.client.lifecycle import Lifecycle
from e2e.client.records import Message
from e2e.client.state import Outgoing
from e2e.errors import ReportRejected
from e2e.platform.franking import MAX_REPORTED, Report, ReportItem
from e2e.platform.policy import MessageClass
from e2e.platform.wire import BillLines, ReportVerdict
from e2e.store import StoreTransaction

__all__ = ["Controls"]

#: The position of the relay's notices this device has turned into events (u64).
_NOTICE_CURSOR = "c/notice-cursor"


class Controls(Lifecycle):
    """Reading state, routing and controls (a part of :class:`~e2e.client.device.Client`)."""

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

    async def sync_notices(self) -> list[CustomerNotice]:
        """(Business) fetch what customers did about this business since the last call --
        blocks, limits and opt-ins turned on or off, spam reports (SPEC §17.2) -- and write
        each as a :class:`~e2e.client.events.CustomerNotice` event, in one transaction with
        the position read up to (so a crash neither loses nor repeats one); the new events."""
        out: list[CustomerNotice] = []
        while True:
            after = await self._tx(_notice_cursor)
            got = await self.transport.notices(after)
            if not got.seqs:
                return out
            rows = list(zip(got.seqs, got.customers, got.kinds, got.values, got.times,
                            strict=True))  # fmt: skip
            out += await self._tx(functools.partial(_write_notices, after=after, rows=rows))

    # -- business: routing ----------------------------------------------------------------------

    async def assign(self, customer: str, devices: list[int]) -> None:
        """(Business) route the chat with ``customer`` to these agent devices (plus the
        designated ones); an empty list routes it to every device again."""
        await self.transport.set_route(customer, devices)

    async def designate(self, devices: list[int]) -> None:
        """(Business) devices that receive every routed chat, e.g. an archive."""
        await self.transport.set_designated(devices)

    # -- customer: controls ---------------------------------------------------------------------

    async def block(self, peer: str, on: bool = True) -> None:
        """Block ``peer``: a customer blocks a business (its messages are refused), a
        business blocks a customer (that customer's messages to it are refused)."""
        await self.transport.control("block", peer, on)

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


def _notice_cursor(tx: StoreTransaction) -> int:
    raw = tx.app_get(_NOTICE_CURSOR)
    return 0 if raw is None else int.from_bytes(raw, "big")


def _write_notices(
    tx: StoreTransaction, after: int, rows: list[tuple[int, bytes, int, int, int]]
) -> list[CustomerNotice]:
    """The relay's notices ``rows`` (read after position ``after``) as events, and the
    cursor past them; nothing if another process sharing the store moved the cursor."""
    if _notice_cursor(tx) != after:
        return []
    written = []
    for _seq, customer, kind, value, at in rows:
        name = customer.decode("utf-8", errors="replace")
        notice = CustomerNotice(0, name, CustomerNotice.KINDS[kind - 1], value, at)
        written.append(events.append(tx, notice))
    tx.app_put(_NOTICE_CURSOR, max(r[0] for r in rows).to_bytes(8, "big"))
    return written
