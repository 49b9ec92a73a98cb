"""Held long-polls cost no reads, and wake-ups reach every one of them (SPEC §10.13).

A held fetch used to read its mailbox every 0.5 s on SQLite (to see deliveries made by other
relay processes), so 10,000 held polls were 20,000 reads a second and one process could not
hold them; now one look per process and tick finds the devices with new mail."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from relayhelp import Dev, RelayProcess, new_device, relay_metrics, relay_with

from e2e.platform import wire
from e2e.platform.policy import MessageClass

CUSTOMER, BUSINESS = 0, 1


def _metric(url: str, name: str) -> float:
    for line in relay_metrics(url).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics")


def _poll(url: str, dev: Dev, wait_ms: int, out: list[tuple[float, int]]) -> None:
    """One fetch of ``dev`` that may wait, on a connection of its own: (answered at, deliveries)."""
    body = wire.Fetch(dev.acct.name, dev.device_id, wait_ms).to_bytes()
    headers = {"content-type": wire.CONTENT_TYPE,
               "authorization": dev.sign(wire.Path.MAILBOX_FETCH, body)}  # fmt: skip
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post(wire.Path.MAILBOX_FETCH, content=body, headers=headers)
    assert r.status_code == 200, r.content
    out.append((time.monotonic(), len(wire.Mailbox.from_bytes(r.content).deliveries)))


def _start(target: object, *args: object) -> threading.Thread:
    t = threading.Thread(target=target, args=args)  # type: ignore[arg-type]
    t.start()
    return t


def test_held_long_polls_read_no_mailbox(client: httpx.Client, relay: RelayProcess) -> None:
    """Eight fetches held for 3 s with no mail: at most one more mailbox read each (the
    first tick's, on SQLite; none on PostgreSQL), not one every 0.5 s (48 on today's main)."""
    devs = [new_device(client, b"idle%d" % i, BUSINESS) for i in range(8)]
    before = _metric(relay.url, "e2e_relay_long_poll_fetches_total")
    out: list[tuple[float, int]] = []
    started = time.monotonic()
    threads = [_start(_poll, relay.url, d, 3000, out) for d in devs]
    for t in threads:
        t.join(30)
    assert len(out) == 8 and all(n == 0 for _, n in out)
    assert min(at for at, _ in out) - started >= 2.5  # they were held
    assert _metric(relay.url, "e2e_relay_long_poll_fetches_total") - before <= len(devs)


def test_second_poll_of_a_device_is_woken_after_the_first_ends(
    client: httpx.Client, relay: RelayProcess
) -> None:
    """Two fetches of one device wait; the first one's wait ends; mail then wakes the second
    at once (it shared the first one's event, which went with it: on PostgreSQL the second
    slept to its deadline on today's main)."""
    cust = new_device(client, b"pat", CUSTOMER)
    biz = new_device(client, b"shop", BUSINESS)
    short: list[tuple[float, int]] = []
    long: list[tuple[float, int]] = []
    t_long = _start(_poll, relay.url, biz, 20_000, long)
    time.sleep(0.3)
    t_short = _start(_poll, relay.url, biz, 1000, short)
    t_short.join(10)
    assert short and short[0][1] == 0
    time.sleep(0.2)
    sent = time.monotonic()
    cust.submit(cust.envelopes(b"shop", [biz.addr], MessageClass.SERVICE))
    t_long.join(30)
    assert long and long[0][1] == 1
    assert long[0][0] - sent < 5


@pytest.fixture
def two_sqlite_relays(tmp_path: Path) -> Iterator[list[RelayProcess]]:
    db = str(tmp_path / "relay.db")
    with relay_with(db, tmp_path / "a.log", {}) as a, relay_with(db, tmp_path / "b.log", {}) as b:
        yield [a, b]


def test_mail_from_another_sqlite_process_wakes_a_held_poll(
    two_sqlite_relays: list[RelayProcess],
) -> None:
    """A fetch held by one process on a SQLite file is woken by a delivery made by another
    process on the same file, within a few of the mail watch's ticks, not at its deadline."""
    a, b = two_sqlite_relays
    with httpx.Client(base_url=a.url, timeout=60) as ca, httpx.Client(base_url=b.url) as cb:
        biz = new_device(ca, b"waits", BUSINESS)
        cust = new_device(cb, b"sends", CUSTOMER)
        got: list[tuple[float, int]] = []
        t = _start(_poll, a.url, biz, 20_000, got)
        time.sleep(1.2)  # past the first tick: only the watch can wake it now
        sent = time.monotonic()
        cust.submit(cust.envelopes(b"waits", [biz.addr], MessageClass.SERVICE))
        t.join(30)
    assert got and got[0][1] == 1
    assert got[0][0] - sent < 3


def test_mail_since_lists_new_deliveries_and_never_goes_back(tmp_path: Path) -> None:
    """The mail watch's query (SQLite): the devices with deliveries above a number, and a
    highest number that does not fall when the highest delivery is acknowledged (a fall would
    show the deliveries below it as new again)."""
    from e2e.relay.backends import open_store

    store = open_store(str(tmp_path / "relay.db"))
    insert = ("INSERT INTO mailbox (account, device_id, envelope, received_at, tag)"
              " VALUES (?, ?, ?, 0, ?)")  # fmt: skip

    def deliver(account: bytes, device: int) -> None:
        store.run(lambda tx: tx.execute(insert, (account, device, b"e", b"t")))

    try:
        assert store.read(lambda tx: tx.mail_since(None)) == (0, [])
        deliver(b"ann", 1)
        deliver(b"bob", 2)
        top, woken = store.read(lambda tx: tx.mail_since(None))
        assert woken == []  # nobody asked about devices
        deliver(b"cat", 1)
        deliver(b"cat", 1)
        newer, woken = store.read(lambda tx: tx.mail_since(top))
        assert newer == top + 2 and woken == [(b"cat", 1)]
        store.run(lambda tx: tx.execute("DELETE FROM mailbox WHERE seq = ?", (newer,)))
        assert store.read(lambda tx: tx.mail_since(newer)) == (newer, [])
        deliver(b"dan", 3)
        assert store.read(lambda tx: tx.mail_since(newer)) == (newer + 1, [(b"dan", 3)])
    finally:
        store.close()
