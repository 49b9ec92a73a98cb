"""The placement map (SPEC §10.14): account → slot by a keyed hash checked against libsodium's
BLAKE2b, an even spread, adding a cluster moves nothing until slots are moved and then only
the planned ~1/(n+1) of accounts, and a map can only be replaced by a newer, consistent one."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest
from nacl.encoding import RawEncoder
from nacl.hash import blake2b

from e2e.errors import DecodeError
from e2e.relay.placement import (
    SLOTS,
    PlacementMap,
    add_cluster,
    begin_move,
    check_newer,
    cluster_of,
    finish_move,
    initial,
    plan_rebalance,
    slot_of,
)

SEED = bytes(range(16))
ACCOUNTS = [os.urandom(12) for _ in range(20_000)]


def test_slot_is_keyed_blake2b_as_libsodium_computes_it() -> None:
    for account in (b"", b"alice", b"\x00" * 64, *ACCOUNTS[:50]):
        ref = blake2b(account, digest_size=8, key=SEED, encoder=RawEncoder)
        assert slot_of(SEED, account) == int.from_bytes(ref, "big") % SLOTS
    # The key matters: another seed places accounts elsewhere.
    other = bytes(16)
    assert sum(slot_of(SEED, a) != slot_of(other, a) for a in ACCOUNTS[:200]) > 190


def test_accounts_spread_evenly() -> None:
    pmap = initial(["a", "b", "c", "d"], SEED)
    share = Counter(cluster_of(pmap, a) for a in ACCOUNTS)
    assert set(share) == {"a", "b", "c", "d"}
    for n in share.values():
        assert abs(n - len(ACCOUNTS) / 4) < 0.05 * len(ACCOUNTS) / 4


def test_adding_a_cluster_moves_only_planned_slots_to_it() -> None:
    v1 = initial(["a", "b", "c", "d"], SEED)
    v2 = add_cluster(v1, "e")
    assert v2.version == 2 and v2.share()["e"] == 0
    assert all(cluster_of(v1, a) == cluster_of(v2, a) for a in ACCOUNTS)  # nothing moved yet
    moves = plan_rebalance(v2)
    assert all(dst == "e" for _, _, dst in moves)
    assert len(moves) == SLOTS // 5  # e gets its even share, 819 of 4096 slots
    v3 = check_newer(v2, begin_move(v2, [s for s, _, _ in moves]))
    moving = [a for a in ACCOUNTS if slot_of(SEED, a) in v3.moving]
    assert all(cluster_of(v3, a) == cluster_of(v1, a) for a in ACCOUNTS)  # still in place
    v4 = check_newer(v3, finish_move(v3, {s: dst for s, _, dst in moves}))
    assert not v4.moving and v4.version == 4
    changed = [a for a in ACCOUNTS if cluster_of(v1, a) != cluster_of(v4, a)]
    assert sorted(changed) == sorted(moving)
    assert all(cluster_of(v4, a) == "e" for a in changed)
    assert abs(len(changed) - len(ACCOUNTS) / 5) < 0.1 * len(ACCOUNTS) / 5
    assert max(v4.share().values()) - min(v4.share().values()) <= 1
    assert plan_rebalance(v4) == []


def test_only_a_newer_consistent_map_replaces_the_one_in_force() -> None:
    v1 = initial(["a", "b"], SEED)
    v2 = add_cluster(v1, "c")
    check_newer(v1, v2)
    with pytest.raises(DecodeError, match="not newer"):
        check_newer(v2, v1)  # an old map replayed
    with pytest.raises(DecodeError, match="not newer"):
        check_newer(v2, v2)
    reseeded = PlacementMap(3, bytes(16), v2.clusters, v2.slots)
    with pytest.raises(DecodeError, match="seed"):
        check_newer(v2, reseeded)
    # A slot reassigned without first being marked moving (its rows were never copied).
    jumped = PlacementMap(3, SEED, v2.clusters, (2, *v2.slots[1:]))
    with pytest.raises(DecodeError, match="not marked moving"):
        check_newer(v2, jumped)
    dropped = PlacementMap(3, SEED, ("a",), (0,) * SLOTS)
    with pytest.raises(DecodeError, match="drops a cluster"):
        check_newer(v1, dropped)
    with pytest.raises(ValueError, match="marked moving"):
        finish_move(v2, {0: "c"})


def test_json_round_trip_and_hostile_maps() -> None:
    v = begin_move(add_cluster(initial(["a", "b", "c"], SEED), "d"), [5, 4095])
    text = v.to_json()
    assert PlacementMap.from_json(text) == v
    assert len(text) < 64 * 1024
    assert SEED.hex() not in repr(v)
    good = json.loads(text)

    def bad(**change: object) -> str:
        return json.dumps({**good, **change})

    hostile = [
        "[]",
        "not json",
        bad(version=0),
        bad(version="1"),
        bad(seed="00"),
        bad(seed="zz" * 16),
        bad(clusters=["a", "a", "b", "c"]),
        bad(clusters=["A", "b", "c", "d"]),
        bad(clusters=[]),
        bad(slots=[[SLOTS, 9]]),  # a cluster that is not named
        bad(slots=[[SLOTS - 1, 0]]),  # a slot missing
        bad(slots=[[SLOTS, 0], [1, 0]]),  # a slot too many
        bad(slots=[[10**12, 0]]),  # a run that would expand without bound
        bad(slots=[[-1, 0], [SLOTS + 1, 0]]),
        bad(moving=[SLOTS]),
        bad(extra=1),
        " " * (2 << 20),
    ]
    for text in hostile:
        with pytest.raises(DecodeError):
            PlacementMap.from_json(text)
