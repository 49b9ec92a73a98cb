"""Every platform entry point that takes bytes raises only E2EError subclasses on any input,
and a rejected input changes nothing: a device's receive step, and the relay service's
endpoints (which answer a typed error, never an internal one)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from world import Service, open_raw

from e2e.client import Client
from e2e.errors import E2EError
from e2e.platform import Delivery

_T = TypeVar("_T")


@dataclass
class World:
    loop: asyncio.AbstractEventLoop
    svc: Service
    shop: Client
    alice: Client
    raw: bytes  # a genuine delivery to alice, not opened yet

    def run(self, fn: Callable[[], Awaitable[_T]]) -> _T:
        async def main() -> _T:
            return await fn()

        return self.loop.run_until_complete(main())

    async def reply(self) -> bytes:
        """A new genuine delivery to alice (the previous one was accepted)."""
        await self.shop.send("alice", "a genuine reply")
        return (await self.alice.transport.fetch())[-1]

    def state(self) -> list[tuple[Any, ...]]:
        """Every record of alice's store as stored (sealed: any write changes them)."""
        with sqlite3.connect(self.svc.dir / "alice-1.db") as c:
            return c.execute("SELECT kind, id, value FROM records ORDER BY kind, id").fetchall()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    loop = asyncio.new_event_loop()

    async def setup() -> World:
        svc = Service(tmp_path_factory.mktemp("fuzz"), stores="sqlite")
        (shop,) = await svc.account("shop", "business", auto_receipts=False)
        (alice,) = await svc.account("alice", "customer", auto_receipts=False)
        await alice.send("shop", "hi")
        await shop.sync()
        w = World(loop, svc, shop, alice, b"")
        w.raw = await w.reply()
        return w

    w = loop.run_until_complete(setup())
    yield w
    loop.run_until_complete(w.svc.aclose())
    loop.close()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_device_receive_random_bytes(world: World, data: bytes) -> None:
    before = world.state()
    with pytest.raises(E2EError):
        world.run(lambda: open_raw(world.alice, data))
    assert world.state() == before


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 255), st.booleans())
def test_device_receive_mutated_delivery(world: World, pos: int, xor: int, inner: bool) -> None:
    raw = world.raw
    d = Delivery.from_bytes(raw)
    if inner:  # mutate the envelope (all of it is checked by the device)
        env = bytearray(d.envelope)
        env[pos % len(env)] ^= xor
        data = Delivery(bytes(env), d.received_at, d.tag, d.seq).to_bytes()
    else:
        buf = bytearray(raw)
        buf[pos % len(buf)] ^= xor
        data = bytes(buf)
    before = world.state()
    try:
        msg = world.run(lambda: open_raw(world.alice, data))
    except E2EError:
        assert world.state() == before
        return
    # Only the relay's own fields (time, tag, sequence number) are not end-to-end checked.
    assert not inner and msg.body == b"a genuine reply"
    world.raw = world.run(world.reply)  # the next examples mutate a message not yet seen


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=3), st.binary(max_size=200))
def test_relay_entry_points_random_bytes(world: World, envelopes: list[bytes],
                                         blob: bytes) -> None:  # fmt: skip
    svc, t = world.svc, world.alice.transport
    pending = svc.pending()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: t.submit(envelopes),
        lambda: t.report(blob, True),
        lambda: t.register_device(blob),
        lambda: t.upload_prekeys([blob], blob),
        lambda: t.report_class(blob),
    ]
    for call in calls:
        try:
            world.run(call)
        except E2EError:
            pass
    try:
        svc.ads.receive(blob)
    except E2EError:
        pass
    assert svc.pending() == pending
    assert svc.app.counters["error:internal"] == 0
