"""Client benches: event-loop lag while sending and receiving, and business routing cost.

    python benches/client_bench.py [--lag N] [--agents 2,50,200] [--http]

* Loop lag: a probe task sleeps 1 ms in a loop on the client's event loop and records how
  late each wake-up is, while a customer and a business agent (each on its own SQLite store)
  exchange N messages (N/2 each way, each one sent, received and acknowledged, with its
  delivered receipt). Reports the largest and the 99th-percentile stall.
* Routing: a business with A agents plus an archive; the chat is assigned to one agent.
  Times the customer's first message (device list, bundles, session set-up, send) and a
  steady-state message, and counts the device copies. The steady-state ratio between 200
  and 2 agents shows whether cost grows with agents outside the assignment.

Absolute times depend on the machine; the ratios and the copy counts are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e.client import Client, LocalRelay  # noqa: E402
from e2e.platform.relay import ManualClock, Relay  # noqa: E402
from e2e.store import MemoryStore  # noqa: E402
from e2e.store.sqlite import SqliteStore  # noqa: E402


class LagProbe:
    """Sleeps ``interval`` seconds in a loop and records each wake-up's lateness."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.lags.append(loop.time() - start - self.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    @property
    def worst_ms(self) -> float:
        return max(self.lags) * 1000

    @property
    def p99_ms(self) -> float:
        return statistics.quantiles(self.lags, n=100)[98] * 1000


async def loop_lag(n: int, directory: str, connect_factory: object | None = None) -> LagProbe:
    local = LocalRelay(Relay(clock=ManualClock()))
    connect = local.connect
    biz = await Client.create_account(
        lambda: SqliteStore(os.path.join(directory, "agent.db"), os.urandom(32)),
        connect, "acme", "business",
    )  # fmt: skip
    cust = await Client.create_account(
        lambda: SqliteStore(os.path.join(directory, "carol.db"), os.urandom(32)),
        connect, "carol", "customer",
    )  # fmt: skip
    probe = LagProbe()
    probe.start()
    for i in range(n // 2):
        await cust.send("acme", f"question {i}")
        await biz.sync()
        await biz.send("carol", f"answer {i}")
        await cust.sync()
    await probe.stop()
    await biz.aclose()
    await cust.aclose()
    local.close()
    return probe


async def routing(agents: int) -> tuple[float, float, int, int]:
    local = LocalRelay(Relay(clock=ManualClock()))
    c = local.connect
    admin = await Client.create_account(MemoryStore(), c, "acme", "business", prekeys=1)
    devices = [await admin.add_device(MemoryStore(), c, prekeys=1) for _ in range(agents)]
    archive = await admin.add_device(MemoryStore(), c, prekeys=1)
    cust = await Client.create_account(MemoryStore(), c, "carol", "customer", auto_receipts=False)
    await admin.designate([archive.profile.device])
    await admin.assign("carol", [devices[0].profile.device])
    t0 = time.perf_counter()
    await cust.send("acme", "first")
    first = time.perf_counter() - t0
    first_copies = local.relay.pending()
    steady_runs = []
    for i in range(20):
        t0 = time.perf_counter()
        await cust.send("acme", f"steady {i}")
        steady_runs.append(time.perf_counter() - t0)
    steady_copies = local.relay.pending() - first_copies
    for d in [admin, *devices, archive, cust]:
        await d.aclose()
    local.close()
    return first, statistics.median(steady_runs), first_copies, steady_copies // 20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lag", type=int, default=1000, help="messages for the loop-lag probe")
    ap.add_argument("--agents", default="2,50,200")
    ns = ap.parse_args(argv)
    if ns.lag:
        with tempfile.TemporaryDirectory() as d:
            probe = asyncio.run(loop_lag(ns.lag, d))
        print(
            f"loop lag over {ns.lag} messages (SQLite stores): worst {probe.worst_ms:.2f} ms, "
            f"p99 {probe.p99_ms:.2f} ms, {len(probe.lags)} probes"
        )
    rows = []
    for a in [int(x) for x in ns.agents.split(",") if x]:
        first, steady, c1, c2 = asyncio.run(routing(a))
        rows.append((a, first, steady, c1, c2))
    if rows:
        print("| agents | first message | copies | steady-state message | copies |")
        print("|---:|---:|---:|---:|---:|")
        for a, first, steady, c1, c2 in rows:
            print(f"| {a} | {first * 1000:.1f} ms | {c1} | {steady * 1000:.2f} ms | {c2} |")
        base = rows[0]
        for a, first, steady, _, _ in rows[1:]:
            print(
                f"{a} vs {base[0]} agents: first x{first / base[1]:.2f}, "
                f"steady-state x{steady / base[2]:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
