"""The per-device rate limit holds across relay processes (SPEC §10.7): each device's token
bucket is a row of the relay store, taken in the request's own transaction, so N relay
processes on one database admit the rate once, not N times, and a refused request changes
nothing (not the bucket, not its nonce)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from relayhelp import Refused, RelayProcess, new_device, relay_metrics

from e2e.errors import DecodeError
from e2e.platform import wire
from e2e.relay.backends import open_store
from e2e.relay.store import RelayStore, Tx

ACCT, DEV = b"dev", 1
RATE, BURST = 1.0, 3.0


def _take(store: RelayStore, now: float, want: int = 1) -> int:
    return store.run(lambda tx: tx.take_token(ACCT, DEV, now, RATE, BURST, want))


def _bucket(store: RelayStore) -> Any:
    return store.read(
        lambda tx: tx.fetchone(
            "SELECT tokens, at FROM rate_buckets WHERE account = ? AND device_id = ?",
            (ACCT, DEV),
        )
    )


def test_a_take_of_several_tokens(two_of: tuple[RelayStore, RelayStore]) -> None:
    """A process that takes ``want`` tokens at once gets them while the bucket holds them,
    then one at a time, then none; the bucket never goes below zero."""
    a, b = two_of
    assert _take(a, 1.0, want=2) == 2  # 3 -> 1
    assert _take(b, 1.0, want=2) == 1  # holds 1 < 2: one
    assert _take(a, 1.0, want=2) == 0
    assert _take(b, 1.5, want=2) == 0  # half a token
    assert _take(b, 2.0, want=2) == 1
    assert _take(a, 100.0, want=3) == 3 and _take(a, 100.0) == 0


def test_one_bucket_for_every_store_on_the_database(
    two_of: tuple[RelayStore, RelayStore],
) -> None:
    a, b = two_of
    assert [_take(a, 100.0), _take(b, 100.0), _take(a, 100.0)] == [True, True, True]
    before = _bucket(a)
    assert not _take(b, 100.0) and not _take(a, 100.2)  # empty, whichever store asks
    assert _bucket(b) == before  # a refusal changes nothing, not even the bucket's time
    assert _take(b, 101.5)  # 1.5 s at 1/s: one request, half a token left
    assert not _take(a, 101.5)
    assert _take(a, 102.0)  # the half token refilled
    assert not _take(b, 50.0)  # time going back refills nothing
    for _ in range(3):
        assert _take(a, 1000.0)  # refilled to the burst, never beyond it
    assert not _take(b, 1000.0)


def test_a_take_in_a_refused_request_is_rolled_back(
    two_of: tuple[RelayStore, RelayStore],
) -> None:
    a, b = two_of
    assert _take(a, 10.0)
    before = _bucket(b)

    def refused(tx: Tx) -> None:
        assert tx.take_token(ACCT, DEV, 10.0, RATE, BURST)
        raise DecodeError("refused after the take")

    with pytest.raises(DecodeError):
        a.run(refused)
    assert _bucket(b) == before
    assert [_take(b, 10.0), _take(b, 10.0), _take(b, 10.0)] == [True, True, False]


def test_full_buckets_are_purged_and_others_kept(two_of: tuple[RelayStore, RelayStore]) -> None:
    a, b = two_of
    assert _take(a, 10.0) and _take(a, 10.0)
    a.run(lambda tx: tx.purge_rate_buckets(10.5))  # not refilled yet: kept
    assert _bucket(b) is not None
    assert _take(b, 10.5) and not _take(b, 10.5)  # it still counts what was taken
    b.run(lambda tx: tx.purge_rate_buckets(10.5 + BURST / RATE + 0.1))  # full again: gone
    assert _bucket(a) is None
    assert [_take(a, 20.0) for _ in range(4)] == [True, True, True, False]


def test_the_writer_groups_take_without_waiting_for_a_held_bucket(relay_db: str) -> None:
    """On PostgreSQL a group only tries a bucket's lock (waiting while holding its other
    locks could deadlock with another process): a request whose bucket another transaction
    holds runs again later and then takes its token; on SQLite the writer is alone anyway."""
    store = open_store(relay_db)
    release = threading.Event()
    held = threading.Event()

    def hold(tx: Tx) -> None:  # another relay process, mid-request on the same device
        assert tx.take_token(ACCT, DEV, 5.0, RATE, BURST)
        held.set()
        release.wait(10)

    other = open_store(relay_db)
    holder = threading.Thread(target=lambda: other.run(hold))
    holder.start()
    try:
        assert held.wait(10)

        async def main() -> list[int]:
            loop = asyncio.get_running_loop()
            loop.call_later(0.3, release.set)
            takes = [
                store.run_async(lambda tx: tx.take_token(ACCT, DEV, 5.0, RATE, BURST))
                for _ in range(3)
            ]
            return list(await asyncio.gather(*takes))

        got = asyncio.run(main())
        assert sorted(got) == [0, 1, 1]  # the burst of 3, one taken by the holder
    finally:
        release.set()
        holder.join()
        other.close()
        store.close()


def _accepted(url: str) -> float:
    """Authenticated requests a relay process accepted (account registration has no auth)."""
    total = 0.0
    for line in relay_metrics(url).splitlines():
        if line.startswith("e2e_relay_requests_total{") and "register_account" not in line:
            total += float(line.split()[-1])
    return total


def _alternate(
    procs: list[RelayProcess], n: int, replay: bool = False
) -> tuple[list[int], float, Any]:
    """A new device, then ``n`` requests alternately through each process: their statuses,
    the requests the processes admitted in all, and the device."""
    with (
        httpx.Client(base_url=procs[0].url, timeout=30) as a,
        httpx.Client(base_url=procs[1].url, timeout=30) as b,
    ):
        dev = new_device(a, b"fast", 0)
        codes = []
        if replay:  # the second copy is refused (401): whatever token it had is not used
            body = wire.CountPrekeys().to_bytes()
            header = dev.sign(wire.Path.PREKEY_COUNT, body)
            codes.append(dev.raw(wire.Path.PREKEY_COUNT, body, auth=header).status_code)
            assert dev.raw(wire.Path.PREKEY_COUNT, body, auth=header).status_code == 401
        for i in range(n):
            dev.http = (a, b)[i % 2]
            try:
                dev.call(wire.Path.PREKEY_COUNT, wire.CountPrekeys(), wire.PrekeyCount)
                codes.append(200)
            except Refused as exc:
                codes.append(exc.status)
        admitted = _accepted(procs[0].url) + _accepted(procs[1].url)
    return codes, admitted, dev


def test_the_rate_limit_holds_across_relay_processes(relay_db: str, tmp_path: Path) -> None:
    rate, burst = 0.2, 8
    extra = ["--rate", str(rate), "--burst", str(burst)]
    procs = [
        RelayProcess(relay_db, log_path=tmp_path / f"relay{i}.log", extra=extra).start()
        for i in range(2)
    ]
    try:
        started = time.monotonic()
        codes, admitted, dev = _alternate(procs, 2 * burst)
        elapsed = time.monotonic() - started
        assert set(codes) == {200, 429}
        # Per process, each would have admitted a burst (so up to 2 * burst in all).
        assert burst <= admitted <= burst + int(elapsed * rate) + 1
        # A refused request recorded nothing: the same signed request, sent again once a
        # token has refilled, is accepted (its nonce was not used).
        with httpx.Client(base_url=procs[1].url, timeout=30) as b:
            dev.http = b
            body = wire.CountPrekeys().to_bytes()
            header = dev.sign(wire.Path.PREKEY_COUNT, body)
            assert dev.raw(wire.Path.PREKEY_COUNT, body, auth=header).status_code == 429
            time.sleep(1.1 / rate)
            assert dev.raw(wire.Path.PREKEY_COUNT, body, auth=header).status_code == 200
    finally:
        for p in procs:
            p.stop()


def test_tokens_taken_several_at_a_time_still_add_up_to_the_burst(
    relay_db: str, tmp_path: Path
) -> None:
    """With leases (a process takes 4 tokens at once and spends the rest on the device's next
    requests without touching the bucket), two processes still admit exactly the burst (the
    rate is too low to refill anything meanwhile), and a refused request (a replay) gives
    back the token it would have spent."""
    burst = 10
    extra = ["--rate", "0.001", "--burst", str(burst), "--rate-lease", "4"]
    procs = [
        RelayProcess(relay_db, log_path=tmp_path / f"relay{i}.log", extra=extra).start()
        for i in range(2)
    ]
    try:
        codes, admitted, _ = _alternate(procs, 3 * burst, replay=True)
        assert admitted == burst  # new_device's requests count too
        assert codes.count(200) < burst and codes[-4:] == [429] * 4
    finally:
        for p in procs:
            p.stop()


def test_a_bucket_survives_as_a_row_not_in_process_memory(relay_db: str) -> None:
    """A restarted relay process (a new store on the database) finds the bucket as it was."""
    a = open_store(relay_db)
    try:
        assert all(_take(a, 7.0) for _ in range(3))
    finally:
        a.close()
    b = open_store(relay_db)
    try:
        assert not _take(b, 7.0)
    finally:
        b.close()


@pytest.mark.pg
def test_the_pg_lock_key_is_the_one_every_writer_takes(pg_db: str) -> None:
    """(PostgreSQL) A transaction holding the bucket's advisory lock by hand makes a group's
    take wait for it (run again later), never write under it."""
    from e2e.relay.postgres import _lock_key

    relay_db = pg_db

    key = _lock_key(b"rate\x00" + ACCT + b"\x00" + DEV.to_bytes(8, "big"))
    store = open_store(relay_db)
    try:
        with psycopg.connect(relay_db) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))

            async def main() -> int:
                task = asyncio.ensure_future(
                    store.run_async(lambda tx: tx.take_token(ACCT, DEV, 1.0, RATE, BURST))
                )
                await asyncio.sleep(0.4)
                assert not task.done()  # still waiting its turn, not written under the lock
                assert _bucket(store) is None
                await asyncio.get_running_loop().run_in_executor(None, conn.commit)
                return await task

            assert asyncio.run(main()) == 1
    finally:
        store.close()


@pytest.mark.parametrize("grouped", [False, True])
def test_admit_takes_a_token_and_records_the_nonce(relay_db: str, grouped: bool) -> None:
    """One step per request (on PostgreSQL's writer, one round trip): (token taken, nonce
    fresh), whether the request runs alone or in the writer's group."""
    store = open_store(relay_db)

    def admit(nonce: bytes) -> tuple[int, bool]:
        def fn(tx: Tx) -> tuple[int, bool]:
            return tx.admit(ACCT, DEV, nonce, 99, 1.0, RATE, BURST, 1)

        if not grouped:
            return store.run(fn)

        async def main() -> tuple[int, bool]:
            return await store.run_async(fn)

        return asyncio.run(main())

    try:
        assert admit(b"a" * 16) == (1, True)
        assert admit(b"a" * 16) == (1, False)  # a replay (its caller then refuses it)
        assert admit(b"b" * 16) == (1, True)
        assert admit(b"c" * 16)[0] == 0  # the burst of 3 is spent
        assert admit(b"b" * 16)[0] == 0
    finally:
        store.close()
