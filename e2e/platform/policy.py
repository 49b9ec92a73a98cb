"""Relay policy as pure rules (SPEC.md §10.3, §10.2): message classes, the price table, the
per-chat policy state and the class check devices and the relay both run.

Every refused send raises a subclass of :class:`~e2e.errors.PolicyError` naming the reason
(the refusals live in :mod:`e2e.errors`); the relay stores nothing for a refused batch.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, Protocol

from e2e.errors import (
    Blocked,
    DecodeError,
    Limited,
    NoPriorContact,
    NotAllowed,
    NotOptedIn,
    WindowClosed,
)
from e2e.platform.tiers import TierConfig

__all__ = [
    "MessageClass",
    "parse_class",
    "opens_window",
    "billable",
    "WINDOW_SECONDS",
    "RECEIPT_SLACK",
    "PriceTable",
    "PolicyConfig",
    "Tier",
    "billed_price",
    "ChatState",
    "Template",
    "ContentRule",
    "ClassCheck",
    "check_class",
]

#: A customer message opens (or resets) a service window of this many seconds.
WINDOW_SECONDS: Final = 24 * 3600
#: Receipts a party may send in a chat beyond two per message it received there.
RECEIPT_SLACK: Final = 4


class MessageClass(IntEnum):
    """The message class the relay's policy and billing act on (envelope key 1)."""

    SERVICE = 1
    TEMPLATE = 2
    MARKETING = 3
    #: Delivered/read receipts: never billed, never open or reset the 24 h window, never
    #: refused by it (see :func:`opens_window`, :func:`billable`).
    RECEIPT = 4


def parse_class(value: int) -> MessageClass:
    """The message class numbered ``value`` (:class:`~e2e.errors.DecodeError` if none is)."""
    try:
        return MessageClass(value)
    except ValueError:
        raise DecodeError("unknown message class") from None


def opens_window(cls: MessageClass) -> bool:
    """True if a customer's message of class ``cls`` opens (or resets) the 24 h window:
    every class but :attr:`MessageClass.RECEIPT`."""
    return cls is not MessageClass.RECEIPT


def billable(cls: MessageClass) -> bool:
    """True if a business message of class ``cls`` is a line on the bill (receipts are not)."""
    return cls is not MessageClass.RECEIPT


# -- the class a message's content has (a pure rule, run by devices and by the relay) --------


class ContentRule(Protocol):
    """What a catalogue template's content must be (SPEC §17.1; implemented by
    :class:`~e2e.platform.templates.TemplateSpec`)."""

    def check(self, body: bytes) -> str:
        """ "" if ``body`` is this template's content, else the reason it is not."""
        ...


@dataclass(frozen=True, slots=True)
class Template:
    """A business's registered template: its id, the class it is billed as (TEMPLATE or
    MARKETING) and the SHA-256 of its text. Registered with the platform, which approves the
    class, and fetched by devices like the directory. A catalogue template (SPEC §17.1) also
    has its ``spec``: its id is then its reference and its content is checked against the
    spec's text and parameter types instead of the hash."""

    template_id: bytes
    cls: MessageClass
    text_hash: bytes
    spec: ContentRule | None = None

    @classmethod
    def of(cls, template_id: bytes, klass: MessageClass, text: bytes) -> Template:
        return cls(template_id, klass, hashlib.sha256(text).digest())


@dataclass(frozen=True, slots=True)
class ClassCheck:
    """The verdict of :func:`check_class`: ``content`` is the class the content has; ``ok`` is
    False if the message declared a cheaper class than that (``underdeclared``) or named a
    template that does not fit."""

    declared: MessageClass
    content: MessageClass
    ok: bool
    reason: str = ""

    @property
    def underdeclared(self) -> bool:
        return self.content > self.declared


def check_class(
    declared: MessageClass,
    template_id: bytes | None,
    body: bytes,
    templates: Mapping[bytes, Template],
    classify: Callable[[bytes], MessageClass | None] | None = None,
) -> ClassCheck:
    """The class a business message's content has, against the one it declared.

    ``templates`` are the sending business's registered templates by id; ``classify`` is an
    optional application classifier for free text (None: no opinion). The content's class is

    * with a template id: that template's class; the id must be registered, its text must be
      ``body`` and its class the declared one (else not ok);
    * without: the class of a registered template whose text is ``body`` (a template sent as
      free text), else the classifier's answer, else SERVICE.

    Not ok if the content's class is dearer than the declared one (the enum is ordered by
    price: SERVICE < TEMPLATE < MARKETING); declaring a dearer class than needed is allowed.
    A pure function of its arguments: the device runs it on what it decrypted, the relay on
    what a report revealed and its franking verified, and both reach the same verdict.
    """
    digest = hashlib.sha256(body).digest()
    if template_id is not None:
        found = templates.get(template_id)
        if found is None:
            return ClassCheck(declared, declared, False, "unknown template id")
        if found.spec is not None:
            why = found.spec.check(body)
            if why:
                return ClassCheck(declared, found.cls, False, why)
        elif not hmac.compare_digest(found.text_hash, digest):
            return ClassCheck(declared, found.cls, False, "text is not the template's")
        if found.cls is not declared:
            return ClassCheck(declared, found.cls, False, "template registered as another class")
        return ClassCheck(declared, found.cls, True)
    content = MessageClass.SERVICE
    for t in templates.values():
        if hmac.compare_digest(t.text_hash, digest) and t.cls > content:
            content = t.cls
    if content is MessageClass.SERVICE and classify is not None:
        guess = classify(body)
        if guess is not None:
            content = MessageClass(guess)
    if content > declared:
        return ClassCheck(declared, content, False, f"{content.name.lower()} content declared "
                          f"as {declared.name.lower()}")  # fmt: skip
    return ClassCheck(declared, content, True)


# -- configuration and state -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceTable:
    """What the relay bills a business per message (one logical message, any number of
    device copies), in integer units of the platform's currency."""

    service: int = 0
    template: int = 40
    template_in_window: int = 0
    marketing: int = 80
    #: Outside-window prices of catalogue templates by category (SPEC §17.1): a utility or
    #: authentication template is a TEMPLATE message, a marketing one a MARKETING message
    #: (priced ``marketing``); in the window a template costs ``template_in_window``.
    utility: int = 30
    authentication: int = 35

    def price(self, cls: MessageClass, in_window: bool) -> int:
        if cls is MessageClass.SERVICE:
            return self.service
        if cls is MessageClass.RECEIPT:
            return 0
        if cls is MessageClass.TEMPLATE:
            return self.template_in_window if in_window else self.template
        return self.marketing

    def category_price(self, category: int, in_window: bool) -> int:
        """The price of a catalogue template of ``category`` (1 utility, 2 authentication,
        3 marketing; :class:`~e2e.platform.templates.Category`)."""
        if category == 3:
            return self.marketing
        if in_window:
            return self.template_in_window
        return self.authentication if category == 2 else self.utility

    @staticmethod
    def line(cls: MessageClass, in_window: bool) -> str:
        if cls is MessageClass.TEMPLATE:
            return "template (in window)" if in_window else "template (outside window)"
        return cls.name.lower()


class Tier(IntEnum):
    """A business's billing tier: small businesses on the free tier are never charged; API-tier
    businesses pay the price table (so only for what falls outside the 24 h window)."""

    FREE = 0
    API = 1


def billed_price(prices: PriceTable, tier: Tier, cls: MessageClass, in_window: bool) -> int:
    """What one accepted business message costs its sender on ``tier``."""
    return 0 if tier is Tier.FREE else prices.price(cls, in_window)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    prices: PriceTable = field(default_factory=PriceTable)
    window_seconds: int = WINDOW_SECONDS
    #: Templates per rolling window a limited business may still send.
    limited_templates: int = 2
    #: Messaging tiers and quality (SPEC §17.3).
    tiers: TierConfig = field(default_factory=TierConfig)


@dataclass(slots=True)
class ChatState:
    """What the relay keeps per (business, customer) chat: metadata only.

    ``counts`` holds the messages each side sent (``"customer"``, ``"business"``, receipts
    included) and, of those, its receipts (``"customer_receipts"``, ``"business_receipts"``).
    """

    last_customer_message: int | None = None
    #: The customer blocked the business.
    blocked: bool = False
    limited: bool = False
    opted_in: bool = False
    template_times: list[int] = field(default_factory=list)
    spam_reports: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    #: The business blocked the customer.
    blocked_customer: bool = False
    #: Until when an ad's entry window (SPEC §17.4) is open (None: none is).
    entry_until: int | None = None

    def check_customer_send(self) -> None:
        """Raise the refusal for any message of the customer: the business blocked it."""
        if self.blocked_customer:
            raise Blocked("the business blocked this customer")

    def check_not_blocked(self, business: bool) -> None:
        """Raise :class:`~e2e.errors.Blocked` if the other side blocked the sender (the
        business if ``business``, else the customer): the check a submission and a resend
        share (a resend is refused past a block exactly like a submission)."""
        if not business:
            self.check_customer_send()
        elif self.blocked:
            raise Blocked("the customer blocked this business")

    def check_receipt(self, side: str) -> None:
        """A receipt from ``side`` ("customer" or "business") answers messages: at most two
        (delivered, read) per message the other side sent, plus :data:`RECEIPT_SLACK`; else
        :class:`~e2e.errors.NotAllowed` (receipts are free, so they are not a channel)."""
        other = "business" if side == "customer" else "customer"
        received = self.counts.get(other, 0) - self.counts.get(f"{other}_receipts", 0)
        if self.counts.get(f"{side}_receipts", 0) >= 2 * received + RECEIPT_SLACK:
            raise NotAllowed("receipts answer messages: more than two per message received")

    def count(self, side: str, cls: MessageClass) -> None:
        """Count an accepted message of ``side``."""
        self.counts[side] = self.counts.get(side, 0) + 1
        if cls is MessageClass.RECEIPT:
            key = f"{side}_receipts"
            self.counts[key] = self.counts.get(key, 0) + 1

    def in_entry(self, now: int) -> bool:
        """An ad's entry window is open at ``now``: the business's messages are free."""
        return self.entry_until is not None and now < self.entry_until

    def window_open(self, now: int, config: PolicyConfig) -> bool:
        """The business may answer freely at ``now``: within ``config.window_seconds`` of the
        customer's last message, or in an ad's entry window."""
        last = self.last_customer_message
        return (last is not None and now - last < config.window_seconds) or self.in_entry(now)

    def check_business_send(self, cls: MessageClass, now: int, config: PolicyConfig) -> bool:
        """Raise the refusal for a business message of class ``cls``; else return in_window."""
        if self.last_customer_message is None:
            raise NoPriorContact("the customer has not written to this business")
        self.check_not_blocked(True)
        in_window = self.window_open(now, config)
        if cls is MessageClass.RECEIPT:
            return in_window  # receipts are never refused by the window
        if cls is MessageClass.SERVICE:
            if not in_window:
                raise WindowClosed("free-form messages only within 24 h of the customer's last")
        elif cls is MessageClass.TEMPLATE:
            if self.limited:
                recent = [t for t in self.template_times if now - t < config.window_seconds]
                if len(recent) >= config.limited_templates:
                    raise Limited("the customer limited this business: template quota used")
        else:
            if self.limited:
                raise Limited("the customer limited this business: no marketing")
            if not self.opted_in:
                raise NotOptedIn("the customer did not opt in to marketing")
        return in_window
