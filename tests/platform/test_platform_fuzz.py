"""Every platform entry point that takes bytes raises only E2EError subclasses on any input,
and a rejected input changes nothing."""

from __future__ import annotations

from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.clock import ManualClock
from e2e.errors import E2EError
from e2e.platform import AdService, Business, Customer, Delivery, Relay


@cache
def world():  # type: ignore[no-untyped-def]
    ads = AdService()
    relay = Relay(clock=ManualClock(), ad_service=ads)
    shop = Business("shop", relay)
    shop.add_device()
    alice = Customer("alice", relay)
    alice.add_device()
    alice.device.send(b"shop", "hi")
    shop.device.sync()
    shop.device.send(b"alice", "a genuine reply")
    raw = relay.fetch(alice.device.addr)[-1]
    return relay, ads, shop, alice, raw


def state(dev) -> list[bytes]:  # type: ignore[no-untyped-def]
    pk = dev.prekeys
    return [s.to_bytes() for k in sorted(dev.sessions) for s in dev.sessions[k]] + [
        repr(sorted(pk.used_one_time)).encode(),
        repr(sorted(pk.used_kem)).encode(),
    ]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_device_receive_random_bytes(data: bytes) -> None:
    _, _, _, alice, _ = world()
    before = state(alice.device)
    try:
        alice.device.receive(data)
    except E2EError:
        pass
    assert state(alice.device) == before


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 255), st.booleans())
def test_device_receive_mutated_delivery(pos: int, xor: int, inner: bool) -> None:
    relay, _, _, alice, raw = world()
    d = Delivery.from_bytes(raw)
    if inner:  # mutate the envelope (all of it is checked by the device)
        env = bytearray(d.envelope)
        env[pos % len(env)] ^= xor
        data = Delivery(bytes(env), d.received_at, d.tag, d.seq).to_bytes()
    else:
        buf = bytearray(raw)
        buf[pos % len(buf)] ^= xor
        data = bytes(buf)
    before = state(alice.device)
    try:
        msg = alice.device.receive(data)
    except E2EError:
        assert state(alice.device) == before
        return
    # Only the relay's own fields (time, tag, sequence number) are not end-to-end checked.
    assert not inner and msg.body == b"a genuine reply"
    alice.device.sessions.clear()
    alice.device.seen.clear()
    world.cache_clear()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=3), st.binary(max_size=200))
def test_relay_entry_points_random_bytes(envelopes: list[bytes], blob: bytes) -> None:
    relay, ads, shop, alice, _ = world()
    pending = relay.pending()
    for call in (
        lambda: relay.submit(alice.device.addr, envelopes),
        lambda: relay.report(b"alice", blob),
        lambda: relay.register_device(blob),
        lambda: relay.upload_prekeys(b"alice", 1, [blob], blob),
        lambda: ads.receive(blob),
    ):
        try:
            call()
        except E2EError:
            pass
    assert relay.pending() == pending
