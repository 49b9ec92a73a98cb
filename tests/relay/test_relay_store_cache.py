"""The relay stores' writer caches (SPEC §10.8): what one process remembers of the directory
(accounts, devices, routes) and, on SQLite, of chats is never older than its group's start,
whoever wrote the database, and a refused request leaves no trace in it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from e2e.errors import DecodeError
from e2e.platform.policy import ChatState
from e2e.relay.backends import open_store
from e2e.relay.sqlite import SqliteRelayStore
from e2e.relay.store import Account, RelayStore, Tx

BIZ, CUST = b"biz", b"cust"


def _state(**kw: object) -> ChatState:
    """A chat as the table gives it back (every count stored)."""
    counts = {"customer": 0, "business": 0, "customer_receipts": 0, "business_receipts": 0}
    return ChatState(counts=counts, **kw)  # type: ignore[arg-type]


def _chat(store: RelayStore) -> ChatState | None:
    return store.run(lambda tx: tx.chat(BIZ, CUST))


BOTH = pytest.mark.parametrize(
    "relay_db", ["sqlite", pytest.param("pg", marks=pytest.mark.pg)], indirect=True
)


@BOTH
def test_a_chat_another_process_changed_is_read_again(
    two_of: tuple[RelayStore, RelayStore],
) -> None:
    a, b = two_of
    a.run(lambda tx: tx.put_chat(BIZ, CUST, ChatState(last_customer_message=5)))
    assert _chat(a) == _state(last_customer_message=5)  # now remembered by a
    b.run(lambda tx: tx.put_chat(BIZ, CUST, ChatState(last_customer_message=5, blocked=True)))
    seen = _chat(a)
    assert seen is not None and seen.blocked


def test_a_chat_changed_outside_any_relay_is_read_again(tmp_path: Path) -> None:
    db = str(tmp_path / "relay.db")
    a = SqliteRelayStore(db)
    try:
        a.run(lambda tx: tx.put_chat(BIZ, CUST, ChatState(last_customer_message=5)))
        assert _chat(a) == _state(last_customer_message=5)
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE chats SET limited = 1")
        seen = _chat(a)
        assert seen is not None and seen.limited
    finally:
        a.close()


@BOTH
def test_routes_and_devices_another_process_changed_are_read_again(
    two_of: tuple[RelayStore, RelayStore],
) -> None:
    a, b = two_of

    def setup(tx: Tx) -> None:
        tx.insert_account(Account(BIZ, 1, 0, b"\x01" * 32))
        tx.put_device(BIZ, 1, b"cert1", b"\x02" * 32)
        tx.put_device(BIZ, 2, b"cert2", b"\x03" * 32)
        tx.set_route(BIZ, CUST, [1])

    a.run(setup)

    def look(tx: Tx) -> tuple[set[int], set[int], bytes | None, Account | None]:
        return (tx.route(BIZ, CUST), tx.device_ids(BIZ)[BIZ], tx.device_identity(BIZ, 2),
                tx.account(BIZ))  # fmt: skip

    assert a.run(look) == ({1}, {1, 2}, b"\x03" * 32, Account(BIZ, 1, 0, b"\x01" * 32))
    # Another process re-routes the chat, removes a device and re-keys the other.
    b.run(lambda tx: tx.set_route(BIZ, CUST, [2]))
    assert a.run(look)[0] == {2}
    b.run(lambda tx: tx.delete_device(BIZ, 2))
    assert a.run(look)[1:3] == ({1}, None)
    b.run(lambda tx: tx.put_device(BIZ, 1, b"cert1b", b"\x04" * 32))
    assert a.run(lambda tx: tx.device_identity(BIZ, 1)) == b"\x04" * 32
    # A chat write by the other process alone does not drop a's directory: the generation
    # row tells, so a reads what only changed.
    b.run(lambda tx: tx.put_chat(BIZ, CUST, ChatState(opted_in=True)))
    assert a.run(look)[:3] == (set(), {1}, None)  # the route went with device 2


@BOTH
def test_a_refused_request_leaves_nothing_in_the_cache(relay_db: str) -> None:
    store = open_store(relay_db)
    try:
        store.run(lambda tx: tx.put_chat(BIZ, CUST, ChatState(last_customer_message=5)))
        assert store.run(lambda tx: tx.route(BIZ, CUST)) == set()  # now remembered
        assert _chat(store) == _state(last_customer_message=5)

        def refused(tx: Tx) -> None:
            tx.put_chat(BIZ, CUST, ChatState(last_customer_message=5, blocked=True))
            tx.set_route(BIZ, CUST, [7])
            raise DecodeError("refused after writing")

        with pytest.raises(DecodeError):
            store.run(refused)
        assert _chat(store) == _state(last_customer_message=5)
        assert store.run(lambda tx: tx.route(BIZ, CUST)) == set()
    finally:
        store.close()


def test_a_cached_chat_is_not_shared_with_the_caller(tmp_path: Path) -> None:
    """Changing a chat read from the cache changes nothing until it is put."""
    store = SqliteRelayStore(str(tmp_path / "relay.db"))
    try:
        store.run(lambda tx: tx.put_chat(BIZ, CUST, ChatState(last_customer_message=5)))

        def mutate(tx: Tx) -> None:
            chat = tx.chat(BIZ, CUST)
            assert chat is not None
            chat.counts["business"] = 99
            chat.template_times.append(1)

        store.run(mutate)
        assert _chat(store) == _state(last_customer_message=5)
    finally:
        store.close()


def test_groups_on_the_event_loop_keep_requests_apart(tmp_path: Path) -> None:
    """Awaited requests form groups on the loop: a refused one leaves no trace, the others
    commit, each gets its own answer."""
    store = SqliteRelayStore(str(tmp_path / "relay.db"))

    def put(i: int) -> object:
        def step(tx: Tx) -> int:
            tx.execute("INSERT INTO relay_meta (key, value) VALUES (?, ?)", (f"k{i}", i))
            if i % 7 == 3:
                raise DecodeError("refused after writing")
            return i

        return step

    async def main() -> list[object]:
        return await asyncio.gather(
            *(store.run_async(put(i)) for i in range(150)),  # type: ignore[arg-type]
            return_exceptions=True,
        )

    try:
        out = asyncio.run(main())
        for i, got in enumerate(out):
            if i % 7 == 3:
                assert isinstance(got, DecodeError)
            else:
                assert got == i
        rows = store.read(
            lambda tx: tx.fetchall("SELECT key, value FROM relay_meta WHERE key LIKE 'k%'")
        )
        assert {str(k): v for k, v in rows} == {f"k{i}": i for i in range(150) if i % 7 != 3}
    finally:
        store.close()


@BOTH
def test_a_directory_changed_by_hand_is_read_again(relay_db: str) -> None:
    """An operator's own SQL on the directory counts too (the tables' triggers)."""
    store = open_store(relay_db)
    try:
        store.run(lambda tx: tx.insert_account(Account(BIZ, 1, 0, b"\x01" * 32)))
        assert store.run(lambda tx: tx.account(BIZ)) is not None  # now remembered
        if relay_db.endswith(".db"):
            with sqlite3.connect(relay_db) as conn:
                conn.execute("DELETE FROM accounts")
        else:
            import psycopg

            with psycopg.connect(relay_db, autocommit=True) as pg:
                pg.execute("DELETE FROM accounts")
        assert store.run(lambda tx: tx.account(BIZ)) is None
    finally:
        store.close()
