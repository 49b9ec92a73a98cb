"""Prekey upkeep, business routing, receipts and the event loop staying free."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from world import Service, run, watch

from e2e.client import Client, ReceiptStatus
from e2e.errors import NotAllowed, StateError, StoreError, WindowClosed
from e2e.platform.policy import MessageClass
from e2e.relay.store import Tx
from e2e.store import MemoryStore, Store, StoreTransaction
from e2e.store.sqlite import SqliteStore


@pytest.fixture(autouse=True)
def fast_scrypt() -> Iterator[None]:
    """This module creates passphrase stores with scrypt n as low as 2^10, through the
    private hook that lowers the creation floor (SPEC.md §9.2)."""
    from e2e.store import atrest

    previous = atrest._set_scrypt_floor(2**10)
    yield
    atrest._set_scrypt_floor(previous)


def _mem() -> MemoryStore:
    return MemoryStore()


# -- prekeys ---------------------------------------------------------------------------------


def _forgetful_uploads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A relay that forgets which prekey ids it has seen (to show the test can fail): a
    re-upload of an id stores it afresh, even one already handed out."""
    real = Tx.insert_prekeys

    def insert_prekeys(self: Tx, account: bytes, device_id: int,
                       prekeys: list[tuple[int, bytes]]) -> None:  # fmt: skip
        for prekey_id, _ in prekeys:
            self.execute("DELETE FROM prekeys WHERE account = ? AND device_id = ? AND"
                         " prekey_id = ?", (account, device_id, prekey_id))  # fmt: skip
        real(self, account, device_id, prekeys)

    monkeypatch.setattr(Tx, "insert_prekeys", insert_prekeys)


def _retried_upload_then_many_first_messages(d: Path) -> dict[str, int]:
    async def go() -> dict[str, int]:
        svc = Service(d)
        (admin,) = await svc.account("acme", "business", prekeys=4)
        (taker,) = await svc.account("taker", "customer")
        fail = {"left": 1}

        def lose_answer(op: str) -> None:
            if op == "upload_prekeys" and fail["left"]:
                fail["left"] -= 1
                raise ConnectionError("answer lost after the relay stored the bundles")

        watch(admin).after = lose_answer
        # the relay's pool is drained below `low`: top up and lose the answer; customers
        # claim some of the new bundles; the retried upload names the same prekey ids
        for _ in range(4):
            await taker.transport.fetch_bundle(admin.addr)  # claimed, never used
        with pytest.raises(ConnectionError):
            await admin.upkeep(low=2, target=6)
        customers = [(await svc.account(f"c{i}", "customer"))[0] for i in range(8)]
        for c in customers[:3]:
            await c.send("acme", f"hello from {c.profile.account}")
        await admin.upkeep(low=2, target=6)
        for c in customers[3:]:
            await c.send("acme", f"hello from {c.profile.account}")
        await admin.sync()
        errors = dict(admin.errors)
        hist = {m.conversation for c in customers for m in await admin.history(c.profile.account)}
        errors["received"] = len(hist)
        await svc.aclose()
        return errors

    return run(go)


def test_retried_prekey_upload_never_causes_prekey_reuse(tmp_path: Path) -> None:
    assert _retried_upload_then_many_first_messages(tmp_path) == {"received": 8}


def test_the_retry_test_fails_on_a_relay_without_idempotent_uploads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forgetful_uploads(monkeypatch)
    out = _retried_upload_then_many_first_messages(tmp_path)
    assert out.get("PrekeyReused", 0) > 0


def test_upkeep_tops_up_when_low_and_marks_published(tmp_path: Path) -> None:
    async def go() -> None:
        svc = Service(tmp_path)
        (c,) = await svc.account("acme", "business", prekeys=5)
        (taker,) = await svc.account("taker", "customer")
        assert await c.transport.prekey_count() == 5
        assert await c.upkeep(low=3, target=5) == 5  # not low: nothing new
        for _ in range(3):
            await taker.transport.fetch_bundle(c.addr)
        assert await c.upkeep(low=3, target=5) == 5  # 2 left < 3: topped up to 5
        with c.store.transaction() as tx:
            published = tx.app_keys("c/pub/")
        assert len(published) == 2 * 8  # one-time X25519 + one-time KEM ids, 8 bundles
        await svc.aclose()

    run(go)


# -- routing ---------------------------------------------------------------------------------


def test_routing_assignment_reassignment_and_designated_archive(tmp_path: Path) -> None:
    async def go() -> None:
        svc = Service(tmp_path)
        c = svc.connect
        admin = await Client.create_account(_mem(), c, "acme", "business")
        agents = [await admin.add_device(_mem(), c) for _ in range(4)]  # devices 2..5
        archive = await admin.add_device(_mem(), c)  # device 6
        carol = await Client.create_account(_mem(), c, "carol", "customer")
        await admin.designate([archive.profile.device])
        await admin.assign("carol", [agents[0].profile.device])

        async def got(client: Client) -> list[bytes]:
            return [m.body for m in await client.sync() if m.cls is not MessageClass.RECEIPT]

        await carol.send("acme", "first")
        assert await got(agents[0]) == [b"first"]
        assert await got(archive) == [b"first"]
        for other in [admin, *agents[1:]]:
            assert await got(other) == []
        # only assigned (or designated) devices may answer
        with pytest.raises(NotAllowed):
            await agents[1].send("carol", "not my chat")
        await agents[0].send("carol", "agent 2 here")
        assert await got(carol) == [b"agent 2 here"]
        assert await got(archive) == [b"agent 2 here"]
        # reassign: the customer's cached route is stale, refreshed, and resent
        await admin.assign("carol", [agents[2].profile.device])
        await carol.send("acme", "second")
        assert await got(agents[2]) == [b"second"]
        assert await got(archive) == [b"second"]
        assert await got(agents[0]) == []
        await agents[2].send("carol", "agent 4 took over")
        assert await got(carol) == [b"agent 4 took over"]
        for client in [admin, *agents, archive, carol]:
            assert client.errors == {}
            await client.aclose()
        await svc.aclose()

    run(go)


# -- receipts --------------------------------------------------------------------------------


def test_receipts_are_encrypted_unbilled_and_outside_the_window(tmp_path: Path) -> None:
    async def go() -> None:
        svc = Service(tmp_path)
        (biz,) = await svc.account("acme", "business")
        (carol,) = await svc.account("carol", "customer")
        sent = await carol.send("acme", "where is my order?")
        got = await biz.sync()  # sends a delivered receipt
        assert [m.body for m in got] == [b"where is my order?"]
        await carol.sync()
        assert await carol.receipt_status(sent.message_id) == {"acme": ReceiptStatus.DELIVERED}
        await biz.mark_read("carol", [sent.message_id])
        await carol.sync()
        assert await carol.receipt_status(sent.message_id) == {"acme": ReceiptStatus.READ}
        reply = await biz.send("carol", "on its way")
        svc.clock.advance(25 * 3600)  # the window closes
        await carol.sync()  # the customer's delivered receipt: does not reopen the window
        await biz.sync()
        assert await biz.receipt_status(reply.message_id) == {"carol": ReceiptStatus.DELIVERED}
        assert not await biz.transport.window_open("carol")  # type: ignore[attr-defined]
        with pytest.raises(WindowClosed):
            await biz.send("carol", "still there?")
        await biz.mark_read("carol", [sent.message_id])  # never refused by the window
        bill = await biz.transport.bill()  # type: ignore[attr-defined]
        assert MessageClass.RECEIPT not in bill.classes and bill.total == 0
        # receipts are E2E frames like any message: the relay never sees their body
        seen = [d for _, d in svc.tap.records] + svc.db_files()
        assert all(b"where is my order?" not in d for d in seen)
        for client in (biz, carol):
            assert client.errors == {}
        await svc.aclose()

    run(go)


# -- the event loop stays free --------------------------------------------------------------


class LoopGuard:
    """A store wrapper that fails if a transaction runs on the event loop's thread."""

    def __init__(self, inner: Store, loop_thread: int) -> None:
        self.inner = inner
        self.loop_thread = loop_thread
        self.transactions = 0

    def transaction(self) -> AbstractContextManager[StoreTransaction]:
        if threading.get_ident() == self.loop_thread:
            raise AssertionError("store transaction on the event loop thread")
        self.transactions += 1
        return self.inner.transaction()

    def close(self) -> None:
        if threading.get_ident() == self.loop_thread:
            raise AssertionError("store close on the event loop thread")
        self.inner.close()


def test_store_work_and_scrypt_never_run_on_the_event_loop(tmp_path: Path) -> None:
    async def go() -> None:
        me = threading.get_ident()
        svc = Service(tmp_path)
        opened: list[int] = []

        def open_with_passphrase(name: str) -> LoopGuard:
            opened.append(threading.get_ident())
            store = SqliteStore(tmp_path / f"{name}.db", passphrase="pw", scrypt_n=2**12)
            return LoopGuard(store, me)

        a = await Client.create_account(
            lambda: open_with_passphrase("a"), svc.connect, "acme", "business"
        )
        b = await Client.create_account(
            lambda: open_with_passphrase("b"), svc.connect, "carol", "customer"
        )
        for i in range(5):
            await b.send("acme", f"m{i}")
            await a.sync()
            await a.send("carol", f"r{i}")
            await b.sync()
        assert me not in opened and len(opened) == 2
        assert isinstance(a.store, LoopGuard) and a.store.transactions > 20
        await a.aclose()
        await b.aclose()
        await svc.aclose()

    run(go)


def test_a_store_of_another_device_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        svc = Service(tmp_path)
        store = MemoryStore()
        c = await Client.create_account(store, svc.connect, "acme", "business")
        with pytest.raises(Exception) as info:
            await Client.create_account(store, svc.connect, "other", "business")
        assert "already belongs" in str(info.value) or isinstance(info.value, StoreError)
        await c.aclose()
        await svc.aclose()

    run(go)


def test_adding_a_device_on_a_store_of_another_device_spends_nothing(tmp_path: Path) -> None:
    """The store is checked before the admin certifies a device: the refusal spends no
    device id, so the next device added is device 2."""

    async def go() -> None:
        svc = Service(tmp_path)
        taken = MemoryStore()
        admin = await Client.create_account(taken, svc.connect, "acme", "business")
        with pytest.raises(StateError, match="already belongs"):
            await admin.add_device(taken, svc.connect)
        second = await admin.add_device(MemoryStore(), svc.connect)
        assert second.profile.device == 2
        await second.aclose()
        await admin.aclose()
        await svc.aclose()

    run(go)


def test_steady_state_cost_does_not_grow_with_unassigned_agents(tmp_path: Path) -> None:
    """Counted, not timed: a steady-state customer message makes the same relay calls and
    the same number of copies whether the business has 2 or 30 agents."""

    async def go(agents: int) -> tuple[list[str], int, list[str], int]:
        svc = Service(tmp_path / str(agents))
        (admin,) = await svc.account("acme", "business", prekeys=1)
        devs = [await svc.add_device(admin, prekeys=1) for _ in range(agents)]
        (carol,) = await svc.account("carol", "customer", auto_receipts=False)
        await admin.designate([1])
        await admin.assign("carol", [devs[-1].profile.device])
        calls = watch(carol).calls
        before = svc.pending()
        await carol.send("acme", "first")
        first_calls, first_copies = list(calls), svc.pending() - before
        calls.clear()
        before = svc.pending()
        await carol.send("acme", "steady")
        steady_calls, steady_copies = list(calls), svc.pending() - before
        await svc.aclose()
        return first_calls, first_copies, steady_calls, steady_copies

    (tmp_path / "2").mkdir()
    (tmp_path / "30").mkdir()
    small, large = run(lambda: go(2)), run(lambda: go(30))
    assert small == large
    first_calls, first_copies, steady_calls, steady_copies = small
    assert steady_calls == ["submit"] and steady_copies == 2  # the agent and the archive
    assert first_calls.count("fetch_bundle") == 2 and first_copies == 2


def test_a_send_the_relay_never_got_goes_first_on_the_next_send(tmp_path: Path) -> None:
    async def go() -> None:
        svc = Service(tmp_path)
        (biz,) = await svc.account("acme", "business")
        (carol,) = await svc.account("carol", "customer")
        real = carol.transport.submit

        async def down(envelopes: list[bytes]):  # type: ignore[no-untyped-def]
            raise ConnectionError("relay unreachable")

        carol.transport.submit = down  # type: ignore[method-assign]
        with pytest.raises(ConnectionError):
            await carol.send("acme", "first, while the relay is down")
        assert [o.body for o in await carol.pending()] == [b"first, while the relay is down"]
        carol.transport.submit = real  # type: ignore[method-assign]
        await carol.send("acme", "second")
        assert await carol.pending() == []
        got = [m.body for m in await biz.sync()]
        assert got == [b"first, while the relay is down", b"second"]
        assert [m.body for m in await carol.history("acme")] == got
        await svc.aclose()

    run(go)
