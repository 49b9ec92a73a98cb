"""Messaging tiers and quality as pure rules (SPEC.md §17.3): how many customers a business
may start conversations with per rolling 24 h, raised by volume, lowered by its customers'
blocks and spam reports. The relay applies them from metadata alone.

A business *starts* a conversation with a customer when it sends a template or marketing
message outside that customer's window (inside the window the customer started it). The
number of distinct customers it started conversations with in the last 24 h is capped by its
level's limit; a customer already counted in those 24 h is not counted again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = ["Quality", "TierConfig", "TierState", "quality_of", "next_level", "DAY", "WEEK"]

DAY: Final = 24 * 3600
WEEK: Final = 7 * DAY


class Quality(IntEnum):
    """A business's quality over the last 7 days, from its customers' blocks and reports."""

    HIGH = 0
    MEDIUM = 1
    LOW = 2


@dataclass(frozen=True, slots=True)
class TierConfig:
    """The limits per level (distinct customers a business may start conversations with per
    rolling 24 h; past the last level: no limit) and the quality thresholds."""

    limits: tuple[int, ...] = (250, 1_000, 10_000, 100_000)
    #: Negative events (blocks, spam reports) per conversation started in 7 days at which
    #: quality is MEDIUM, and LOW; fewer than ``min_negatives`` events are always HIGH.
    medium: float = 0.02
    low: float = 0.05
    min_negatives: int = 3

    def limit(self, level: int) -> int | None:
        """The level's limit (None: unlimited)."""
        return self.limits[level] if level < len(self.limits) else None


@dataclass(frozen=True, slots=True)
class TierState:
    """What the relay tells a business about its tier: its level and limit (None:
    unlimited), the customers it started conversations with in the last 24 h, its quality and
    the negative events and conversations of the last 7 days it was computed from."""

    level: int
    limit: int | None
    used: int
    quality: Quality
    negatives: int
    started_week: int


def quality_of(negatives: int, started_week: int, cfg: TierConfig) -> Quality:
    """Quality from the last 7 days' negative events and conversations started."""
    if negatives < cfg.min_negatives:
        return Quality.HIGH
    rate = negatives / max(1, started_week)
    if rate >= cfg.low:
        return Quality.LOW
    return Quality.MEDIUM if rate >= cfg.medium else Quality.HIGH


def next_level(level: int, started_week: int, quality: Quality, cfg: TierConfig) -> int:
    """The level after one evaluation: one down on LOW quality; one up when the business
    started conversations with at least half its limit in the last 7 days at HIGH or MEDIUM
    quality; else unchanged."""
    if quality is Quality.LOW:
        return max(0, level - 1)
    limit = cfg.limit(level)
    if limit is not None and started_week * 2 >= limit:
        return level + 1
    return level
