"""Relay policy from metadata alone: windows, templates, marketing, controls, billing,
routing and device-list changes. Every refusal is a typed PolicyError and stores nothing."""

from __future__ import annotations

import pytest

from e2e.clock import ManualClock
from e2e.errors import (
    Blocked,
    DecodeError,
    Limited,
    NoPriorContact,
    NotAllowed,
    NotOptedIn,
    PolicyError,
    StaleDeviceList,
    WindowClosed,
)
from e2e.platform import (
    AdService,
    Business,
    Customer,
    Envelope,
    MessageClass,
    PolicyConfig,
    PriceTable,
    Relay,
)

S, T, M = MessageClass.SERVICE, MessageClass.TEMPLATE, MessageClass.MARKETING
HOUR = 3600


def make(config: PolicyConfig | None = None, agents: int = 2, devices: int = 1):  # type: ignore[no-untyped-def]
    clock = ManualClock()
    ads = AdService()
    relay = Relay(config, clock=clock, ad_service=ads)
    shop = Business("shop", relay)
    for _ in range(agents):
        shop.add_device()
    alice = Customer("alice", relay)
    for _ in range(devices):
        alice.add_device()
    return clock, relay, ads, shop, alice


def sessions_of(dev) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [s.to_bytes() for k in sorted(dev.sessions) for s in dev.sessions[k]]


def refused(relay: Relay, dev, to: bytes, cls: MessageClass, err: type[PolicyError]) -> None:  # type: ignore[no-untyped-def]
    pending, before = relay.pending(), sessions_of(dev)
    with pytest.raises(err):
        dev.send(to, "x", cls)
    assert relay.pending() == pending  # nothing stored
    assert sessions_of(dev) == before  # no message key spent


def test_no_business_initiated_contact() -> None:
    _, relay, _, shop, _ = make()
    for cls in (S, T, M):
        refused(relay, shop.device, b"alice", cls, NoPriorContact)
    assert relay.refusals["NoPriorContact"] == 3


def test_window_opens_closes_and_resets() -> None:
    clock, relay, _, shop, alice = make()
    alice.device.send(b"shop", "hi")
    shop.device.send(b"alice", "hello")
    clock.advance(24 * HOUR - 1)
    shop.device.send(b"alice", "still open")
    clock.advance(1)
    refused(relay, shop.device, b"alice", S, WindowClosed)
    shop.device.send(b"alice", "template is fine", T)
    alice.device.send(b"shop", "me again")
    shop.device.send(b"alice", "window reset")
    assert relay.window_open(b"shop", b"alice")


def test_billing_with_a_configurable_price_table() -> None:
    prices = PriceTable(service=1, template=50, template_in_window=5, marketing=100)
    clock, relay, _, shop, alice = make(PolicyConfig(prices=prices, window_seconds=HOUR))
    alice.device.send(b"shop", "hi")
    alice.opt_in(shop)
    assert shop.device.send(b"alice", "a").price == 1
    assert shop.device.send(b"alice", "b", T).price == 5
    assert shop.device.send(b"alice", "c", M).price == 100
    clock.advance(HOUR)
    refused(relay, shop.device, b"alice", S, WindowClosed)
    assert shop.device.send(b"alice", "d", T).price == 50
    bill = relay.bill(b"shop")
    assert {(line.item, line.count, line.unit_price) for line in bill.lines} == {
        ("service", 1, 1),
        ("template (in window)", 1, 5),
        ("template (outside window)", 1, 50),
        ("marketing", 1, 100),
    }
    assert bill.total == 156
    assert relay.bill(b"alice").total == 0  # customers are never billed


def test_marketing_needs_opt_in_and_no_block_or_limit() -> None:
    _, relay, ads, shop, alice = make()
    alice.device.send(b"shop", "hi")
    refused(relay, shop.device, b"alice", M, NotOptedIn)
    assert ads.audience(b"shop") == []
    alice.opt_in(shop)
    assert ads.audience(b"shop") == [b"alice"]
    shop.device.send(b"alice", "sale", M)
    alice.limit(shop)
    assert ads.audience(b"shop") == []
    refused(relay, shop.device, b"alice", M, Limited)
    alice.limit(shop, False)
    alice.block(shop)
    assert ads.audience(b"shop") == []
    for cls in (S, T, M):
        refused(relay, shop.device, b"alice", cls, Blocked)
    alice.block(shop, False)
    shop.device.send(b"alice", "welcome back")


def test_limit_caps_templates() -> None:
    clock, relay, _, shop, alice = make(PolicyConfig(limited_templates=2))
    alice.device.send(b"shop", "hi")
    alice.limit(shop)
    shop.device.send(b"alice", "service still fine")
    shop.device.send(b"alice", "t1", T)
    shop.device.send(b"alice", "t2", T)
    refused(relay, shop.device, b"alice", T, Limited)
    clock.advance(24 * HOUR)
    shop.device.send(b"alice", "t3 next day", T)


def test_roles_that_may_not_talk() -> None:
    _, relay, _, shop, alice = make()
    bob = Customer("bob", relay)
    bob.add_device()
    other = Business("other", relay)
    other.add_device()
    with pytest.raises(NotAllowed):
        alice.device.send(b"bob", "hi")
    with pytest.raises(NotAllowed):
        shop.device.send(b"other", "hi")
    with pytest.raises(NotAllowed):
        alice.device.send(b"shop", "hi", T)
    with pytest.raises(NotAllowed):
        relay.block(b"shop", b"alice")


def test_batch_must_cover_exactly_the_current_devices() -> None:
    _, relay, _, shop, alice = make(agents=2, devices=2)
    alice.device.send(b"shop", "hi")
    # A hand-made batch that leaves out one agent is refused with the difference.
    agent2 = shop.agents[1]
    dev = alice.device
    envs = []
    for dest in [(b"shop", 1), (b"alice", 2)]:
        frame = dev._session_for(dest).encrypt(b"\x00" * 128)
        envs.append(
            Envelope(S, b"alice", 1, b"shop", *dest, bytes(16), bytes(32), frame).to_bytes()
        )
    with pytest.raises(StaleDeviceList) as info:
        relay.submit(dev.addr, envs)
    assert info.value.missing == [agent2.addr] and info.value.extra == []
    with pytest.raises(NotAllowed):
        relay.submit((b"alice", 2), envs)  # envelopes claim another sender device
    with pytest.raises(DecodeError):
        relay.submit(dev.addr, [])


def test_device_list_changes_are_followed() -> None:
    _, relay, _, shop, alice = make(agents=2, devices=1)
    alice.device.send(b"shop", "hi")
    for a in shop.agents:
        a.sync()
    shop.device.send(b"alice", "one")
    tablet = alice.add_device()
    # The agent's cached list is stale: the relay says so, it refreshes and re-sends.
    receipt = shop.device.send(b"alice", "two")
    assert receipt.copies == 3  # alice 1, alice 2 (new), other agent
    assert [m.body for m in tablet.sync()] == [b"two"]
    assert [m.body for m in alice.device.sync()] == [b"one", b"two"]
    shop.remove_device(2)
    assert alice.device.send(b"shop", "after removal").copies == 2  # agent 1 + tablet
    assert (b"shop", 2) not in alice.device.sessions
    assert relay.refusals["StaleDeviceList"] == 2
