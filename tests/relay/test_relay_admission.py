"""Registration admission, devices per account and prekey claims (SPEC §10.13), each attack
run against the relay process on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from relayhelp import Acct, Dev, Refused, RelayProcess, new_device, relay_metrics, relay_with

from e2e.platform import wire
from e2e.relay.pipeline import address_key

CUSTOMER, BUSINESS = 0, 1


@pytest.fixture
def strict(relay_db: str, tmp_path: Path) -> Iterator[RelayProcess]:
    """A relay admitting 3 accounts per address at once (then 1 an hour), 5 in all, 3
    devices per account, 3 claims of one account by another, 4 one-time prekeys of one
    device at once and 4 provisioning or recovery fetches per address at once."""
    env = {
        "E2E_RELAY_ADMISSION_ADDRESS_BURST": "3",
        "E2E_RELAY_ADMISSION_ADDRESS_PER_HOUR": "1",
        "E2E_RELAY_ADMISSION_BURST": "5",
        "E2E_RELAY_ADMISSION_PER_HOUR": "1",
        "E2E_RELAY_LIMITS_DEVICES_PER_ACCOUNT": "3",
        "E2E_RELAY_LIMITS_CLAIM_BURST": "3",
        "E2E_RELAY_LIMITS_CLAIMS_PER_HOUR": "1",
        "E2E_RELAY_LIMITS_DEVICE_CLAIM_BURST": "4",
        "E2E_RELAY_LIMITS_DEVICE_CLAIMS_PER_HOUR": "1",
        "E2E_RELAY_ADMISSION_FETCH_BURST": "4",
        "E2E_RELAY_ADMISSION_FETCH_PER_HOUR": "1",
    }
    with relay_with(relay_db, tmp_path / "relay.log", env) as proc:
        yield proc


def _from(relay: RelayProcess, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127/8 address is loopback)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=relay.url, timeout=30, transport=transport)


def _register(c: httpx.Client, name: bytes) -> None:
    Dev(c, Acct(name, CUSTOMER), 1).register_account()


def test_registration_is_limited_per_address_and_in_all(strict: RelayProcess) -> None:
    """One address registers 3 accounts, its fourth is refused 429 with a retry-after
    before its body is read; another address still registers, until the relay-wide bucket
    (5) is spent, when every address is refused (on main, 300-390 accounts/s from one
    client)."""
    with _from(strict, "127.0.0.2") as a, _from(strict, "127.0.0.3") as b:
        for i in range(3):
            _register(a, b"a%d" % i)
        with pytest.raises(Refused) as refused:
            _register(a, b"a3")
        assert (refused.value.status, refused.value.code) == (429, "rate_limited")
        r = a.post(wire.Path.ACCOUNT_REGISTER, content=b"\xa0",
                   headers={"content-type": wire.CONTENT_TYPE})  # fmt: skip
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        _register(b, b"b0")
        _register(b, b"b1")  # five in all
        with pytest.raises(Refused) as full:
            _register(b, b"b2")
        assert full.value.code == "rate_limited"
        with httpx.Client(base_url=strict.url, timeout=30) as c:
            with pytest.raises(Refused):
                _register(c, b"c0")


def _open_post(c: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return c.post(path, content=body, headers={"content-type": wire.CONTENT_TYPE})


def test_provisioning_and_recovery_fetches_are_limited_per_address(strict: RelayProcess) -> None:
    """The requests no device signs besides registration -- a new device's provisioning
    fetch and a recovery fetch -- take a token of their address's own bucket before their
    body is read: one address makes 4 (of either), then 429 with a retry-after, even with a
    body that would not decode; another address is still answered, and the spent address
    still registers (its registration bucket is another). Before, one client could make any
    number of them (each a store transaction, a recovery fetch a signature check too)."""
    fetch = wire.ProvisionFetch(os.urandom(16)).to_bytes()
    recover = wire.RecoveryFetch(b"nobody", int(time.time()), os.urandom(16), bytes(64)).to_bytes()
    with _from(strict, "127.0.0.6") as a, _from(strict, "127.0.0.7") as b:
        for _ in range(3):
            r = _open_post(a, wire.Path.PROVISION_FETCH, fetch)
            assert r.status_code == 200 and wire.Provisioned.from_bytes(r.content).sealed == b""
        r = _open_post(a, wire.Path.RECOVERY_FETCH, recover)  # the fourth: no recovery set
        assert wire.WireError.from_bytes(r.content).code == "unknown_account"
        for path, body in ((wire.Path.PROVISION_FETCH, fetch), (wire.Path.RECOVERY_FETCH, recover),
                           (wire.Path.PROVISION_FETCH, b"\xa0")):  # fmt: skip
            r = _open_post(a, path, body)
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert wire.WireError.from_bytes(r.content).code == "rate_limited"
        r = _open_post(b, wire.Path.PROVISION_FETCH, fetch)
        assert r.status_code == 200
        _register(a, b"fetcher")


def test_an_account_registers_a_limited_number_of_devices(strict: RelayProcess) -> None:
    """The fourth device of an account is refused (on main, any number: four devices made
    three times one device's claim rate); re-registering a device it holds is not."""
    with httpx.Client(base_url=strict.url, timeout=30) as c:
        first = new_device(c, b"ann", CUSTOMER)
        for device_id in (2, 3):
            Dev(c, first.acct, device_id).register()
        with pytest.raises(Refused) as refused:
            Dev(c, first.acct, 4).register()
        assert refused.value.code == "not_allowed"
        first.register()  # a retry of a device it holds


def test_prekey_claims_are_limited_and_draining_is_noticed(strict: RelayProcess) -> None:
    """One account claims 3 prekeys of another, then 429; other claimers get one-time
    prekeys until the device has handed out 4, then its last-resort bundle though one-time
    prekeys are left, and the drain shows in the metrics (on main, one client drained 200
    one-time prekeys in under a second)."""
    with _from(strict, "127.0.0.4") as c, _from(strict, "127.0.0.5") as d:
        shop = new_device(c, b"shop", BUSINESS, one_time=10)
        eve = new_device(c, b"eve", CUSTOMER)
        got = [eve.claim(b"shop", 1).one_time for _ in range(3)]
        assert got == [True] * 3
        with pytest.raises(Refused) as refused:
            eve.claim(b"shop", 1)
        assert (refused.value.status, refused.value.code) == (429, "rate_limited")
        mal = new_device(d, b"mal", CUSTOMER)
        assert mal.claim(b"shop", 1).one_time  # the device's fourth
        drained = [mal.claim(b"shop", 1).one_time for _ in range(2)]
        assert drained == [False, False]
        left = shop.call(wire.Path.PREKEY_COUNT, wire.CountPrekeys(), wire.PrekeyCount)
        assert left.one_time == 6  # what was not handed out is kept
        metrics = relay_metrics(strict.url)
        assert "e2e_relay_prekey_drains_total 2" in metrics


def test_addresses_are_counted_by_ipv4_address_or_ipv6_prefix() -> None:
    assert address_key("192.0.2.1") == bytes([192, 0, 2, 1])
    assert address_key("::ffff:192.0.2.1") == bytes([192, 0, 2, 1])
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("unix") == b"unix"
