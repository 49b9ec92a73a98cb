"""Proof suite, part 1: a whole platform workload recorded byte for byte.

3 businesses (2, 2 and 3 agent devices, one more added mid-run) x 20 customers each (a
quarter with two devices; one adds a device, one removes one), >= 10k accepted messages with
drops, reordering, redelivery and rare permanent loss. Every device is an e2e.client device
(on its own store) of the relay service (its app, handlers and SQLite store, in this process);
the relay's tap records every request and answer body, the ad service every record it was
given, and the relay's database files are read at the end; the assertions scan all of it.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import secworld as sw
from world import Service, fast_dir

from e2e.errors import E2EError
from e2e.frame import PrekeyFields, blank_header, decode_message
from e2e.keys import encode_ec
from e2e.message_key import open_, open_header
from e2e.platform import Delivery, Envelope, wire
from e2e.platform.adservice import ChatView
from e2e.platform.directory import DeviceCertificate
from e2e.platform.franking import Report
from e2e.prekeys import PrekeyBundle

MESSAGES = int(__import__("os").environ.get("E2E_WORKLOAD_MESSAGES", "10000"))


@dataclass
class Scanned:
    """The run, and one scan of every relay / ad-service record for every needle at once."""

    w: sw.World
    cap: sw.KeyCapture
    revealed: tuple[bytes, ...]
    plain: set[bytes]
    shown: set[bytes]
    secret: set[bytes]
    n_secrets: int
    relay_hits: set[bytes]
    ad_hits: set[bytes]
    relay: dict[str, Any]
    used_states: dict[tuple[bytes, int], list[bytes]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scanned]:
    d = fast_dir(tmp_path_factory.mktemp("workload"))
    try:
        yield asyncio.run(_run(d))
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def _run(d: Path) -> Scanned:
    svc = Service(d)
    w = await sw.build(svc, seed=20261126)
    cap = sw.KeyCapture()
    w.cap = cap
    with cap.active():
        await sw.run(w, MESSAGES)
    # A reporting customer reveals the last messages of one chat: the positive control.
    for c, business in w.customers:
        reporter = c[0]
        if any(not m.outgoing for m in await reporter.history(business)):
            break
    assert await reporter.report_spam(business) > 0
    [(raw,)] = svc.rows("SELECT report FROM reports")
    revealed = tuple(i.body for i in Report.from_bytes(bytes(raw)).items)
    shown = {win for text in revealed for win in sw.windows(text)}
    plain: set[bytes] = set()
    for text in w.bodies:
        if text not in revealed:
            plain.update(sw.windows(text))
    plain -= shown  # 8-byte pieces the reporter revealed may recur in other texts
    # ... and pieces of the relay's own error texts ("0 missing" of a stale device list):
    # fixed strings of the relay's, never message content (SPEC §10.7)
    own = {win for text in error_texts(svc) for win in sw.windows(text)}
    plain -= own
    secrets = set(cap.secrets)
    used_states: dict[tuple[bytes, int], list[bytes]] = {}
    for dev in w.devices():
        secrets |= sw.device_secrets(dev)
        with dev.store.transaction() as tx:
            used_states[dev.addr.wire] = [s.to_bytes() for s in sw.sessions(tx)]
    secret = sw.secret_needles(secrets)
    needles = plain | shown | secret
    relay = relay_holdings(svc)
    relay["pending"] = svc.pending()
    relay["internal"] = svc.app.counters["error:internal"]
    relay["errors"] = {f"{d.addr}:{k}": v for d in w.devices() for k, v in d.errors.items()}
    scanned = Scanned(
        w, cap, revealed, plain, shown, secret, len(secrets),
        sw.scan(relay["records"], needles), sw.scan(list(svc.ads.records), needles),
        relay, used_states,
    )  # fmt: skip
    await svc.aclose()
    return scanned


def error_texts(svc: Service) -> set[bytes]:
    """The messages of every error answer the relay sent."""
    out = set()
    for channel, body in svc.tap.records:
        if channel.startswith("send:"):
            try:
                out.add(wire.WireError.from_bytes(body).message.encode())
            except E2EError:
                continue  # not an error answer
    return out


def relay_holdings(svc: Service) -> dict[str, Any]:
    """Everything the relay received, sent and stored: the tap's bodies, its database files,
    and (for the decryption attempt) its franking keys, the device keys it registered, every
    bundle and every delivery it handed out."""
    records = [data for _, data in svc.tap.records] + svc.db_files()
    identities: dict[tuple[bytes, int], bytes] = {}
    for body in svc.tap.channel("recv:" + wire.Path.DEVICE_REGISTER):
        cert = DeviceCertificate.from_bytes(wire.RegisterDevice.from_bytes(body).certificate)
        identities[(cert.account, cert.device_id)] = cert.identity
    bundles = [bytes(b) for (b,) in svc.rows("SELECT bundle FROM prekeys")]
    bundles += [bytes(b) for (b,) in svc.rows("SELECT bundle FROM last_resort")]
    deliveries = []
    for body in svc.tap.channel("send:" + wire.Path.MAILBOX_FETCH):
        try:
            deliveries += wire.Mailbox.from_bytes(body).deliveries
        except E2EError:
            continue  # an error answer
    franking = [k.secret for k in svc.service._keys]
    return {"records": records, "identities": identities, "bundles": bundles,
            "deliveries": deliveries, "franking": franking}  # fmt: skip


def ad_records(w: sw.World) -> list[bytes]:
    return list(w.svc.ads.records)


def test_workload_shape_and_delivery(world: Scanned) -> None:
    w = world.w
    assert len(w.businesses) >= 3 and len(w.customers) >= 60
    assert sum(len(c) > 1 for c, _ in w.customers) >= 10
    assert len(w.sent) >= MESSAGES
    assert w.drops > 100 and w.redeliveries > 100
    assert w.returned_twice == 0  # no redelivered copy was accepted a second time
    assert w.refused.get("WindowClosed", 0) > 0 and w.refused.get("NotOptedIn", 0) > 0
    assert world.relay["errors"] == {} and world.relay["internal"] == 0
    assert world.relay["pending"] == 0
    delivered = 0
    for mid, (_, text) in w.sent.items():
        for dest in w.dests[mid]:
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
    assert world.revealed
    for text in world.revealed:
        assert set(sw.windows(text)) & world.relay_hits, text


def test_no_secret_in_relay_or_ad_records(world: Scanned) -> None:
    assert world.n_secrets > 50_000
    assert world.relay_hits & world.secret == set()
    assert world.ad_hits & world.secret == set()


def test_ad_service_holds_only_chat_metadata(world: Scanned) -> None:
    w = world.w
    ads = w.svc.ads
    records = ad_records(w)
    assert records
    assert all(len(r) < 200 for r in records)
    for c, b in w.customers:
        view = ads.view(b.encode(), c[0].profile.account.encode())
        assert isinstance(view, ChatView)
        if view.customer in ads.audience(b.encode()):
            assert view.opted_in and not view.blocked and not view.limited


def test_relay_cannot_decrypt_with_everything_it_holds(world: Scanned) -> None:
    """Every 32-byte value the relay holds about a message (public keys from the directory,
    frame and envelope fields, its own franking keys) fails as header key and message key."""
    rng = random.Random(7)
    relay = world.relay
    identities: dict[tuple[bytes, int], bytes] = relay["identities"]
    directory: list[bytes] = list(relay["franking"]) + list(identities.values())
    for raw in relay["bundles"]:
        b = PrekeyBundle.from_bytes(raw)
        directory += [b.identity_key, b.spk] + ([b.opk] if b.opk else [])
    tried = 0
    for raw in rng.sample(relay["deliveries"], 150):
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
    cap = world.cap
    assert sum(len(v) for v in cap.used_by.values()) > 20_000
    checked = 0
    for dev, states in world.used_states.items():
        used = cap.used_by.get(dev, set())
        checked += len(states)
        assert sw.scan(states, sw.secret_needles(used)) == set(), dev
    assert checked > 200
