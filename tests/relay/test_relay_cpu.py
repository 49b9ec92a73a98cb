"""CPU amplification (SPEC §10.13): requests that cost the relay far more than they cost the
client. Measured as the relay process's own CPU time (all its threads) for a run of the
expensive request against a run of a cheap one of the same machinery, interleaved, so the
bound is a ratio of the same process's work, not a time on this machine."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from relayhelp import Dev, Refused, RelayProcess, new_device

from e2e.keys import KeyPair
from e2e.platform import wire
from e2e.platform.leaves import Opening
from e2e.platform.transparency import DirectoryEntry
from e2e.platform.vrf import VrfKey
from e2e.relay.backends import open_store

CUSTOMER = 0


def _per_request(relay: RelayProcess, rounds: int, *runs: object) -> list[float]:
    """Relay CPU seconds per call of each of ``runs`` (callables), over ``rounds`` rounds in
    which each runs once, interleaved."""
    spent = [0.0] * len(runs)
    for _ in range(rounds):
        for i, run in enumerate(runs):
            before = relay.cpu_seconds()
            run()  # type: ignore[operator]
            spent[i] += relay.cpu_seconds() - before
    return [s / rounds for s in spent]


def test_a_repeated_prekey_upload_is_cheap(relay: RelayProcess) -> None:
    """A device repeating its upload of 200 bundles (a retry, or an attacker replaying it)
    costs the relay about what a prekey count does: the bundles it verified before are known
    by their digests (on main each repeat verified 400 signatures: 35-42 ms)."""
    with httpx.Client(base_url=relay.url, timeout=30) as c:
        dev = Dev(c, _acct(c), 1, one_time=200)
        dev.register()
        assert dev.upload().one_time == 200
        upload, count = _per_request(relay, 15, dev.upload, lambda: dev.call(
            wire.Path.PREKEY_COUNT, wire.CountPrekeys(), wire.PrekeyCount))  # fmt: skip
        assert dev.upload().one_time == 200
    assert upload < 8 * count, (upload, count)  # measured 3-4x here; main's code 23-38x


def _acct(c: httpx.Client) -> object:
    from relayhelp import Acct

    acct = Acct(b"dora" + os.urandom(4).hex().encode(), CUSTOMER)
    Dev(c, acct, 1, one_time=0).register_account()
    return acct


@pytest.mark.parametrize("relay_db", ["sqlite"], indirect=True)
def test_the_prekey_pool_is_bounded_before_anything_is_verified(
    relay_db: str, tmp_path: Path
) -> None:
    proc = RelayProcess(relay_db, env={"E2E_RELAY_LIMITS_PREKEY_POOL": "150"}).start()
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as c:
            dev = Dev(c, _acct(c), 1, one_time=200)
            dev.register()
            with pytest.raises(Refused) as full:
                dev.upload()
            assert full.value.status == 413
            assert dev.call(wire.Path.PREKEY_COUNT, wire.CountPrekeys(),
                            wire.PrekeyCount).one_time == 0  # fmt: skip
    finally:
        proc.stop()


def _fill_log(db: str, n: int) -> None:
    """``n`` entries of other accounts written straight into the relay's key log (opening
    records, SPEC §13.5; they share one VRF proof: their labels are not what a lookup by
    name looks at, and proving 20,000 labels would take the test's time)."""
    store = open_store(db)
    ident = KeyPair.generate().public
    proof = VrfKey(os.urandom(32)).prove(b"filler")
    try:
        for start in range(0, n, 500):
            rows = [(i, f"filler{i}".encode(), 1, Opening(
                        DirectoryEntry(f"filler{i}".encode(), 1, ident, b"").to_bytes(),
                        os.urandom(32), proof).to_bytes())
                    for i in range(start, min(n, start + 500))]  # fmt: skip
            store.run(lambda tx, rows=rows: tx.execute(
                "INSERT INTO key_log (idx, account, version, entry) VALUES "  # noqa: S608
                + ", ".join(["(?, ?, ?, ?)"] * len(rows)),
                [v for r in rows for v in r]))  # fmt: skip
    finally:
        store.close()


def test_a_log_lookup_of_a_missing_account_does_not_walk_the_log(
    relay_db: str, tmp_path: Path
) -> None:
    """With 20,000 entries in the key log, looking up an account that has none costs what
    looking up one that has does (on main it decoded every entry: 0.3-0.7 s each)."""
    _fill_log(relay_db, 20_000)
    proc = RelayProcess(relay_db, log_path=tmp_path / "relay.log").start()
    try:
        with httpx.Client(base_url=proc.url, timeout=60) as c:
            dev = new_device(c, b"erin", CUSTOMER)
            head = dev.call(wire.Path.LOG_HEAD, wire.LogHeadQuery(), wire.LogHead)
            from e2e.platform.merkle import SignedTreeHead

            size = SignedTreeHead.from_bytes(head.head).size
            assert size > 20_000

            def missing() -> None:
                with pytest.raises(Refused):
                    dev.call(wire.Path.LOG_LOOKUP, wire.LogLookup(b"nobody", size), wire.LogEntry)

            def present() -> None:
                dev.call(wire.Path.LOG_LOOKUP, wire.LogLookup(b"filler5", size), wire.LogEntry)

            absent, found = _per_request(proc, 10, missing, present)
    finally:
        proc.stop()
    assert absent < 3 * found + 0.002, (absent, found)  # about 1x here; main's code 100x
