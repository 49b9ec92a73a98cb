"""Device authentication and bad input: refused with the right status, and nothing changes."""

from __future__ import annotations

import os
import time

import httpx
import pytest
from relayhelp import Dev, Refused, RelayProcess, new_device, relay_metrics

from e2e.keys import KeyPair
from e2e.platform import wire
from e2e.platform.policy import MessageClass

CUSTOMER, BUSINESS = 0, 1


def _status(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, wire.WireError.from_bytes(r.content).code


def _pair(client: httpx.Client) -> tuple[Dev, Dev]:
    return new_device(client, b"cust", CUSTOMER), new_device(client, b"biz", BUSINESS)


def test_wrong_key_replay_expiry_and_foreign_mailbox(client: httpx.Client) -> None:
    cust, biz = _pair(client)
    envs = cust.envelopes(b"biz", [biz.addr], MessageClass.SERVICE)
    body = wire.Submit(tuple(envs)).to_bytes()
    path = wire.Path.MESSAGE_SUBMIT
    # No header, garbage header, another key.
    assert _status(cust.raw(path, body, auth=None)) == (401, "unauthenticated")
    assert _status(cust.raw(path, body, auth="E2E-Device !!")) == (401, "unauthenticated")
    forged = wire.sign_request(KeyPair.generate(), b"cust", 1, "POST", path, body, int(time.time()))
    assert _status(cust.raw(path, body, auth=forged)) == (401, "unauthenticated")
    # Signed for another body or path.
    other = cust.sign(path, body + b"")
    assert _status(cust.raw(wire.Path.MESSAGE_PRECHECK, body, auth=other))[0] == 401
    # Expired and future timestamps.
    old = cust.sign(path, body, int(time.time()) - 400)
    assert _status(cust.raw(path, body, auth=old)) == (401, "unauthenticated")
    future = cust.sign(path, body, int(time.time()) + 400)
    assert _status(cust.raw(path, body, auth=future)) == (401, "unauthenticated")
    assert biz.fetch().deliveries == ()  # nothing was delivered by any of those
    # A good request once; its exact replay is refused.
    header = cust.sign(path, body)
    assert cust.raw(path, body, auth=header).status_code == 200
    assert _status(cust.raw(path, body, auth=header)) == (401, "unauthenticated")
    assert len(biz.fetch().deliveries) == 1
    # Another device's mailbox.
    fetch = wire.Fetch(b"biz", 1).to_bytes()
    assert _status(cust.raw(wire.Path.MAILBOX_FETCH, fetch)) == (403, "forbidden")
    ack = wire.Ack(b"biz", 1, (1, 2, 3)).to_bytes()
    assert _status(cust.raw(wire.Path.MAILBOX_ACK, ack)) == (403, "forbidden")
    assert len(biz.fetch().deliveries) == 1
    # An envelope naming another sender.
    spoof = biz.envelopes(b"cust", [cust.addr], MessageClass.SERVICE)
    r = cust.raw(path, wire.Submit(tuple(spoof)).to_bytes())
    assert _status(r) == (403, "forbidden")


def test_device_registration_needs_the_account_key(client: httpx.Client) -> None:
    cust = new_device(client, b"acct", CUSTOMER)
    rogue = Dev(client, cust.acct, 2)
    rogue.acct = type(cust.acct)(b"acct", CUSTOMER, 0, KeyPair.generate())  # not the account key
    with pytest.raises(Refused) as exc:
        rogue.register()
    assert exc.value.status == 400 and exc.value.code == "invalid_signature"
    assert len(cust.devices(b"acct").certificates) == 1


def test_malformed_and_oversized_bodies(client: httpx.Client) -> None:
    cust, biz = _pair(client)
    path = wire.Path.MESSAGE_SUBMIT
    good = wire.Submit(tuple(cust.envelopes(b"biz", [biz.addr], MessageClass.SERVICE)))
    raw = good.to_bytes()
    noncanon = raw[:1] + b"\x18\x00" + raw[2:]  # version 0 as a non-shortest uint
    cases = [b"", b"\xff", b"\xa1\x00\x01", noncanon, raw + b"\x00", b"\xbf\x00\x01\xff"]
    for body in cases:
        status, code = _status(cust.raw(path, body))
        assert status == 400, (body[:8], status, code)
    big = b"\x00" * (wire.MAX_REQUEST_BYTES + 1)
    assert _status(cust.raw(path, big))[0] == 413
    assert _status(cust.raw("/v1/nothing", raw))[0] == 404
    assert client.get(path).status_code == 404
    assert biz.fetch().deliveries == ()


def test_account_registration_conflict_and_retry(client: httpx.Client) -> None:
    dev = new_device(client, b"same", CUSTOMER)
    dev.register_account()  # a retry of the same registration
    other = Dev(client, type(dev.acct)(b"same", CUSTOMER), 1)
    with pytest.raises(Refused) as exc:
        other.register_account()
    assert (exc.value.status, exc.value.code) == (409, "conflict")
    bad = wire.RegisterAccount(b"x", 0, dev.acct.identity.public, 0, os.urandom(64))
    r = dev.raw(wire.Path.ACCOUNT_REGISTER, bad.to_bytes(), auth=None)
    assert _status(r) == (400, "invalid_signature")


@pytest.mark.parametrize("relay_db", ["sqlite"], indirect=True)
def test_rate_limit(relay_db: str, tmp_path: object) -> None:
    proc = RelayProcess(relay_db, extra=["--rate", "1", "--burst", "5"]).start()
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as c:
            dev = new_device(c, b"fast", CUSTOMER)  # 3 requests
            codes = []
            for _ in range(6):
                try:
                    dev.call(wire.Path.PREKEY_COUNT, wire.CountPrekeys(), wire.PrekeyCount)
                    codes.append(200)
                except Refused as exc:
                    codes.append(exc.status)
            assert 429 in codes and codes[0] == 200
            body = wire.CountPrekeys().to_bytes()
            r = dev.raw(wire.Path.PREKEY_COUNT, body)
            assert r.status_code == 429 and r.headers["retry-after"] == "1"  # SPEC §10.7
            metrics = relay_metrics(proc.url)
            assert 'e2e_relay_refused_total{code="rate_limited"}' in metrics
    finally:
        proc.stop()


def test_a_device_rekeyed_or_removed_through_another_process(relay_db: str) -> None:
    """A relay process remembers device keys to check signatures before any store work; a
    key changed through another relay process must count there at once: the old key is
    refused (401, nothing delivered), the new key is accepted on its first request, and a
    removed device is refused."""
    a = RelayProcess(relay_db).start()
    b = RelayProcess(relay_db).start()
    try:
        with (
            httpx.Client(base_url=a.url, timeout=30) as ca,
            httpx.Client(base_url=b.url, timeout=30) as cb,
        ):
            biz = new_device(ca, b"biz", BUSINESS)
            cust = new_device(ca, b"cust", CUSTOMER)
            second = Dev(ca, cust.acct, 2)
            second.register()
            for dev in (cust, second):  # relay b now knows both devices' keys
                dev.http = cb
                dev.call(wire.Path.PREKEY_COUNT, wire.CountPrekeys(), wire.PrekeyCount)
            rekeyed = Dev(ca, cust.acct, 1)  # device 1 again, with a new identity key
            rekeyed.register()
            rekeyed.remove(2)
            rekeyed.http = cb

            with pytest.raises(Refused) as old:
                cust.submit(cust.envelopes(b"biz", [biz.addr], MessageClass.SERVICE))
            assert old.value.status == 401
            with pytest.raises(Refused) as removed:
                second.call(wire.Path.PREKEY_COUNT, wire.CountPrekeys(), wire.PrekeyCount)
            assert removed.value.status == 401
            assert biz.fetch().deliveries == ()

            rekeyed.submit(rekeyed.envelopes(b"biz", [biz.addr], MessageClass.SERVICE))
            assert len(biz.fetch().deliveries) == 1
    finally:
        a.stop()
        b.stop()
