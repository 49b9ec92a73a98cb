"""Several relay processes on one PostgreSQL database with concurrent senders: the 24 h
window, opt-in, block and limit are never bypassed, each one-time prekey is handed out once,
and the billing ledger equals the accepted billable messages exactly."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from relayhelp import Dev, Refused, RelayProcess, new_device, race

from e2e.platform import wire
from e2e.platform.policy import MessageClass, PolicyConfig

CUSTOMER, BUSINESS = 0, 1
pytestmark = pytest.mark.pg


@pytest.fixture
def two_relays(pg_db: str, tmp_path: Path) -> Iterator[list[RelayProcess]]:
    procs = [
        RelayProcess(pg_db, log_path=tmp_path / f"relay{i}.log", extra=["--rate", "10000"])
        for i in range(2)
    ]
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            p.stop()


def test_policy_prekeys_and_ledger_across_processes(
    two_relays: list[RelayProcess], pg_db: str
) -> None:
    urls = [p.url for p in two_relays]
    clients = [httpx.Client(base_url=u, timeout=60) for u in urls]
    try:
        biz = new_device(clients[0], b"shop", BUSINESS, tier=1)
        customers = [new_device(clients[i % 2], b"cust%d" % i, CUSTOMER, one_time=6)
                     for i in range(4)]  # fmt: skip
        c_window, c_limited, c_optin, c_blocked = customers
        # Contact: three of them write (opening the window); c_window never does.
        for c in (c_limited, c_optin, c_blocked):
            c.submit(c.envelopes(b"shop", [biz.addr], MessageClass.SERVICE))
        c_limited.control(wire.Control.LIMIT, b"shop")
        c_optin.control(wire.Control.OPT_IN, b"shop")
        c_blocked.control(wire.Control.BLOCK, b"shop")

        def send(target: Dev, cls: MessageClass) -> Callable[[int], Any]:
            def go(i: int) -> Any:
                with httpx.Client(base_url=urls[i % 2], timeout=60) as c:
                    dev = Dev(c, biz.acct, 1)
                    dev.identity = biz.identity
                    envs = dev.envelopes(target.acct.name, [target.addr], cls)
                    return dev.submit(envs)

            return go

        n = 12
        results: dict[str, list[Any]] = {
            "window": race(n, send(c_window, MessageClass.SERVICE)),
            "limited_templates": race(n, send(c_limited, MessageClass.TEMPLATE)),
            "limited_marketing": race(n, send(c_limited, MessageClass.MARKETING)),
            "optin_marketing": race(n, send(c_optin, MessageClass.MARKETING)),
            "blocked": race(n, send(c_blocked, MessageClass.TEMPLATE)),
        }

        def ok(rs: list[Any]) -> list[wire.Receipt]:
            return [r for r in rs if isinstance(r, wire.Receipt)]

        def codes(rs: list[Any]) -> set[str]:
            return {r.code for r in rs if isinstance(r, Refused)}

        assert ok(results["window"]) == [] and codes(results["window"]) == {"no_prior_contact"}
        quota = PolicyConfig().limited_templates
        assert len(ok(results["limited_templates"])) == quota  # the limit is never bypassed
        assert codes(results["limited_templates"]) == {"limited"}
        assert ok(results["limited_marketing"]) == []
        assert len(ok(results["optin_marketing"])) == n
        assert ok(results["blocked"]) == [] and codes(results["blocked"]) == {"blocked"}
        for rs in results.values():  # nothing but receipts and policy refusals
            assert all(isinstance(r, (wire.Receipt, Refused)) for r in rs), rs

        accepted = [r for rs in results.values() for r in ok(rs)]
        bill = biz.bill()
        assert sum(bill.counts) == len(accepted)
        assert bill.total == sum(r.price for r in accepted)
        with psycopg.connect(pg_db) as conn:
            rows = conn.execute("SELECT message_id, price FROM billing").fetchall()
        assert sorted((bytes(m), p) for m, p in rows) == sorted(
            (r.message_id, r.price) for r in accepted
        )

        # Prekeys: 6 one-time bundles of c_window, 16 concurrent claims through both processes.
        def claim(i: int) -> wire.ClaimedPrekey:
            with httpx.Client(base_url=urls[i % 2], timeout=60) as c:
                dev = Dev(c, biz.acct, 1)
                dev.identity = biz.identity
                return dev.claim(c_window.acct.name, 1)

        claims = race(16, claim)
        assert all(isinstance(c, wire.ClaimedPrekey) for c in claims), claims
        one_time = [c.bundle for c in claims if c.one_time]
        assert len(one_time) == 6 and len(set(one_time)) == 6
        assert c_window.upload().one_time == 0  # a retried upload revives nothing
    finally:
        for c in clients:
            c.close()


def test_wakeup_crosses_processes(two_relays: list[RelayProcess]) -> None:
    """A fetch waiting on one process is woken by a delivery through the other (NOTIFY)."""
    import time

    a, b = (httpx.Client(base_url=p.url, timeout=60) for p in two_relays)
    try:
        cust = new_device(a, b"waiter", CUSTOMER)
        biz = new_device(b, b"sender", BUSINESS)
        got: list[wire.Mailbox] = []
        t = threading.Thread(target=lambda: got.append(biz.fetch(wait_ms=20_000)))
        started = time.monotonic()
        t.start()
        time.sleep(0.5)
        cust.submit(cust.envelopes(b"sender", [biz.addr], MessageClass.SERVICE))
        t.join(30)
        assert got and len(got[0].deliveries) == 1
        assert time.monotonic() - started < 10
    finally:
        a.close()
        b.close()
