"""The customer-business layer over e2e sessions: roles, envelope, relay, ad service, franking.

See SPEC.md §8. Everything here sees E2E frames only as opaque bytes, except the devices.
"""

from __future__ import annotations

from e2e.clock import ManualClock
from e2e.errors import (
    Blocked,
    DuplicateSubmission,
    EnvelopeMismatch,
    FrankingMismatch,
    Limited,
    NoPriorContact,
    NotAllowed,
    NotOptedIn,
    ReportRejected,
    StaleDeviceList,
    UnknownAccount,
    UntrustedDevice,
    WindowClosed,
)
from e2e.platform.adservice import AdService, ChatView
from e2e.platform.envelope import Delivery, Envelope, Inner, pad, unpad
from e2e.platform.franking import Report, ReportItem, VerifiedMessage
from e2e.platform.policy import MessageClass, PolicyConfig, PriceTable
from e2e.platform.relay import Bill, Receipt, Relay
from e2e.platform.roles import Account, Business, Customer, Device, Message
from e2e.relay.tap import Recorder

__all__ = [
    "AdService",
    "ChatView",
    "Delivery",
    "Envelope",
    "Inner",
    "pad",
    "unpad",
    "Report",
    "ReportItem",
    "VerifiedMessage",
    "Blocked",
    "DuplicateSubmission",
    "EnvelopeMismatch",
    "FrankingMismatch",
    "Limited",
    "MessageClass",
    "NoPriorContact",
    "NotAllowed",
    "NotOptedIn",
    "PolicyConfig",
    "PriceTable",
    "ReportRejected",
    "StaleDeviceList",
    "UnknownAccount",
    "UntrustedDevice",
    "WindowClosed",
    "Bill",
    "ManualClock",
    "Receipt",
    "Recorder",
    "Relay",
    "Account",
    "Business",
    "Customer",
    "Device",
    "Message",
]
