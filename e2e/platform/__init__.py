"""What the relay service and client devices agree on (SPEC.md §10, §13): the platform's
shared formats and its pure rules. Nothing here keeps state, reaches the network or opens a
store; the relay service is :mod:`e2e.relay`, a device :mod:`e2e.client`.

* :mod:`~e2e.platform.envelope` - envelope, delivery record, inner message, padding (§10.2);
* :mod:`~e2e.platform.directory` - device certificates (§10.1); linking and recovery
  (:mod:`~e2e.platform.provisioning`, :mod:`~e2e.platform.recovery`) with the codes a
  person types (:mod:`~e2e.platform.codes`) (§10.1);
* :mod:`~e2e.platform.policy` - message classes, prices, the chat policy, the class check
  (§10.2, §10.3);
* :mod:`~e2e.platform.franking` - franking commitments and tags, spam and class reports
  (§10.4);
* :mod:`~e2e.platform.adservice` - the chat record the relay shares with the ad service
  (§10.5);
* :mod:`~e2e.platform.wire` - the relay's wire API, one module per concern (§10.7);
* :mod:`~e2e.platform.merkle`, :mod:`~e2e.platform.transparency` - the Merkle log and the
  key directory (§13.2, §13.4); :mod:`~e2e.platform.certificates` - verified businesses
  (§13.3).

Everything here sees E2E frames only as opaque bytes, except the devices' inner message.
"""

from __future__ import annotations

from e2e.platform.adservice import AdService, ChatView
from e2e.platform.envelope import Delivery, Envelope, Inner, pad, unpad
from e2e.platform.franking import Report, ReportItem, VerifiedMessage
from e2e.platform.policy import (
    ChatState,
    ClassCheck,
    MessageClass,
    PolicyConfig,
    PriceTable,
    Template,
    Tier,
    check_class,
)

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
    "ChatState",
    "ClassCheck",
    "MessageClass",
    "PolicyConfig",
    "PriceTable",
    "Template",
    "Tier",
    "check_class",
]
