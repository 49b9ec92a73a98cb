"""Client benches: event-loop lag while sending and receiving, and business routing cost.

    python benches/client_bench.py [--lag N] [--agents 2,50,200] [--gc-freeze]

* Loop lag: a probe task sleeps 1 ms in a loop on the client's event loop and records how
  late each wake-up is, while a customer and a business agent (each on its own SQLite store)
  exchange N messages (N/2 each way, each one sent, received and acknowledged, with its
  delivered receipt) through the relay service, ``python -m e2e relay serve`` in a process
  of its own, over HTTP. Reports the largest and the 99th-percentile stall.
* Routing: a business with A agents plus an archive; the chat is assigned to one agent.
  Times the customer's first message (device list, bundles, session set-up, send) and a
  steady-state message, and counts the device copies, against the relay service in the
  bench's process (its work runs on the same event loop). The steady-state ratio between 200
  and 2 agents shows whether cost grows with agents outside the assignment.

Absolute times depend on the machine; the ratios and the copy counts are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e.client import Client  # noqa: E402
from e2e.client.http import RelayClient  # noqa: E402
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


class RelayProcess:
    """``python -m e2e relay serve`` on a loopback port, as its own process."""

    def __init__(self, db: str) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "e2e", "relay", "serve", "--db", db, "--port",
             str(self.port), "--log-level", "warning", "--rate", "100000", "--burst", "100000"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        import httpx

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("relay did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


class StepCpu:
    """Measures the CPU time the event-loop thread spends in each loop step (callback), the
    blocking work the code itself does on the loop, independent of how busy the machine is
    (wall-clock lag also counts the time the OS gives other processes)."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self._orig = asyncio.events.Handle._run

    def __enter__(self) -> StepCpu:
        orig, steps = self._orig, self.steps

        def _run(handle: asyncio.events.Handle) -> None:
            t = time.thread_time()
            orig(handle)
            steps.append(time.thread_time() - t)

        asyncio.events.Handle._run = _run  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.events.Handle._run = self._orig  # type: ignore[method-assign]

    @property
    def worst_ms(self) -> float:
        return max(self.steps) * 1000


async def loop_lag(
    n: int,
    directory: str,
    url: str,
    cpu: StepCpu | None = None,
    freeze: bool = False,
) -> LagProbe:
    net = RelayClient(url)
    connect = net.connect
    biz = await Client.create_account(
        lambda: SqliteStore(os.path.join(directory, "agent.db"), os.urandom(32)),
        connect, "acme", "business",
    )  # fmt: skip
    cust = await Client.create_account(
        lambda: SqliteStore(os.path.join(directory, "carol.db"), os.urandom(32)),
        connect, "carol", "customer",
    )  # fmt: skip
    if freeze:
        gc.collect()
        gc.freeze()  # start-up objects out of the collector's way: no long gen-2 pauses
    probe = LagProbe()
    probe.start()
    if cpu is not None:
        cpu.__enter__()
    for i in range(n // 2):
        await cust.send("acme", f"question {i}")
        await biz.sync()
        await biz.send("carol", f"answer {i}")
        await cust.sync()
    if cpu is not None:
        cpu.__exit__()
    await probe.stop()
    await biz.aclose()
    await cust.aclose()
    await net.aclose()
    return probe


async def routing(agents: int, customers: int = 5) -> tuple[float, float, int, int]:
    """(median first message, median steady-state message, copies of each) for a business
    with ``agents`` agents plus an archive, each chat assigned to one agent."""
    tmp = tempfile.TemporaryDirectory()
    relay = RelayClient.in_process(os.path.join(tmp.name, "relay.db"))
    assert relay.app is not None
    store = relay.app.store

    def pending() -> int:
        return int(store.read(lambda tx: tx.count_mail()))

    c = relay.connect
    admin = await Client.create_account(MemoryStore(), c, "acme", "business", prekeys=1)
    devices = [await admin.add_device(MemoryStore(), c, prekeys=1) for _ in range(agents)]
    archive = await admin.add_device(MemoryStore(), c, prekeys=1)
    await admin.designate([archive.profile.device])
    firsts, steady, first_copies, steady_copies = [], [], 0, 0
    custs = []
    for k in range(customers):
        cust = await Client.create_account(
            MemoryStore(), c, f"carol{k}", "customer", auto_receipts=False
        )
        custs.append(cust)
        await admin.assign(f"carol{k}", [devices[k % agents].profile.device])
        before = pending()
        t0 = time.perf_counter()
        await cust.send("acme", "first")
        firsts.append(time.perf_counter() - t0)
        first_copies = pending() - before
        for i in range(10):
            before = pending()
            t0 = time.perf_counter()
            await cust.send("acme", f"steady {i}")
            steady.append(time.perf_counter() - t0)
            steady_copies = pending() - before
    for d in [admin, *devices, archive, *custs]:
        await d.aclose()
    await relay.aclose()
    tmp.cleanup()
    return statistics.median(firsts), statistics.median(steady), first_copies, steady_copies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lag", type=int, default=1000, help="messages for the loop-lag probe")
    ap.add_argument("--agents", default="2,50,200")
    ap.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after start-up")
    ns = ap.parse_args(argv)
    if ns.lag:
        with tempfile.TemporaryDirectory() as d:
            relay = RelayProcess(os.path.join(d, "relay.db"))
            cpu = StepCpu()
            try:
                probe = asyncio.run(loop_lag(ns.lag, d, relay.url, cpu, ns.gc_freeze))
            finally:
                relay.stop()
        where = "relay service over HTTP" + (", gc.freeze()" if ns.gc_freeze else "")
        print(
            f"loop lag over {ns.lag} messages ({where}, SQLite stores): worst "
            f"{probe.worst_ms:.2f} ms, p99 {probe.p99_ms:.2f} ms, {len(probe.lags)} probes; "
            f"CPU time of the longest loop step {cpu.worst_ms:.2f} ms over {len(cpu.steps)} steps "
            f"({sum(t > 0.010 for t in cpu.steps)} over 10 ms)"
        )
    rows = []
    if ns.agents:
        asyncio.run(routing(2, 1))  # warm-up: imports and first-use costs
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
