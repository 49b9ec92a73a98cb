"""Proof suite, part 1: a whole platform workload recorded byte for byte.

3 businesses (2, 2 and 3 agent devices, one more added mid-run) x 20 customers each (a
quarter with two devices; one adds a device, one removes one), >= 10k accepted messages with
drops, reordering, redelivery and rare permanent loss. The relay and the ad service record
every byte they receive or store; the assertions scan those recordings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest
import secworld as sw

from e2e.errors import E2EError
from e2e.frame import PrekeyFields, blank_header, decode_message
from e2e.keys import encode_ec
from e2e.message_key import open_, open_header
from e2e.platform import Delivery, Envelope
from e2e.platform.adservice import ChatView
from e2e.platform.directory import DeviceCertificate
from e2e.prekeys import PrekeyBundle

MESSAGES = 10_000


@dataclass
class Scanned:
    """The run, and one scan of every relay / ad-service record for every needle at once."""

    w: sw.World
    cap: sw.KeyCapture
    verified: tuple[Any, ...]
    plain: set[bytes]
    shown: set[bytes]
    secret: set[bytes]
    n_secrets: int
    relay_hits: set[bytes]
    ad_hits: set[bytes]


@pytest.fixture(scope="module")
def world() -> Scanned:
    w = sw.build(seed=20261126)
    cap = sw.KeyCapture()
    w.cap = cap
    with cap.active():
        sw.run(w, MESSAGES)
    # A reporting customer reveals the last messages of one chat: the positive control.
    reporter, business = next(
        (c, b) for c, b in w.customers if any(not m.outgoing for m in c.device.conversation(b.name))
    )
    verified = reporter.report_spam(business)
    revealed = {v.body for v in verified}
    shown = {win for text in revealed for win in sw.windows(text)}
    plain: set[bytes] = set()
    for text in w.bodies:
        if text not in revealed:
            plain.update(sw.windows(text))
    plain -= shown  # 8-byte pieces the reporter revealed may recur in other texts
    secrets = set(cap.secrets)
    for dev in w.devices():
        secrets |= sw.device_secrets(dev)
    secret = sw.secret_needles(secrets)
    needles = plain | shown | secret
    return Scanned(
        w,
        cap,
        verified,
        plain,
        shown,
        secret,
        len(secrets),
        sw.scan(relay_records(w), needles),
        sw.scan(ad_records(w), needles),
    )


def relay_records(w: sw.World) -> list[bytes]:
    return [d for _, d in w.relay.recorder.records] + w.relay.stored_bytes()


def ad_records(w: sw.World) -> list[bytes]:
    return list(w.ads.records)


def test_workload_shape_and_delivery(world: Scanned) -> None:
    w = world.w
    assert len(w.businesses) >= 3 and len(w.customers) >= 60
    assert sum(len(c.devices) > 1 for c, _ in w.customers) >= 10
    assert len(w.sent) >= MESSAGES
    assert w.drops > 100 and w.redeliveries > 100 and w.duplicates_rejected >= w.redeliveries
    assert w.refused.get("WindowClosed", 0) > 0 and w.refused.get("NotOptedIn", 0) > 0
    assert w.errors == []
    assert w.relay.pending() == 0
    delivered = 0
    for mid, (_, text, dests) in w.sent.items():
        for dest in dests:
            if dest in w.removed or (mid, dest) in w.lost:
                continue
            got = w.received.get(dest, {}).get(mid)
            if got is None:
                # A device added after this message was sent is not one of its destinations.
                pytest.fail(f"message not delivered to {dest!r}")
            assert got == text
            delivered += 1
    assert delivered > 2 * MESSAGES


def test_no_plaintext_in_relay_or_ad_records(world: Scanned) -> None:
    assert len(world.plain) > 10_000
    assert world.relay_hits & world.plain == set()
    assert world.ad_hits & world.plain == set()
    # Positive control: the scan does find the texts the reporter chose to reveal.
    assert world.verified
    for v in world.verified:
        assert set(sw.windows(v.body)) & world.relay_hits, v.body


def test_no_secret_in_relay_or_ad_records(world: Scanned) -> None:
    assert world.n_secrets > 50_000
    assert world.relay_hits & world.secret == set()
    assert world.ad_hits & world.secret == set()


def test_ad_service_holds_only_chat_metadata(world: Scanned) -> None:
    w = world.w
    records = ad_records(w)
    assert records
    assert all(len(r) < 200 for r in records)
    views = [w.ads.view(b.name, c.name) for c, b in w.customers]
    assert all(isinstance(v, ChatView) for v in views)
    for c, b in w.customers:
        if c.name in w.ads.audience(b.name):
            view = w.ads.view(b.name, c.name)
            assert view is not None and view.opted_in and not view.blocked and not view.limited


def test_relay_cannot_decrypt_with_everything_it_holds(world: Scanned) -> None:
    """Every 32-byte value the relay holds about a message (public keys from the directory,
    frame and envelope fields, its own franking key) fails as header key and message key."""
    w = world.w
    rng = random.Random(7)
    directory: list[bytes] = [w.relay._frank_key]
    identities: dict[tuple[bytes, int], bytes] = {}
    for ch, raw in w.relay.recorder.records:
        if ch == "store:device":
            cert = DeviceCertificate.from_bytes(raw)
            identities[(cert.account, cert.device_id)] = cert.identity
            directory.append(cert.identity)
        elif ch == "store:bundle":
            b = PrekeyBundle.from_bytes(raw)
            directory += [b.identity_key, b.spk] + ([b.opk] if b.opk else [])
    mailbox = [raw for ch, raw in w.relay.recorder.records if ch == "store:mailbox"]
    tried = 0
    for raw in rng.sample(mailbox, 150):
        d = Delivery.from_bytes(raw)
        env = Envelope.from_bytes(d.envelope)
        frame = decode_message(env.frame)
        ids = (identities[env.sender], identities[env.dest])
        candidates = set(directory) | {env.commitment, d.tag, frame.body[:32], frame.header[12:44]}
        pk = frame.prekey
        if isinstance(pk, PrekeyFields):
            candidates |= {pk.identity_key, pk.base_key}
        for ad in (encode_ec(ids[0]) + encode_ec(ids[1]), encode_ec(ids[1]) + encode_ec(ids[0])):
            for key in candidates:
                assert open_header(key, ad, frame.header) is None
                with pytest.raises(E2EError):  # as the body's AES-256-GCM key, past MC
                    body_ad = ad + blank_header(frame.ad_prefix, len(frame.body))
                    open_(key + key, key, frame.header[:12], body_ad, frame.body)
                tried += 1
    assert tried > 10_000


def test_used_keys_absent_from_serialized_state(world: Scanned) -> None:
    """Forward secrecy at rest: no chain key a device already stepped and no message key that
    already opened a message for it appears in any of its serialized sessions."""
    w = world.w
    cap = world.cap
    assert sum(len(v) for v in cap.used_by.values()) > 20_000
    checked = 0
    for dev in w.devices():
        used = cap.used_by.get(dev.addr, set())
        states = [s.to_bytes() for ss in dev.sessions.values() for s in ss]
        checked += len(states)
        assert sw.scan(states, sw.secret_needles(used)) == set(), dev
    assert checked > 200
