"""Where an account lives when the relay's records span several PostgreSQL clusters
(SPEC.md §10.14): a versioned placement map and the pure function account → cluster.

An account's **slot** is a keyed hash of its name (BLAKE2b keyed with the map's ``seed``,
reduced mod :data:`SLOTS`); the map assigns each slot to one cluster. The keyed hash means an
account name chosen by a peer cannot be aimed at a slot (names are public, the seed is the
operator's), so nobody can pile accounts onto one cluster by choosing names.

The map only ever changes by publishing a new, higher version: a router refuses a map older
than the one it holds (:func:`check_newer`). A cluster is added empty (:func:`add_cluster`:
no slot moves); slots then move one at a time: :func:`begin_move` marks them ``moving`` (their
accounts' writes are refused, retryably, while their rows are copied), :func:`finish_move`
assigns them to the new cluster. :func:`plan_rebalance` says which slots to move for an even
spread with the fewest moves.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from e2e.errors import DecodeError

__all__ = [
    "SLOTS",
    "PlacementMap",
    "slot_of",
    "cluster_of",
    "initial",
    "add_cluster",
    "plan_rebalance",
    "begin_move",
    "finish_move",
    "check_newer",
]

#: Slots of the keyed hash: the unit that moves between clusters (enough that a cluster's
#: share can be balanced to well under 1 %, few enough that a map is a few kilobytes).
SLOTS: Final = 4096
_SEED_BYTES: Final = 16
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
#: Most clusters one map names (bounds a decoded map).
MAX_CLUSTERS: Final = 256


@dataclass(frozen=True, slots=True)
class PlacementMap:
    """One version of the placement: cluster names (an index is a cluster's number), the
    cluster of each slot, and the slots being moved. Checked when made: a map that is not
    whole (a slot without a valid cluster, a bad seed) cannot exist."""

    version: int
    seed: bytes = field(repr=False)
    clusters: tuple[str, ...]
    slots: tuple[int, ...] = field(repr=False)
    moving: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not 1 <= self.version < 1 << 63:
            raise DecodeError("placement version out of range")
        if len(self.seed) != _SEED_BYTES:
            raise DecodeError("placement seed must be 16 bytes")
        if not 1 <= len(self.clusters) <= MAX_CLUSTERS:
            raise DecodeError("placement names 1 to 256 clusters")
        if len(set(self.clusters)) != len(self.clusters) or not all(
            isinstance(c, str) and _NAME.fullmatch(c) for c in self.clusters
        ):
            raise DecodeError("placement cluster names must be distinct [a-z0-9_-] names")
        if len(self.slots) != SLOTS or not all(
            type(s) is int and 0 <= s < len(self.clusters) for s in self.slots
        ):
            raise DecodeError("placement must assign every slot to a named cluster")
        if not all(type(s) is int and 0 <= s < SLOTS for s in self.moving):
            raise DecodeError("placement moving slot out of range")

    def share(self) -> dict[str, int]:
        """Slots per cluster."""
        out = dict.fromkeys(self.clusters, 0)
        for s in self.slots:
            out[self.clusters[s]] += 1
        return out

    def to_json(self) -> str:
        """The map as canonical JSON (slots run-length coded as [count, cluster] pairs)."""
        runs: list[list[int]] = []
        for s in self.slots:
            if runs and runs[-1][1] == s:
                runs[-1][0] += 1
            else:
                runs.append([1, s])
        return json.dumps(
            {
                "version": self.version,
                "seed": self.seed.hex(),
                "clusters": list(self.clusters),
                "slots": runs,
                "moving": sorted(self.moving),
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> PlacementMap:
        """Parse :meth:`to_json`'s form; :class:`~e2e.errors.DecodeError` for anything else
        (bounded: at most :data:`SLOTS` slots are expanded)."""
        if len(text) > 1 << 20:
            raise DecodeError("placement map too large")
        try:
            raw: Any = json.loads(text)
            if not isinstance(raw, dict) or set(raw) != {
                "version", "seed", "clusters", "slots", "moving",
            }:  # fmt: skip
                raise DecodeError("placement map fields")
            slots: list[int] = []
            for count, cluster in raw["slots"]:
                if type(count) is not int or not 1 <= count <= SLOTS - len(slots):
                    raise DecodeError("placement slot run out of range")
                slots.extend([cluster] * count)
            if type(raw["version"]) is not int or not isinstance(raw["clusters"], list):
                raise DecodeError("placement map fields")
            return cls(
                version=raw["version"],
                seed=bytes.fromhex(raw["seed"]),
                clusters=tuple(raw["clusters"]),
                slots=tuple(slots),
                moving=frozenset(raw["moving"]),
            )
        except DecodeError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise DecodeError(f"malformed placement map: {type(exc).__name__}") from None


def slot_of(seed: bytes, account: bytes) -> int:
    """The slot of ``account`` under ``seed``: BLAKE2b-64 keyed with the seed, mod SLOTS."""
    digest = hashlib.blake2b(account, digest_size=8, key=seed).digest()
    return int.from_bytes(digest, "big") % SLOTS


def cluster_of(pmap: PlacementMap, account: bytes) -> str:
    """The name of the cluster holding ``account``'s records under ``pmap``."""
    return pmap.clusters[pmap.slots[slot_of(pmap.seed, account)]]


def initial(clusters: Iterable[str], seed: bytes) -> PlacementMap:
    """Version 1: the slots dealt round-robin over ``clusters``."""
    names = tuple(clusters)
    return PlacementMap(1, seed, names, tuple(i % max(1, len(names)) for i in range(SLOTS)))


def add_cluster(pmap: PlacementMap, name: str) -> PlacementMap:
    """The next version with an empty cluster ``name`` added: no account moves yet."""
    return replace(pmap, version=pmap.version + 1, clusters=(*pmap.clusters, name))


def plan_rebalance(pmap: PlacementMap) -> list[tuple[int, str, str]]:
    """(slot, from, to) moves that leave every cluster within one slot of an even share,
    moving the fewest slots: the highest-numbered slots of clusters above their share go to
    clusters below theirs. Slots already moving are left alone."""
    n = len(pmap.clusters)
    target = [SLOTS // n + (1 if i < SLOTS % n else 0) for i in range(n)]
    count = [0] * n
    for s in pmap.slots:
        count[s] += 1
    spare: list[int] = []  # slots to give away
    for slot in range(SLOTS - 1, -1, -1):
        c = pmap.slots[slot]
        if count[c] > target[c] and slot not in pmap.moving:
            count[c] -= 1
            spare.append(slot)
    moves = []
    for c in range(n):
        while count[c] < target[c] and spare:
            slot = spare.pop()
            moves.append((slot, pmap.clusters[pmap.slots[slot]], pmap.clusters[c]))
            count[c] += 1
    return sorted(moves)


def begin_move(pmap: PlacementMap, slots: Iterable[int]) -> PlacementMap:
    """The next version with ``slots`` marked moving: their accounts' writes are refused
    (retryably) until :func:`finish_move` publishes their new cluster."""
    return replace(pmap, version=pmap.version + 1, moving=pmap.moving | frozenset(slots))


def finish_move(pmap: PlacementMap, moved: Mapping[int, str]) -> PlacementMap:
    """The next version with each slot of ``moved`` (all marked moving) on its new cluster."""
    if not set(moved) <= pmap.moving:
        raise ValueError("only a slot marked moving can be moved")
    index = {name: i for i, name in enumerate(pmap.clusters)}
    slots = list(pmap.slots)
    for slot, name in moved.items():
        slots[slot] = index[name]
    return replace(
        pmap, version=pmap.version + 1, slots=tuple(slots), moving=pmap.moving - set(moved)
    )


def check_newer(current: PlacementMap, candidate: PlacementMap) -> PlacementMap:
    """``candidate`` if it may replace ``current``: a higher version with the same seed that
    drops no cluster still holding slots under ``current`` and moves only slots ``current``
    marks moving; else DecodeError (an old map
    replayed would send writes to clusters that no longer own the accounts)."""
    if candidate.version <= current.version:
        raise DecodeError("placement map is not newer than the one in force")
    if candidate.seed != current.seed:
        raise DecodeError("placement seed cannot change (every account would move)")
    held = {current.clusters[s] for s in current.slots}
    if not held <= set(candidate.clusters):
        raise DecodeError("placement map drops a cluster that still holds accounts")
    for slot, (old, new) in enumerate(zip(current.slots, candidate.slots, strict=True)):
        if current.clusters[old] != candidate.clusters[new] and slot not in current.moving:
            raise DecodeError("placement map moves a slot that was not marked moving")
    return candidate
