"""The relay's messaging tiers and quality (SPEC.md §17.3): the per-business limit on new
customer conversations per 24 h, raised by volume and lowered by blocks and spam reports,
enforced from metadata and shown to the business.

A mixin of :class:`~e2e.relay.service.RelayService`; everything runs in the request's
transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from e2e.errors import NotAllowed, TierLimitReached
from e2e.platform.policy import MessageClass, PolicyConfig
from e2e.platform.tiers import DAY, WEEK, TierState, next_level, quality_of
from e2e.platform.wire import MAX_NOTICES, NoticeQuery, Notices, TierInfo, TierQuery
from e2e.relay.store import BUSINESS, Caller, Tx, account_of

__all__ = ["QualityHandlers", "BLOCK", "SPAM_REPORT"]

#: Kinds of negative events.
BLOCK: Final = 1
SPAM_REPORT: Final = 2


class QualityHandlers:
    """The tier gate on business-started conversations, negative events, the tier query."""

    config: PolicyConfig
    clock: Callable[[], int]

    def tier_state(self, tx: Tx, business: bytes, now: int) -> TierState:
        """The business's tier now; its level is evaluated again (and stored) at most once a
        day (:func:`~e2e.platform.tiers.next_level`)."""
        cfg = self.config.tiers
        negatives = tx.count_quality_events(business, now - WEEK)
        week = tx.count_initiations(business, now - WEEK)
        quality = quality_of(negatives, week, cfg)
        held = tx.messaging_tier(business)
        level = 0 if held is None else held[0]
        if held is None or now - held[1] >= DAY:
            level = next_level(level, week, quality, cfg)
            tx.put_messaging_tier(business, level, now)
        used = tx.count_initiations(business, now - DAY)
        return TierState(level, cfg.limit(level), used, quality, negatives, week)

    def tier_gate(self, tx: Tx, business: bytes, customer: bytes, cls: MessageClass,
                  in_window: bool, now: int, record: bool) -> None:  # fmt: skip
        """A template or marketing message outside the window starts a conversation: refused
        with :class:`~e2e.errors.TierLimitReached` if the business already started its
        level's limit of them with other customers in the last 24 h; recorded if ``record``
        (a submission, not a precheck)."""
        if in_window or cls not in (MessageClass.TEMPLATE, MessageClass.MARKETING):
            return
        last = tx.initiated_at(business, customer)
        if last is None or now - last >= DAY:
            state = self.tier_state(tx, business, now)
            if state.limit is not None and state.used >= state.limit:
                raise TierLimitReached(
                    f"messaging tier {state.level}: {state.limit} new customers per 24 h"
                )
        if record:
            tx.put_initiation(business, customer, now)

    def negative(self, tx: Tx, business: bytes, customer: bytes, kind: int, now: int) -> None:
        """Record a block or spam report against ``business`` (its quality, §17.3)."""
        tx.insert_quality_event(business, customer, kind, now)

    def business_notices(self, tx: Tx, caller: Caller, req: NoticeQuery) -> Notices:
        """(Business) what its customers did about it after position ``req.after``: blocks,
        limits and opt-ins turned on or off, spam reports (SPEC §17.2), kept 7 days."""
        if account_of(tx, caller[0]).kind != BUSINESS:
            raise NotAllowed("only businesses have notices")
        rows = tx.notices_after(caller[0], req.after, MAX_NOTICES)
        return Notices(tuple(r[0] for r in rows), tuple(r[1] for r in rows),
                       tuple(r[2] for r in rows), tuple(r[3] for r in rows),
                       tuple(r[4] for r in rows))  # fmt: skip

    def business_tier(self, tx: Tx, caller: Caller, req: TierQuery) -> TierInfo:
        """(Business) the caller's messaging tier and quality."""
        if account_of(tx, caller[0]).kind != BUSINESS:
            raise NotAllowed("only businesses have messaging tiers")
        s = self.tier_state(tx, caller[0], self.clock())
        return TierInfo(s.level, 0 if s.limit is None else s.limit, s.used, int(s.quality),
                        s.negatives, s.started_week)  # fmt: skip
