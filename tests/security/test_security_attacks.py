"""Proof suite, part 2: forward secrecy, post-compromise security, replay, tamper,
re-addressing, impersonation and PQ-to-classical downgrade, through the platform."""

from __future__ import annotations

import cbor2
import pytest
import secworld as sw

from e2e import KeyPair, PrekeyBundle, Session
from e2e.clock import ManualClock
from e2e.errors import (
    AuthenticationFailed,
    DecodeError,
    DuplicateMessage,
    DuplicateSubmission,
    E2EError,
    ReportRejected,
    SuiteMismatch,
    UnknownSuite,
    UntrustedDevice,
)
from e2e.frame import K
from e2e.platform import Business, Customer, Delivery, Envelope, Relay
from e2e.platform.franking import Report, ReportItem


def world() -> tuple[Relay, Business, Customer]:
    relay = Relay(clock=ManualClock())
    shop = Business("shop", relay)
    shop.add_device()
    shop.add_device()
    alice = Customer("alice", relay)
    alice.add_device()
    alice.pin(shop)
    alice.device.send(b"shop", "hello")
    for a in shop.agents:
        a.sync()
    return relay, shop, alice


def state(dev) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [s.to_bytes() for k in sorted(dev.sessions) for s in dev.sessions[k]]


def test_forward_secrecy_snapshot_decrypts_nothing_earlier() -> None:
    relay, shop, alice = world()
    agent, phone = shop.agents[0], alice.device
    cap = sw.KeyCapture()
    frames: list[bytes] = []
    with cap.active():
        for i in range(12):
            agent.send(b"alice", f"message number {i}")
            frames.append(relay.fetch(phone.addr)[-1])
            if i % 4 == 3:
                phone.send(b"shop", f"ack {i}")  # DH ratchet steps in between
        for raw in reversed(frames):  # out of order
            phone.receive(raw)
            relay.ack(phone.addr, [Delivery.from_bytes(raw).seq])
    session = phone.sessions[agent.addr][0]
    snapshot = session.to_bytes()
    stolen = Session.from_bytes(snapshot)
    for raw in frames:
        with pytest.raises(E2EError):
            stolen.decrypt(Envelope.from_bytes(Delivery.from_bytes(raw).envelope).frame)
    assert cap.used
    for key in cap.used:
        assert key not in snapshot


def test_post_compromise_clone_stops_after_one_dh_round_trip() -> None:
    relay, shop, alice = world()
    agent, phone = shop.agents[0], alice.device

    def frame_for(dev) -> bytes:  # type: ignore[no-untyped-def]
        raw = relay.fetch(dev.addr)[-1]
        relay.ack(dev.addr, [Delivery.from_bytes(raw).seq])
        return Envelope.from_bytes(Delivery.from_bytes(raw).envelope).frame

    agent.send(b"alice", "before")
    phone.sync()
    clone = Session.from_bytes(phone.sessions[agent.addr][0].to_bytes())  # attacker's copy
    agent.send(b"alice", "still readable by the clone")
    f1 = frame_for(phone)
    assert clone.decrypt(f1) == phone.sessions[agent.addr][0].decrypt(f1)
    phone.send(b"shop", "reply on the ratchet key the attacker also holds")
    for a in shop.agents:
        a.sync()
    agent.send(b"alice", "agent ratchets, but against that same compromised key")
    f2 = frame_for(phone)
    assert clone.decrypt(f2) == phone.sessions[agent.addr][0].decrypt(f2)
    # The round trip: the phone has now drawn a fresh ratchet key the clone does not know,
    # sends with it, and the agent's next message is keyed from it.
    phone.send(b"shop", "honest reply with a fresh ratchet key")
    for a in shop.agents:
        a.sync()
    agent.send(b"alice", "after the round trip")
    f3 = frame_for(phone)
    with pytest.raises(AuthenticationFailed):
        clone.decrypt(f3)
    assert phone.sessions[agent.addr][0].decrypt(f3)


def test_replay_of_delivery_and_resubmission() -> None:
    relay, shop, alice = world()
    agent = shop.agents[0]
    agent.send(b"alice", "once")
    raw = relay.fetch(alice.device.addr)[-1]
    alice.device.receive(raw)
    before = state(alice.device)
    with pytest.raises(DuplicateMessage):
        alice.device.receive(raw)
    assert state(alice.device) == before
    envs = [r for ch, r in relay.recorder.records if ch == "recv:envelope"][-2:]
    with pytest.raises(DuplicateSubmission):
        relay.submit(agent.addr, envs)


def test_tamper_any_byte_of_envelope_rejected_state_unchanged() -> None:
    relay, shop, alice = world()
    shop.agents[1].send(b"alice", "tamper me")
    raw = relay.fetch(alice.device.addr)[-1]
    d = Delivery.from_bytes(raw)
    before = state(alice.device)
    for i in range(len(d.envelope)):
        forged = bytearray(d.envelope)
        forged[i] ^= 0x80
        with pytest.raises(E2EError):
            alice.device.receive(Delivery(bytes(forged), d.received_at, d.tag, d.seq).to_bytes())
        assert state(alice.device) == before
    assert alice.device.receive(raw).body == b"tamper me"
    # A forged franking tag is accepted by the device but refused in a report.
    bad = Delivery(d.envelope, d.received_at, bytes(32), d.seq).to_bytes()
    msg = alice.device.conversation(b"shop")[-1]
    report = Report(b"alice", b"shop", (ReportItem(bad, msg.franking_key, msg.body),))
    with pytest.raises(ReportRejected):
        relay.report(b"alice", report.to_bytes())
    forged_text = Report(b"alice", b"shop", (ReportItem(raw, msg.franking_key, b"other"),))
    with pytest.raises(ReportRejected):
        relay.report(b"alice", forged_text.to_bytes())
    good = Report(b"alice", b"shop", (ReportItem(raw, msg.franking_key, msg.body),))
    assert relay.report(b"alice", good.to_bytes())[0].body == b"tamper me"


def test_readdressed_frame_fails_on_other_device() -> None:
    relay, shop, alice = world()
    alice.device.send(b"shop", "for agent 1 only")
    raw = relay.fetch(shop.agents[0].addr)[-1]
    env = Envelope.from_bytes(Delivery.from_bytes(raw).envelope)
    target = shop.agents[1]
    moved = Envelope(env.cls, env.from_account, env.from_device, env.to_account,
                     target.addr[0], target.addr[1], env.message_id, env.commitment,
                     env.frame)  # fmt: skip
    before = state(target)
    with pytest.raises(E2EError):
        target.receive(Delivery(moved.to_bytes(), 0, bytes(32), 1).to_bytes())
    with pytest.raises(E2EError):  # unchanged envelope, wrong mailbox
        target.receive(raw)
    assert state(target) == before


def test_impersonation_with_only_the_victims_identity_key() -> None:
    relay, shop, alice = world()
    victim = alice.device
    agent = shop.agents[0]
    mallory = KeyPair.generate()
    # Claims the victim's identity public key but cannot compute DH with its private key.
    fake = KeyPair.from_stored(mallory.private_bytes(), victim.identity.public)
    bundle = PrekeyBundle.from_bytes(relay.fetch_bundle(*agent.addr))
    frame = Session.initiate(fake, bundle).encrypt(b"I am alice")
    before = state(agent)
    with pytest.raises(AuthenticationFailed):
        Session.respond(agent.identity, agent.prekeys, frame)
    # Through the relay, as a fresh session from alice's device: refused the same way.
    import os

    env = Envelope(sw.MessageClass.SERVICE, b"alice", victim.device_id, b"shop", *agent.addr,
                   os.urandom(16), bytes(32), frame)  # fmt: skip
    with pytest.raises(AuthenticationFailed):
        agent.receive(Delivery(env.to_bytes(), 0, bytes(32), 1).to_bytes())
    # With her own (uncertified) identity she is not alice's device at all.
    honest_frame = Session.initiate(mallory, bundle).encrypt(b"I am alice")
    env2 = Envelope(sw.MessageClass.SERVICE, b"alice", victim.device_id, b"shop", *agent.addr,
                    os.urandom(16), bytes(32), honest_frame)  # fmt: skip
    with pytest.raises(UntrustedDevice):
        agent.receive(Delivery(env2.to_bytes(), 0, bytes(32), 1).to_bytes())
    assert state(agent) == before


def test_pq_to_classical_downgrade_refused() -> None:
    """There is no classical frame suite to fall back to: suite id 1 (libsignal's schedule in
    e2e frames, retired) is unknown, so a relabelled bundle or message is refused outright."""
    relay, shop, alice = world()
    agent = shop.agents[0]
    raw = relay.fetch_bundle(*agent.addr)
    fields = cbor2.loads(raw)
    stripped = {k: v for k, v in fields.items() if k not in (K.KEM_ID, K.KEM_PK, K.KEM_SIG)}
    for relabelled in (stripped, fields):
        forged = cbor2.dumps(dict(sorted({**relabelled, K.SUITE: 1}.items())))
        with pytest.raises(UnknownSuite):
            Session.initiate(alice.device.identity, forged)
        with pytest.raises(UnknownSuite):
            PrekeyBundle.from_bytes(forged)
    # A PQ initial message relabelled as suite 1 (KEM fields stripped or not): refused.
    frame = Session.initiate(KeyPair.generate(), raw).encrypt(b"x")
    mfields = cbor2.loads(frame)
    for drop in ((), (K.KEM_ID, K.KEM_CT)):
        kept = {k: v for k, v in mfields.items() if k not in drop}
        forged = cbor2.dumps(dict(sorted({**kept, K.SUITE: 1}.items())))
        with pytest.raises(UnknownSuite):
            Session.respond(agent.identity, agent.prekeys, forged)
    with pytest.raises((DecodeError, SuiteMismatch)):
        Session.respond(agent.identity, agent.prekeys, frame[:-1])
