"""Races between workers of one PostgreSQL store (issue: the replay guard of an initial
message without a one-time prekey was SELECT-then-UPSERT, so two workers both passed).

The attack is run for real: worker 1 handles the initial message and holds its transaction
open; worker 2 handles the same message (under another sender address, so no session lock
serializes them) while worker 1 has not committed. Before the fix worker 2 set up a second
session; now its claim of the replay-guard row waits for worker 1 and is refused.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from e2e import PQ
from e2e.errors import DecryptError, PrekeyReused
from e2e.store import Address
from tests.store.test_store_conformance import ALICE, BOB, get_bundle, setup_device

pytestmark = pytest.mark.pg

MALLORY = Address("mallory", 2)


def _waiting_backends(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_concurrent_workers_set_up_one_session(backend: Any) -> None:
    a = backend.open(name="a")
    setup_device(a, PQ)
    setup_device(backend.open(name="b"), PQ, one_time=0)  # no one-time prekey
    with a.transaction() as tx:
        tx.initiate(BOB, get_bundle(backend.open(name="b"), PQ), allowed_suites=(PQ,))
    with a.transaction() as tx:
        first = tx.encrypt(BOB, b"one session only")
    w1, w2 = backend.open(name="b"), backend.open(name="b")

    decrypted = threading.Event()
    release = threading.Event()
    outcome: dict[str, object] = {}

    def worker1() -> None:
        try:
            with w1.transaction() as tx:
                outcome["w1"] = tx.decrypt(ALICE, first, allowed_suites=(PQ,))
                decrypted.set()
                assert release.wait(30)
        except BaseException as exc:  # pragma: no cover - reported below
            outcome["w1"] = exc
            decrypted.set()

    def worker2() -> None:
        try:
            with w2.transaction() as tx:
                outcome["w2"] = tx.decrypt(MALLORY, first, allowed_suites=(PQ,))
        except BaseException as exc:
            outcome["w2"] = exc

    t1 = threading.Thread(target=worker1)
    t1.start()
    assert decrypted.wait(30)
    t2 = threading.Thread(target=worker2)
    t2.start()
    # let worker 2 run while worker 1 is still uncommitted: it either finishes (the old,
    # racy guard) or blocks on worker 1's claim (bounded wait, no timing assertion)
    deadline = time.monotonic() + 10
    while t2.is_alive() and _waiting_backends(backend.dsn) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    release.set()
    t1.join(30)
    t2.join(30)
    assert outcome["w1"] == b"one session only"
    assert isinstance(outcome["w2"], PrekeyReused), outcome["w2"]
    with w1.transaction() as tx:
        assert tx.load_session(ALICE) is not None
        assert tx.load_session(MALLORY) is None
        assert tx.get_identity(MALLORY) is None
    # and the loser's retry, now serialized, is refused the same way
    with pytest.raises((PrekeyReused, DecryptError)), w2.transaction() as tx:
        tx.decrypt(MALLORY, first, allowed_suites=(PQ,))
