"""The fault-injection suite (SPEC.md §10.11): randomized schedules of sends, syncs, client
crashes at await points, devices restored from a backup of their store, relay processes
killed with SIGKILL and restarted, and a fault proxy
that drops, resets, delays and duplicates requests and cuts answers after the relay committed;
then every device is started again, drains, and the invariants are checked: every message the
relay accepted reaches every recipient device's application exactly once, every sender learns
the fate of each send, no message key is used twice.

CI runs ``E2E_FAULT_SCHEDULES`` schedules (default 240, split between a SQLite and a
PostgreSQL relay database, two relay processes each), and kills a device's client at every
await point of a send and a sync. The big run is the same test with more, e.g.
``E2E_FAULT_SCHEDULES=5000 python -m pytest -q tests/fault -k randomized -s``. Each schedule's
seed is printed with what went wrong; ``E2E_FAULT_SEED`` fixes the seed sequence, and
``E2E_FAULT_REPLAY=seed,...`` runs exactly those schedules again (on each backend).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import SCENARIOS, Figures, Fleet, crash_at, run_many, seeds
from proxy import KINDS
from relayhelp import drop_pg_db, fresh_pg_db

SCHEDULES = int(os.environ.get("E2E_FAULT_SCHEDULES", "240"))
CONCURRENCY = int(os.environ.get("E2E_FAULT_CONCURRENCY", "3"))

pytestmark = pytest.mark.fault


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def relay_db(request: pytest.FixtureRequest, fast_tmp: Path) -> Iterator[str]:
    """The relay processes' database: a SQLite file (on tmpfs) or a fresh PostgreSQL one."""
    if request.param == "sqlite":
        yield str(fast_tmp / "relay.sqlite")
        return
    dsn = os.environ.get("E2E_PG_DSN")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail("E2E_PG_DSN not set under CI")
        pytest.skip("E2E_PG_DSN not set (source .ci/postgres.sh)")
    db = fresh_pg_db(dsn)
    yield db
    drop_pg_db(dsn, db)


def test_randomized_schedules(relay_db: str, fast_tmp: Path) -> None:
    plan = seeds(max(1, SCHEDULES // 2))
    count = len(plan)
    complaints: list[str] = []
    began = time.monotonic()

    async def go() -> Figures:
        fleet = Fleet(fast_tmp, relay_db)
        await fleet.start()
        try:

            def report(index: int, seed: int, wrong: list[str]) -> None:
                if wrong:
                    complaints.append(f"schedule {index} seed {seed}: {wrong[:4]}")

            await run_many(fleet, plan, CONCURRENCY, report)
        finally:
            await fleet.aclose()
        return fleet.figures

    f = asyncio.run(go())
    print(f"\nfault suite ({relay_db.split('/')[-1][:20]}), first seed {plan[0]}: {f.line()}"
          f" in {time.monotonic() - began:.0f} s")  # fmt: skip
    assert not complaints, complaints
    assert f.schedules == count and f.problems() == 0
    assert f.accepted >= count and f.deliveries >= 3 * f.accepted
    if count >= 40:  # every party killed or restarted, every fault drawn
        assert f.refused > 0 and sum(f.crashes.values()) > count // 8
        assert f.relay_kills > 0 and f.restarts > 0 and f.restores > 0, f
        assert set(f.faults) == set(KINDS), f


def test_a_crash_at_every_await_point_of_send_and_sync(fast_tmp: Path) -> None:
    """For each operation, its device is killed at its first await point, then its second,
    and so on until the operation completes without reaching the crash point: after each,
    the device is opened again and the invariants hold."""
    db = str(fast_tmp / "relay.sqlite")
    covered: dict[str, list[str]] = {}

    async def go() -> list[str]:
        fleet = Fleet(fast_tmp, db)
        await fleet.start()
        wrong: list[str] = []
        try:
            for n, scenario in enumerate(SCENARIOS):
                points: list[str] = []
                k = 0
                done = False
                while not done:
                    batch = await asyncio.gather(*(
                        crash_at(fleet, scenario, k + i, f"e{n}k{k + i}")
                        for i in range(CONCURRENCY)
                    ))  # fmt: skip
                    for where, complaints in batch:
                        if not where:
                            done = True
                        elif not done:
                            points.append(where)
                        wrong += [f"{scenario.name} #{len(points)}: {c}" for c in complaints]
                    k += CONCURRENCY
                covered[scenario.name] = points
        finally:
            await fleet.aclose()
        return wrong

    wrong = asyncio.run(go())
    for name, points in covered.items():
        print(f"\n{name}: killed at each of {len(points)} await points: {', '.join(points)}")
    assert not wrong, wrong
    assert all(len(p) >= 8 for p in covered.values()), covered
