"""Group commit in the relay stores: requests committed together stay independent (a refused
one leaves no trace, the others commit), and on PostgreSQL a request whose chat is held by
another transaction waits for it without holding up the rest."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from e2e.errors import DecodeError, MailboxFull, StoreError, Unauthenticated
from e2e.relay.backends import open_store
from e2e.relay.sqlite import SqliteRelayStore
from e2e.relay.store import Quota, RelayStore, Tx


def _put(key: str) -> Callable[[Tx], str]:
    def step(tx: Tx) -> str:
        tx.execute("INSERT INTO relay_meta (key, value) VALUES (?, ?)", (key, 1))
        return key

    return step


def _refused(tx: Tx) -> None:
    tx.execute("INSERT INTO relay_meta (key, value) VALUES (?, ?)", ("refused", 1))
    raise DecodeError("refused after writing")


def _keys(store: RelayStore) -> set[str]:
    rows = store.read(lambda tx: tx.fetchall("SELECT key FROM relay_meta"))
    return {str(r[0]) for r in rows}


def _group(store: RelayStore) -> None:
    jobs: list[Callable[[Tx], Any]] = [_put(f"k{i}") for i in range(40)]
    jobs.insert(17, _refused)
    with ThreadPoolExecutor(max_workers=16) as pool:  # many at once, so they share groups
        futures = [pool.submit(store.run, job) for job in jobs]
        outcomes = []
        for fut in futures:
            try:
                outcomes.append(fut.result(timeout=60))
            except DecodeError:
                outcomes.append("refused")
    assert outcomes == [f"k{i}" for i in range(17)] + ["refused"] + [f"k{i}" for i in range(17, 40)]
    keys = _keys(store)
    assert {f"k{i}" for i in range(40)} <= keys
    assert "refused" not in keys


@pytest.mark.parametrize("relay_db", ["sqlite", pytest.param("pg", marks=pytest.mark.pg)],
                         indirect=True)  # fmt: skip
def test_a_refused_request_in_a_group_leaves_no_trace(relay_db: str, tmp_path: Path) -> None:
    store = open_store(relay_db)
    try:
        _group(store)
    finally:
        store.close()


@pytest.mark.pg
def test_a_busy_chat_waits_without_holding_up_others(pg_db: str) -> None:
    store = open_store(pg_db)
    other = psycopg.connect(pg_db)
    try:
        digest = hashlib.sha256(b"biz" + b"\x00" + b"cust").digest()
        other.execute(
            "SELECT pg_advisory_xact_lock(%s)", (int.from_bytes(digest[:8], "big", signed=True),)
        )  # held by another transaction (another relay process) until it ends

        def on_chat(tx: Tx) -> str:
            tx.lock_chat(b"biz", b"cust")
            tx.execute("INSERT INTO relay_meta (key, value) VALUES (?, ?)", ("chat", 1))
            return "chat"

        done = threading.Event()
        result: list[str] = []

        def send() -> None:
            result.append(store.run(on_chat))
            done.set()

        sender = threading.Thread(target=send)
        sender.start()
        # Others keep being served while that chat is held (no deadlock, no stall)...
        with ThreadPoolExecutor(max_workers=1) as pool:
            for i in range(5):
                assert pool.submit(store.run, _put(f"free{i}")).result(timeout=10) == f"free{i}"
        # ...and the chat's request cannot have run: its lock is still taken.
        assert not done.is_set()
        assert "chat" not in _keys(store)
        other.rollback()  # the other transaction ends
        sender.join(timeout=30)
        assert result == ["chat"]
        assert {"chat", "free0", "free4"} <= _keys(store)
    finally:
        other.close()
        store.close()


@pytest.mark.parametrize("relay_db", ["sqlite", pytest.param("pg", marks=pytest.mark.pg)],
                         indirect=True)  # fmt: skip
def test_held_writes_are_read_back_and_fail_their_request(relay_db: str) -> None:
    """A write whose outcome is not needed (``Tx.write``; held and sent later on PostgreSQL)
    is seen by the request's next statement, and if it fails, its request fails and leaves no
    trace, while the requests around it commit."""
    store = open_store(relay_db)

    def read_back(tx: Tx) -> int:
        tx.write("INSERT INTO relay_meta (key, value) VALUES (?, ?)", ("held", 7))
        row = tx.fetchone("SELECT value FROM relay_meta WHERE key = ?", ("held",))
        assert row is not None
        return int(row[0])

    def bad_write(tx: Tx) -> str:
        tx.execute("INSERT INTO relay_meta (key, value) VALUES (?, ?)", ("before-bad", 1))
        tx.write("INSERT INTO relay_meta (key, value) VALUES (?, ?)", ("bad", None))  # NOT NULL
        return "answered"  # the failure comes after the request's own code has returned

    try:
        assert store.run(read_back) == 7
        jobs: list[Callable[[Tx], Any]] = [_put("a"), bad_write, _put("b")]
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = [pool.submit(store.run, job) for job in jobs]
            assert futures[0].result(timeout=30) == "a"
            with pytest.raises(Exception) as refused:
                futures[1].result(timeout=30)
            assert futures[2].result(timeout=30) == "b"
        assert isinstance(refused.value, StoreError)
        keys = _keys(store)
        assert {"held", "a", "b"} <= keys
        assert not {"before-bad", "bad"} & keys
    finally:
        store.close()


@pytest.mark.parametrize("relay_db", ["sqlite", pytest.param("pg", marks=pytest.mark.pg)],
                         indirect=True)  # fmt: skip
def test_a_replayed_nonce_or_a_full_mailbox_refuses_only_its_request(relay_db: str) -> None:
    """A request's nonce and a submission's mailbox quota (checked later, in the pipeline of
    the request's next statement, by PostgreSQL's writer) refuse the request as the service
    does (a replay, a full mailbox) and undo everything it wrote, before and after the
    check, while the requests grouped with it commit; whether the requests share a group or
    not, the outcome is the same. (One writer: the outcomes below are in its order; several
    writers of one process may run "a" and "full" in either order, tests/relay/
    test_relay_pg_writers.py races them.)"""
    store = open_store(relay_db, pg_writers=1)
    quota = Quota(messages=2, bytes=1 << 20, sender_messages=2, sender_bytes=1 << 20)

    def request(key: str, nonce: bytes, mail: int = 0) -> Callable[[Tx], str]:
        def step(tx: Tx) -> str:
            tx.execute("INSERT INTO relay_meta (key, value) VALUES (?, ?)", (key + "-before", 1))
            _, fresh = tx.admit(b"dev", 1, nonce, 2**40, 1000.0, 100.0, 100.0, 0)
            if not fresh:
                raise Unauthenticated("request replayed")
            if mail and not tx.reserve_mail(b"src", [(b"dst", 1, mail)], quota):
                raise MailboxFull("a recipient's mailbox is full")
            tx.write("INSERT INTO relay_meta (key, value) VALUES (?, ?)", (key, 1))
            return key

        return step

    try:
        assert store.run(request("first", b"n-first", 10)) == "first"
        jobs: list[Callable[[Tx], Any]] = [
            request("a", b"n-a", 10),  # the mailbox's second delivery: within the quota
            request("replay", b"n-first"),  # the nonce of an accepted request
            request("full", b"n-full", 10),  # a third delivery: over the quota
            request("b", b"n-b"),
        ]
        outcomes: list[str] = []
        with ThreadPoolExecutor(max_workers=4) as pool:
            for fut in [pool.submit(store.run, job) for job in jobs]:
                try:
                    outcomes.append(fut.result(timeout=60))
                except (Unauthenticated, MailboxFull) as exc:
                    outcomes.append(type(exc).__name__)
        assert outcomes == ["a", "Unauthenticated", "MailboxFull", "b"]
        keys = _keys(store)
        assert {"first", "a", "b", "first-before", "a-before", "b-before"} <= keys
        assert not {"replay", "replay-before", "full", "full-before"} & keys
        # The refused request's nonce was not recorded, nor its delivery counted.
        assert store.run(request("again", b"n-full")) == "again"
        assert store.read(lambda tx: tx.mailbox_usage(b"dst", 1)) == (2, 20)
    finally:
        store.close()


def test_a_group_waiting_for_its_turn_when_the_loop_ends_gives_it_back(tmp_path: Path) -> None:
    """SQLite: a group still waiting for the write turn when its event loop is torn down
    gives the turn back once it gets it (else the store could never write or close again)."""
    db = str(tmp_path / "relay.db")
    store, other = SqliteRelayStore(db), SqliteRelayStore(db)
    holding, release = threading.Event(), threading.Event()

    def hold_the_turn() -> None:  # another relay process, mid-transaction
        with other.transaction():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_turn)
    holder.start()
    assert holding.wait(10)

    async def main() -> None:
        asyncio.get_running_loop().create_task(store.run_async(_put("lost")))
        await asyncio.sleep(0.1)  # the group now waits for the turn; the loop ends

    threading.Timer(0.3, release.set).start()
    free = False
    try:
        asyncio.run(main())
        holder.join(10)
        pool = ThreadPoolExecutor(max_workers=1)  # the turn is free: this runs
        assert pool.submit(store.run, _put("after")).result(timeout=10) == "after"
        free = True
        pool.shutdown()
        assert "lost" not in _keys(store)
    finally:
        release.set()
        other.close()
        if free:  # else closing would wait for the turn forever: fail, do not hang
            store.close()
