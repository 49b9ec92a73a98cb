"""The relay's franking keys, spam and class reports, templates and bills (SPEC.md §10.4,
§10.2, §10.3, §10.8).

A mixin of :class:`~e2e.relay.service.RelayService`; its handlers run in the request's
transaction like every other. Franking keys live in the store (sealed under the relay's secret
key) and in memory: a report is verified under every key not yet retired.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

from e2e.errors import (
    E2EError,
    MisdeclaredClass,
    NotAllowed,
    ReportRejected,
)
from e2e.platform.envelope import Delivery
from e2e.platform.franking import (
    MAX_REPORTED,
    Report,
    ReportItem,
    VerifiedMessage,
    verify_class_report,
    verify_item,
)
from e2e.platform.policy import (
    ChatState,
    MessageClass,
    PolicyConfig,
    Template,
    parse_class,
)
from e2e.platform.templates import TemplateSpec
from e2e.platform.wire import (
    MAX_ENTRY_LINES,
    MAX_TEMPLATES,
    BillLines,
    ClassVerdict,
    ListTemplates,
    Notices,
    Ok,
    RegisterTemplate,
    ReportVerdict,
    SubmitClassReport,
    SubmitReport,
    TemplateList,
)
from e2e.relay.quality import SPAM_REPORT
from e2e.relay.secrets import SecretSealer
from e2e.relay.store import (
    BUSINESS,
    CUSTOMER,
    Account,
    Caller,
    FrankingKey,
    RelayStore,
    Tx,
    account_of,
)

__all__ = ["Reports", "FRANKING_ROTATE_SECONDS", "FRANKING_RETIRE_SECONDS"]

#: A new franking key is made when the newest is this old; keys older than
#: FRANKING_RETIRE_SECONDS are retired (erased): reports must come within that time.
FRANKING_ROTATE_SECONDS: Final = 30 * 24 * 3600
FRANKING_RETIRE_SECONDS: Final = 180 * 24 * 3600


class Reports:
    """Franking keys; the report, class report, template and bill handlers."""

    store: RelayStore
    config: PolicyConfig
    clock: Callable[[], int]
    rng: Callable[[int], bytes]
    _sealer: SecretSealer
    _keys: list[FrankingKey]
    _keys_lock: threading.Lock
    negative: Callable[[Tx, bytes, bytes, int, int], None]
    #: The business's catalogue as templates (:class:`~e2e.relay.catalogue.CatalogueHandlers`).
    catalogue_templates: Callable[[Tx, bytes], dict[bytes, Template]]

    def _share(self, business: bytes, customer: bytes, chat: ChatState, now: int) -> None:
        raise NotImplementedError

    # -- franking keys -------------------------------------------------------------------

    def refresh_franking_keys(self) -> None:
        """Load the franking keys; make a new one if there is none or the newest is old;
        retire the ones past their retention."""

        def step(tx: Tx) -> list[FrankingKey]:
            now = self.clock()
            keys = []
            for stored in tx.franking_keys():
                if now - stored.created >= FRANKING_RETIRE_SECONDS:
                    tx.retire_franking_key(stored.key_id, now)
                    continue
                secret = self._sealer.open(b"franking", stored.key_id, stored.secret)
                if self._sealer.sealing and not self._sealer.is_sealed(stored.secret):
                    tx.reseal_franking_key(
                        stored.key_id, self._sealer.seal(b"franking", stored.key_id, secret)
                    )
                keys.append(FrankingKey(stored.key_id, secret, stored.created))
            if not keys or now - keys[0].created >= FRANKING_ROTATE_SECONDS:
                keys.insert(0, self._new_franking_key(tx, now))
            return keys

        keys = self.store.run(step)
        with self._keys_lock:
            self._keys = keys

    def rotate_franking_key(self) -> int:
        """Make a new current franking key now; its key id."""

        def step(tx: Tx) -> int:
            return self._new_franking_key(tx, self.clock()).key_id

        key_id = self.store.run(step)
        self.refresh_franking_keys()
        return key_id

    def _new_franking_key(self, tx: Tx, now: int) -> FrankingKey:
        """A new franking key, stored (sealed if the relay has a secret key)."""
        key = FrankingKey(tx.max_franking_key_id() + 1, self.rng(32), now)
        sealed = self._sealer.seal(b"franking", key.key_id, key.secret)
        tx.insert_franking_key(FrankingKey(key.key_id, sealed, now))
        return key

    def _current_key(self) -> bytes:
        with self._keys_lock:
            return self._keys[0].secret

    def report(self, tx: Tx, caller: Caller, req: SubmitReport) -> ReportVerdict:
        """Verify and record a spam report. Call :meth:`refresh_franking_keys` before (outside
        the transaction) so keys made by other relay processes are known."""
        try:
            parsed = Report.from_bytes(req.report)
        except ReportRejected:
            raise
        except E2EError:
            raise ReportRejected("report is malformed") from None
        if parsed.reporter != caller[0]:
            raise ReportRejected("report signed for another customer")
        customer = account_of(tx, caller[0])
        business = account_of(tx, parsed.business)
        if customer.kind != CUSTOMER or business.kind != BUSINESS:
            raise NotAllowed("reports are a customer's, over a business")
        if len(parsed.items) > MAX_REPORTED:
            raise ReportRejected("too many reported messages")
        verified = tuple(self._verify(item, caller[0], parsed.business) for item in parsed.items)
        if len({v.message_id for v in verified}) != len(verified):
            raise ReportRejected("a message reported twice")
        now = self.clock()
        tx.lock_chat(parsed.business, caller[0])
        chat = tx.chat(parsed.business, caller[0]) or ChatState()
        # A report counts once per message: one that names only messages the customer has
        # reported before changes nothing but the block (SPEC §10.4), nor the business's
        # quality (SPEC §17.3).
        fresh = tx.mark_reported(parsed.business, caller[0], [v.message_id for v in verified])
        if fresh:
            chat.spam_reports += 1
            tx.insert_report(caller[0], parsed.business, now, len(verified), req.report)
            self.negative(tx, parsed.business, caller[0], SPAM_REPORT, now)
            tx.insert_notice(parsed.business, caller[0], Notices.SPAM_REPORT, fresh, now)
        if req.block:
            if not chat.blocked:
                tx.insert_notice(parsed.business, caller[0], Notices.BLOCK, 1, now)
            chat.blocked = True
            chat.entry_until = None
        tx.put_chat(parsed.business, caller[0], chat)
        self._share(parsed.business, caller[0], chat, now)
        return ReportVerdict(
            tuple(v.message_id for v in verified),
            tuple(v.received_at for v in verified),
            tuple(int(v.cls) for v in verified),
        )

    def _verify(self, item: object, reporter: bytes, business: bytes) -> VerifiedMessage:
        return self._verify_key(item, reporter, business)[1]

    def _verify_key(
        self, item: object, reporter: bytes, business: bytes
    ) -> tuple[bytes, VerifiedMessage]:
        """The franking key the item's tag verifies under, and the verified message."""
        assert isinstance(item, ReportItem)
        with self._keys_lock:
            keys = list(self._keys)
        last: E2EError = ReportRejected("no franking key")
        for key in keys:
            try:
                return key.secret, verify_item(key.secret, item, reporter, business)
            except ReportRejected as exc:
                last = exc
        raise last

    def register_template(self, tx: Tx, caller: Caller, req: RegisterTemplate) -> Ok:
        """Register (approve) one of the caller business's templates: its class (TEMPLATE or
        MARKETING) and the SHA-256 of its text. Retrying the same registration is Ok; another
        class or text under a registered id is refused."""
        cls = parse_class(req.cls)
        if cls not in (MessageClass.TEMPLATE, MessageClass.MARKETING):
            raise NotAllowed("a template is a template or a marketing message")
        if account_of(tx, caller[0]).kind != BUSINESS:
            raise NotAllowed("only businesses register templates")
        tpl = Template.of(req.template_id, cls, req.text)
        held = self._templates(tx, caller[0])
        if tpl.template_id not in held and len(held) >= MAX_TEMPLATES:
            raise NotAllowed("too many templates")
        if not tx.insert_template(caller[0], tpl.template_id, int(cls), tpl.text_hash,
                                  self.clock()):  # fmt: skip
            found = self._templates(tx, caller[0]).get(tpl.template_id)
            if found != tpl:
                raise NotAllowed("template id already registered")
        return Ok()

    def list_templates(self, tx: Tx, caller: Caller, req: ListTemplates) -> TemplateList:
        """A business's registered templates, for devices to check message classes with."""
        if account_of(tx, req.business).kind != BUSINESS:
            raise NotAllowed("only businesses have templates")
        held = sorted(self._templates(tx, req.business).values(), key=lambda t: t.template_id)
        return TemplateList(
            tuple(t.template_id for t in held),
            tuple(int(t.cls) for t in held),
            tuple(t.text_hash for t in held),
        )

    def _check_template(self, tx: Tx, src: Account, template_id: bytes, cls: MessageClass) -> None:
        """A message naming a template must be its business's, of a registered template of
        the class it declares (the text is for the devices, and a class report, to check)."""
        if src.kind != BUSINESS:
            raise NotAllowed("only a business sends templates")
        found = self._templates(tx, src.name).get(template_id)
        if found is None:
            raise MisdeclaredClass("unknown template id")
        if found.cls is not cls:
            raise MisdeclaredClass("template registered as another class")

    @staticmethod
    def _templates(tx: Tx, business: bytes, at: int | None = None) -> dict[bytes, Template]:
        """The business's templates (those registered by time ``at``, if given)."""
        return {
            tid: Template(tid, parse_class(cls), digest)
            for tid, cls, digest in tx.templates(business, at)
        }

    def report_class(self, tx: Tx, caller: Caller, req: SubmitClassReport) -> ClassVerdict:
        """Verify a customer's report that one message's content does not fit its declared
        class (:func:`~e2e.platform.franking.verify_class_report` with the business's
        templates registered by the message's receive time) and bill the business one
        penalty line at the outside-window price of the class it should have declared. Once
        per message: a second report of it is refused and adds nothing. Call
        :meth:`refresh_franking_keys` before."""
        try:
            item = ReportItem.from_bytes(req.item)
            delivery = Delivery.from_bytes(item.delivery)
            business = delivery.open_envelope().from_account
        except ReportRejected:
            raise
        except E2EError:
            raise ReportRejected("class report is malformed") from None
        customer = account_of(tx, caller[0])
        if customer.kind != CUSTOMER or account_of(tx, business).kind != BUSINESS:
            raise NotAllowed("reports are a customer's, over a business")
        key, _ = self._verify_key(item, caller[0], business)
        # Judged by the templates as they were when the message was sent: those of the older
        # kind registered by its receive time (under the tag that verify_class_report checks),
        # so one registered later changes nothing; a catalogue version never changes once
        # registered (SPEC §17.1), so the version the message names is the one it was sent as.
        at = delivery.received_at
        templates = self._templates(tx, business, at) | self.catalogue_templates(tx, business)
        verified, verdict = verify_class_report(key, item, caller[0], business, templates)
        price = self.config.prices.price(verdict.content, False)
        named = templates.get(verified.template_id or b"")
        if (
            named is not None
            and isinstance(named.spec, TemplateSpec)
            and (verdict.content is named.cls)
        ):  # a catalogue template whose content does not fit (SPEC §17.1): its category's price
            price = self.config.prices.category_price(int(named.spec.category), False)
        now = self.clock()
        if not tx.insert_penalty(
            business, verified.message_id, int(verdict.declared), int(verdict.content), price,
            now, caller[0],
        ):  # fmt: skip
            raise ReportRejected("message already reported for its class")
        return ClassVerdict(verified.message_id, int(verdict.declared), int(verdict.content), price)

    def bill(self, tx: Tx, caller: Caller, req: object = None) -> BillLines:
        acct = account_of(tx, caller[0])
        if acct.kind != BUSINESS:
            raise NotAllowed("only businesses have bills")
        lines = tx.bill(caller[0])
        pen = tx.penalties(caller[0])
        cat = tx.bill_categories(caller[0])
        entries = tx.entry_lines(caller[0], MAX_ENTRY_LINES)

        def col(rows: list[tuple[int, int, int, int]], i: int) -> tuple[int, ...]:
            return tuple(r[i] for r in rows)

        return BillLines(
            acct.tier, col(lines, 0), col(lines, 1), col(lines, 2), col(lines, 3),
            col(pen, 0), col(pen, 1), col(pen, 2), col(pen, 3),
            col(cat, 0), col(cat, 1), col(cat, 2), col(cat, 3),
            tuple(r[0] for r in entries), tuple(r[1] for r in entries),
        )  # fmt: skip
