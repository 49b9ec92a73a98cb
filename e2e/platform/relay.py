"""The relay: prekey directory, mailboxes, routing, metadata policy and billing (SPEC.md §8).

The relay never holds a key that opens an E2E frame. It sees envelopes (routing metadata
around opaque frames), device certificates and prekey bundles (public keys), and customer
controls. Every byte it receives and every record it stores is appended to
:attr:`Relay.recorder`, so tests can scan all of it.

Clock: the relay asks ``clock()`` for the time in whole seconds (inject a
:class:`ManualClock` in tests and the demo).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from e2e.clock import Clock, ManualClock, system_clock
from e2e.errors import (
    DecodeError,
    DuplicateSubmission,
    E2EError,
    InvalidSignature,
    MisdeclaredClass,
    NotAllowed,
    ReportRejected,
    StaleDeviceList,
    UnknownAccount,
)
from e2e.frame import encode_map
from e2e.keys import check_x25519_public
from e2e.platform.adservice import ChatView
from e2e.platform.directory import DeviceCertificate
from e2e.platform.envelope import Delivery, Envelope, check_account, check_template_id
from e2e.platform.franking import (
    MAX_REPORTED,
    Report,
    ReportItem,
    VerifiedMessage,
    relay_tag,
    verify_class_report,
    verify_item,
)
from e2e.platform.merkle import LogSigner
from e2e.platform.policy import (
    ChatState,
    ClassCheck,
    MessageClass,
    PolicyConfig,
    PriceTable,
    Template,
    billable,
    opens_window,
)
from e2e.platform.transparency import DirectoryEntry, KeyLog
from e2e.prekeys import PrekeyBundle
from e2e.relay.tap import Recorder

__all__ = [
    "Clock",
    "ManualClock",
    "system_clock",
    "Recorder",
    "Receipt",
    "BillLine",
    "Bill",
    "Relay",
    "AdSink",
]

Kind = Literal["customer", "business"]
_KINDS: Final = ("customer", "business")


class AdSink(Protocol):
    """What the relay shares with: anything with ``receive(bytes)``."""

    def receive(self, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Receipt:
    message_id: bytes
    received_at: int
    copies: int
    price: int


@dataclass(frozen=True, slots=True)
class BillLine:
    item: str
    count: int
    unit_price: int

    @property
    def amount(self) -> int:
        return self.count * self.unit_price


@dataclass(frozen=True, slots=True)
class Bill:
    business: bytes
    lines: tuple[BillLine, ...]

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.lines)


@dataclass(slots=True)
class _Account:
    kind: Kind
    identity: bytes
    devices: dict[int, DeviceCertificate] = field(default_factory=dict)


class Relay:
    """An in-memory relay. Methods take what a device would send over the wire (bytes) and
    the authenticated address of the calling device."""

    def __init__(
        self,
        config: PolicyConfig | None = None,
        clock: Clock = system_clock,
        ad_service: AdSink | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        log_key: bytes | None = None,
    ) -> None:
        self.config = config or PolicyConfig()
        self.clock = clock
        self.ad_service = ad_service
        self.recorder = Recorder()
        self._frank_key = rng(32)
        self._accounts: dict[bytes, _Account] = {}
        self._bundles: dict[tuple[bytes, int], list[bytes]] = {}
        self._last_resort: dict[tuple[bytes, int], bytes] = {}
        #: One-time prekey ids ever published per device: a re-upload of one is ignored.
        self._published: dict[tuple[bytes, int], set[int]] = {}
        #: Business-side devices of each (business, customer) chat, set by the business.
        self._routes: dict[tuple[bytes, bytes], frozenset[int]] = {}
        #: Devices of a business that receive every chat (an archive, a supervisor).
        self._designated: dict[bytes, frozenset[int]] = {}
        self._mailboxes: dict[tuple[bytes, int], dict[int, bytes]] = {}
        self._next_seq = 1
        self._seen_ids: set[tuple[bytes, bytes]] = set()
        self._chats: dict[tuple[bytes, bytes], ChatState] = {}
        self._billing: dict[bytes, dict[tuple[MessageClass, bool], int]] = {}
        self.reports: list[tuple[bytes, bytes, tuple[VerifiedMessage, ...]]] = []
        self.refusals: dict[str, int] = {}
        #: The key directory (SPEC §13.4): every account key and device list, logged.
        self.key_log = KeyLog(LogSigner(log_key))
        self._business_certs: dict[bytes, bytes] = {}
        self._templates: dict[bytes, dict[bytes, Template]] = {}
        #: (business) -> (declared, content) -> confirmed misdeclared messages
        self._penalties: dict[bytes, dict[tuple[MessageClass, MessageClass], int]] = {}
        self._class_reported: set[tuple[bytes, bytes]] = set()

    def __repr__(self) -> str:
        return f"Relay({len(self._accounts)} accounts)"

    # -- directory -------------------------------------------------------------------------

    def register_account(self, name: bytes, kind: Kind, identity: bytes) -> int:
        """Create an account; returns the version of its first key-directory entry."""
        if kind not in _KINDS:
            raise NotAllowed("an account is a customer or a business")
        self.recorder(
            "recv:account", encode_map({0: 1, 1: name, 2: _KINDS.index(kind), 3: identity})
        )
        check_account(name)
        check_x25519_public(identity)
        if name in self._accounts:
            raise UnknownAccount("account name already taken")
        self._accounts[name] = _Account(kind, identity)
        self.recorder("store:account", name + identity)
        return self._log_account(name)

    def _log_account(self, name: bytes) -> int:
        """Append the account's current key and device list to the key directory."""
        acct = self._accounts[name]
        certs = [c.to_bytes() for _, c in sorted(acct.devices.items())]
        index = self.key_log.publish(name, acct.identity, certs)
        self.recorder("store:log", self.key_log.entries[index])
        return DirectoryEntry.from_bytes(self.key_log.entries[index]).version

    def _account(self, name: bytes) -> _Account:
        acct = self._accounts.get(name)
        if acct is None:
            raise UnknownAccount("unknown account")
        return acct

    def register_device(self, certificate: bytes) -> int:
        """Add a certified device; returns the account's new key-directory version."""
        self.recorder("recv:device", certificate)
        cert = DeviceCertificate.from_bytes(certificate)
        acct = self._account(cert.account)
        cert.verify(acct.identity)
        acct.devices[cert.device_id] = cert
        self._mailboxes.setdefault((cert.account, cert.device_id), {})
        self.recorder("store:device", certificate)
        return self._log_account(cert.account)

    def remove_device(self, account: bytes, device_id: int) -> int:
        """Remove a device; returns the account's new key-directory version."""
        self.recorder("recv:remove-device", encode_map({0: 1, 1: account, 2: device_id}))
        acct = self._account(account)
        if acct.devices.pop(device_id, None) is None:
            raise UnknownAccount("unknown device")
        self._bundles.pop((account, device_id), None)
        self._last_resort.pop((account, device_id), None)
        self._mailboxes.pop((account, device_id), None)
        return self._log_account(account)

    # -- key directory (SPEC §13.4) --------------------------------------------------------

    @property
    def log_public_key(self) -> bytes:
        """The Ed25519 key clients pin to check tree heads."""
        return self.key_log.signer.public

    def log_head(self) -> bytes:
        """The log's newest signed tree head, signed now."""
        return self.key_log.head(self.clock()).to_bytes()

    def log_lookup(self, account: bytes, size: int) -> tuple[bytes, bytes]:
        """``account``'s newest entry in the tree of ``size`` leaves and its inclusion proof."""
        raw, proof = self.key_log.lookup(account, size)
        return raw, proof.to_bytes()

    def log_consistency(self, size1: int, size2: int) -> bytes:
        return self.key_log.consistency(size1, size2).to_bytes()

    def log_entries(self, start: int, size: int) -> list[tuple[bytes, bytes]]:
        """Entries ``start .. size-1`` with inclusion proofs in the tree of ``size`` (monitors)."""
        return [(raw, p.to_bytes()) for raw, p in self.key_log.entries_since(start, size)]

    def set_business_certificate(self, account: bytes, certificate: bytes) -> None:
        """Store the platform's certificate for a business (the relay only hands it out)."""
        self._account(account)
        self._business_certs[account] = certificate

    def business_certificate(self, account: bytes) -> bytes | None:
        return self._business_certs.get(account)

    def upload_prekeys(
        self, account: bytes, device_id: int, one_time: list[bytes], last_resort: bytes
    ) -> None:
        """Publish bundles: each one-time bundle is handed out once, then the last-resort one."""
        for raw in [*one_time, last_resort]:
            self.recorder("recv:bundle", raw)
        cert = self._device(account, device_id)
        for raw in [*one_time, last_resort]:
            bundle = PrekeyBundle.from_bytes(raw)
            if not hmac.compare_digest(bundle.identity_key, cert.identity):
                raise InvalidSignature("bundle identity differs from the certified device key")
            bundle.verify()
        seen = self._published.setdefault((account, device_id), set())
        pool = self._bundles.setdefault((account, device_id), [])
        for raw in one_time:
            opk_id = PrekeyBundle.from_bytes(raw).opk_id
            if opk_id is None or opk_id in seen:
                continue  # idempotent: a retried upload never republishes a prekey
            seen.add(opk_id)
            pool.append(raw)
        self._last_resort[(account, device_id)] = last_resort
        for raw in [*one_time, last_resort]:
            self.recorder("store:bundle", raw)

    def _device(self, account: bytes, device_id: int) -> DeviceCertificate:
        cert = self._account(account).devices.get(device_id)
        if cert is None:
            raise UnknownAccount("unknown device")
        return cert

    def fetch_devices(self, account: bytes, chat: bytes | None = None) -> tuple[bytes, list[bytes]]:
        """The account's identity key and its device certificates; with ``chat`` (the peer
        of a business), only the business devices that receive that chat."""
        acct = self._account(account)
        ids = sorted(acct.devices)
        if chat is not None and acct.kind == "business":
            ids = sorted(self._chat_devices(account, chat))
        return acct.identity, [acct.devices[d].to_bytes() for d in ids]

    def prekey_count(self, account: bytes, device_id: int) -> int:
        """One-time bundles of the device still waiting to be handed out."""
        self._device(account, device_id)
        return len(self._bundles.get((account, device_id), []))

    def _chat_devices(self, business: bytes, customer: bytes) -> set[int]:
        acct = self._account(business)
        route = self._routes.get((business, customer))
        if route is None:
            return set(acct.devices)
        return {d for d in route | self._designated.get(business, frozenset()) if d in acct.devices}

    def set_route(self, sender: tuple[bytes, int], customer: bytes, device_ids: list[int]) -> None:
        """Assign the chat with ``customer`` to these devices of the sender's business
        (each must be a registered, hence certified, device); an empty list removes it."""
        acct = self._account(sender[0])
        self._device(*sender)
        if acct.kind != "business" or self._account(customer).kind != "customer":
            raise NotAllowed("a business routes its chats with customers")
        for d in device_ids:
            self._device(sender[0], d)
        if device_ids:
            self._routes[(sender[0], customer)] = frozenset(device_ids)
        else:
            self._routes.pop((sender[0], customer), None)

    def set_designated(self, sender: tuple[bytes, int], device_ids: list[int]) -> None:
        """Devices of the sender's business that receive every routed chat."""
        acct = self._account(sender[0])
        self._device(*sender)
        if acct.kind != "business":
            raise NotAllowed("only a business designates devices")
        for d in device_ids:
            self._device(sender[0], d)
        self._designated[sender[0]] = frozenset(device_ids)

    def fetch_bundle(self, account: bytes, device_id: int) -> bytes:
        self._device(account, device_id)
        pool = self._bundles.get((account, device_id))
        if pool:
            return pool.pop(0)
        last = self._last_resort.get((account, device_id))
        if last is None:
            raise UnknownAccount("device has not published prekeys")
        return last

    def kind(self, account: bytes) -> Kind:
        return self._account(account).kind

    # -- messages --------------------------------------------------------------------------

    def _refuse(self, exc: E2EError) -> E2EError:
        name = type(exc).__name__
        self.refusals[name] = self.refusals.get(name, 0) + 1
        return exc

    def submit(self, sender: tuple[bytes, int], envelopes: list[bytes]) -> Receipt:
        """Accept one logical message as a batch of device copies, or refuse all of it.

        Raises a :class:`~e2e.errors.PolicyError` subclass (or a DecodeError for malformed
        envelopes); a refused batch stores nothing.
        """
        for raw in envelopes:
            self.recorder("recv:envelope", raw)
        try:
            return self._submit(sender, envelopes)
        except E2EError as exc:
            raise self._refuse(exc) from None

    # -- templates -------------------------------------------------------------------------

    def register_template(
        self, business: bytes, template_id: bytes, cls: MessageClass, text: bytes
    ) -> Template:
        """Register (approve) one of ``business``'s templates with its class (TEMPLATE or
        MARKETING). Devices fetch them with :meth:`templates` to check message classes."""
        check_template_id(template_id)
        if self._account(business).kind != "business":
            raise NotAllowed("only businesses register templates")
        if cls is MessageClass.SERVICE:
            raise NotAllowed("a template is a template or a marketing message")
        found = self._templates.setdefault(business, {})
        if template_id in found:
            raise NotAllowed("template id already registered")
        found[template_id] = Template.of(template_id, cls, text)
        return found[template_id]

    def templates(self, business: bytes) -> dict[bytes, Template]:
        """The registered templates of ``business`` by id (public, like the directory)."""
        return dict(self._templates.get(business, {}))

    def precheck(
        self,
        sender: tuple[bytes, int],
        cls: MessageClass,
        to_account: bytes,
        dests: list[tuple[bytes, int]],
    ) -> None:
        """Raise the refusal :meth:`submit` would raise for this send, changing nothing.

        Devices call it before encrypting, so a refused send does not consume message keys.
        """
        try:
            self._check(sender, cls, to_account, dests)
        except E2EError as exc:
            raise self._refuse(exc) from None

    def _check(
        self,
        sender: tuple[bytes, int],
        cls: MessageClass,
        to_account: bytes,
        given: list[tuple[bytes, int]],
    ) -> tuple[Kind, bytes, bytes, ChatState, bool, int]:
        self._device(*sender)
        src = self._account(sender[0])
        dst = self._account(to_account)
        if src.kind == dst.kind:
            raise NotAllowed(f"a {src.kind} cannot message a {dst.kind}")
        if src.kind == "customer" and cls not in (MessageClass.SERVICE, MessageClass.RECEIPT):
            raise NotAllowed("customers send service messages and receipts only")
        if src.kind == "business":
            own = self._chat_devices(sender[0], to_account)
            if sender[1] not in own:
                raise NotAllowed("this device is not assigned to the chat")
            peer = set(dst.devices)
        else:
            own = set(src.devices)
            peer = self._chat_devices(to_account, sender[0])
        want = {(to_account, d) for d in peer} | {(sender[0], d) for d in own if d != sender[1]}
        if len(set(given)) != len(given) or set(given) != want:
            missing = sorted(want - set(given))
            extra = sorted(set(given) - want)
            raise StaleDeviceList(missing, extra)
        now = self.clock()
        if src.kind == "business":
            business, customer = sender[0], to_account
        else:
            business, customer = to_account, sender[0]
        chat = self._chats.get((business, customer)) or ChatState()
        in_window = False
        if src.kind == "business":
            in_window = chat.check_business_send(cls, now, self.config)
        return src.kind, business, customer, chat, in_window, now

    def _submit(self, sender: tuple[bytes, int], envelopes: list[bytes]) -> Receipt:
        if not envelopes:
            raise DecodeError("empty batch")
        envs = [Envelope.from_bytes(raw) for raw in envelopes]
        first = envs[0]
        for env in envs:
            if env.sender != sender:
                raise NotAllowed("envelope sender differs from the authenticated device")
            if (env.message_id, env.cls, env.to_account, env.template_id) != (
                first.message_id,
                first.cls,
                first.to_account,
                first.template_id,
            ) or env.commitment != first.commitment:
                raise DecodeError("batch copies disagree on their message metadata")
        if first.template_id is not None:
            found = self._templates.get(sender[0], {}).get(first.template_id)
            if found is None or found.cls is not first.cls:
                raise MisdeclaredClass("template id not registered for this class")
        kind, business, customer, chat, in_window, now = self._check(
            sender, first.cls, first.to_account, [env.dest for env in envs]
        )
        if (sender[0], first.message_id) in self._seen_ids:
            raise DuplicateSubmission("message id already used by this sender")
        src = self._account(sender[0])
        price = 0
        if src.kind == "business":
            price = self.config.prices.price(first.cls, in_window)
            if billable(first.cls):
                bill = self._billing.setdefault(business, {})
                bill[(first.cls, in_window)] = bill.get((first.cls, in_window), 0) + 1
            if first.cls is MessageClass.TEMPLATE:
                chat.template_times = [
                    t for t in chat.template_times if now - t < self.config.window_seconds
                ] + [now]
            chat.counts["business"] = chat.counts.get("business", 0) + 1
        else:
            if opens_window(first.cls):
                chat.last_customer_message = now
            chat.counts["customer"] = chat.counts.get("customer", 0) + 1
        self._chats[(business, customer)] = chat
        self._seen_ids.add((sender[0], first.message_id))
        for env, raw in zip(envs, envelopes, strict=True):
            seq = self._next_seq
            self._next_seq += 1
            tag = relay_tag(self._frank_key, env, now)
            stored = Delivery(raw, now, tag, seq).to_bytes()
            self._mailboxes[env.dest][seq] = stored
            self.recorder("store:mailbox", stored)
        self._share(business, customer, chat, now)
        return Receipt(first.message_id, now, len(envs), price)

    def fetch(self, device: tuple[bytes, int]) -> list[bytes]:
        """Every delivery waiting for ``device``, oldest first (kept until acknowledged)."""
        box = self._mailboxes.get(device)
        if box is None:
            raise UnknownAccount("unknown device")
        return list(box.values())

    def ack(self, device: tuple[bytes, int], seqs: list[int]) -> None:
        box = self._mailboxes.get(device)
        if box is None:
            raise UnknownAccount("unknown device")
        for seq in seqs:
            box.pop(seq, None)

    def pending(self) -> int:
        return sum(len(b) for b in self._mailboxes.values())

    # -- customer controls -----------------------------------------------------------------

    def _control(self, op: int, customer: bytes, business: bytes, on: bool) -> ChatState:
        self.recorder(
            "recv:control", encode_map({0: 1, 1: op, 2: customer, 3: business, 4: int(on)})
        )
        if self._account(customer).kind != "customer" or self._account(business).kind != "business":
            raise NotAllowed("controls are a customer's, over a business")
        chat = self._chats.setdefault((business, customer), ChatState())
        return chat

    def block(self, customer: bytes, business: bytes, on: bool = True) -> None:
        chat = self._control(1, customer, business, on)
        chat.blocked = on
        self._share(business, customer, chat, self.clock())

    def limit(self, customer: bytes, business: bytes, on: bool = True) -> None:
        chat = self._control(2, customer, business, on)
        chat.limited = on
        self._share(business, customer, chat, self.clock())

    def opt_in(self, customer: bytes, business: bytes, on: bool = True) -> None:
        chat = self._control(3, customer, business, on)
        chat.opted_in = on
        self._share(business, customer, chat, self.clock())

    def report(
        self, reporter: bytes, report: bytes, block: bool = True
    ) -> tuple[VerifiedMessage, ...]:
        """Verify a spam report (every revealed message must verify) and record it."""
        self.recorder("recv:report", report)
        try:
            parsed = Report.from_bytes(report)
            if parsed.reporter != reporter:
                raise ReportRejected("report signed for another customer")
            chat = self._control(4, reporter, parsed.business, block)
            if len(parsed.items) > MAX_REPORTED:
                raise ReportRejected("too many reported messages")
            verified = tuple(
                verify_item(self._frank_key, item, reporter, parsed.business)
                for item in parsed.items
            )
            if len({v.message_id for v in verified}) != len(verified):
                raise ReportRejected("a message reported twice")
        except E2EError as exc:
            raise self._refuse(exc) from None
        chat.spam_reports += 1
        if block:
            chat.blocked = True
        self.reports.append((reporter, parsed.business, verified))
        self.recorder("store:report", report)
        self._share(parsed.business, reporter, chat, self.clock())
        return verified

    def report_class(self, reporter: bytes, item: bytes) -> ClassCheck:
        """Verify a customer's report that one message's content does not fit its declared
        class (:func:`~e2e.platform.franking.verify_class_report`: the relay's own franking
        tag and the commitment prove what the business declared for this text, and the
        business's registered templates confirm the mismatch); penalize the business: a bill
        line at the full price of the class it should have declared, once per message."""
        self.recorder("recv:class-report", item)
        try:
            parsed = ReportItem.from_bytes(item)
            delivery = Delivery.from_bytes(parsed.delivery)
            business = delivery.open_envelope().from_account
            self._control(5, reporter, business, False)
            verified, verdict = verify_class_report(
                self._frank_key, parsed, reporter, business, self.templates(business)
            )
            if (business, verified.message_id) in self._class_reported:
                raise ReportRejected("message already reported for its class")
        except E2EError as exc:
            raise self._refuse(exc) from None
        self._class_reported.add((business, verified.message_id))
        pen = self._penalties.setdefault(business, {})
        pen[(verdict.declared, verdict.content)] = (
            pen.get((verdict.declared, verdict.content), 0) + 1
        )
        self.recorder("store:class-report", item)
        return verdict

    # -- billing and sharing ---------------------------------------------------------------

    def bill(self, business: bytes) -> Bill:
        prices: PriceTable = self.config.prices
        lines = [
            BillLine(PriceTable.line(cls, inw), count, prices.price(cls, inw))
            for (cls, inw), count in sorted(self._billing.get(business, {}).items())
        ]
        for (declared, content), count in sorted(self._penalties.get(business, {}).items()):
            item = f"penalty: {content.name.lower()} declared as {declared.name.lower()}"
            lines.append(BillLine(item, count, prices.price(content, False)))
        return Bill(business, tuple(lines))

    def window_open(self, business: bytes, customer: bytes) -> bool:
        chat = self._chats.get((business, customer))
        return chat is not None and chat.window_open(self.clock(), self.config)

    def _share(self, business: bytes, customer: bytes, chat: ChatState, now: int) -> None:
        data = ChatView.of(business, customer, chat, now, self.config).to_bytes()
        self.recorder("store:chat", data)
        if self.ad_service is not None:
            self.ad_service.receive(data)

    def stored_bytes(self) -> list[bytes]:
        """Everything the relay holds right now, serialized (for scanning)."""
        out: list[bytes] = []
        for name, acct in self._accounts.items():
            out.append(name + acct.identity)
            out.extend(c.to_bytes() for c in acct.devices.values())
        for pool in self._bundles.values():
            out.extend(pool)
        out.extend(self._last_resort.values())
        for box in self._mailboxes.values():
            out.extend(box.values())
        now = self.clock()
        for (b, c), chat in self._chats.items():
            out.append(ChatView.of(b, c, chat, now, self.config).to_bytes())
        out.extend(sender + mid for sender, mid in self._seen_ids)
        return out
