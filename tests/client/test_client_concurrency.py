"""What one Client may do from several tasks of its event loop at once (the contract in its
docstring and SPEC.md §10.10): send while another task waits in a long-poll sync; sends and
syncs side by side, each message handed to the application once and every message key used
once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from world import Service, run


def test_a_send_completes_while_another_task_waits_in_sync(tmp_path: Path) -> None:
    async def go() -> None:
        svc = Service(tmp_path)
        (shop,) = await svc.account("shop", "business", auto_receipts=False)
        (carol,) = await svc.account("carol", "customer", auto_receipts=False)
        await carol.send("shop", "hi")
        assert [m.body for m in await shop.sync()] == [b"hi"]
        waiting = asyncio.create_task(shop.sync(wait_ms=20_000))  # a long-poll, held empty
        await asyncio.sleep(0.2)
        assert not waiting.done()
        sent = await asyncio.wait_for(shop.send("carol", "sent during the wait"), 10)
        assert not waiting.done()  # the send did not wait for, or end, the long-poll
        assert [m.body for m in await carol.sync()] == [b"sent during the wait"]
        await carol.send("shop", "wakes the poll")
        got = await asyncio.wait_for(waiting, 10)
        assert [m.body for m in got] == [b"wakes the poll"]
        assert [m.message_id for m in await shop.history("carol")][-2] == sent.message_id
        await svc.aclose()

    run(go)


def test_concurrent_sends_and_syncs_hand_each_message_over_once(tmp_path: Path) -> None:
    async def go() -> None:
        svc = Service(tmp_path, stores="sqlite")
        (shop,) = await svc.account("shop", "business", auto_receipts=False)
        (carol,) = await svc.account("carol", "customer", auto_receipts=False)
        await carol.send("shop", "hi")
        await shop.sync()
        n = 12
        got: list[bytes] = []

        async def reader() -> None:
            while len(got) < n:
                got.extend(m.body for m in await shop.sync(wait_ms=500))

        readers = [asyncio.create_task(reader()) for _ in range(2)]
        texts = [f"q{i}" for i in range(n)]
        await asyncio.gather(*(carol.send("shop", t) for t in texts),
                             *(shop.send("carol", f"r{i}") for i in range(4)))  # fmt: skip
        await asyncio.wait_for(asyncio.gather(*readers), 20)
        assert sorted(got) == sorted(t.encode() for t in texts)  # each once, none lost
        received = [m.body for m in await carol.sync()]
        assert sorted(received) == [f"r{i}".encode() for i in range(4)]  # every key used once
        history = [m.message_id for m in await shop.history("carol")]
        assert len(history) == len(set(history)) == 1 + n + 4
        assert shop.errors == {} and carol.errors == {}
        await svc.aclose()

    run(go)
