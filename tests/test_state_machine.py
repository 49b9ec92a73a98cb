"""Stateful adversarial test of a two-party session (issue 6.1).

A hypothesis ``RuleBasedStateMachine`` drives Alice (initiator) and Bob (responder) of one
session, for suite 3, through: send, burst (many sends), deliver the oldest
undelivered message, deliver any message ever sent (reorder, delayed delivery, replay),
drop, tamper, snapshot, restore, crash-and-reload and a ping-pong of fresh messages.
The ratchet limits are patched to small values (MAX_SKIP = 6,
MAX_STORED_SKIPPED=8, MAX_RECEIVER_CHAINS=3, MAX_SKIPPED_AGE=10) so that skipping too far,
evicting stored keys, expiring old keys and dropping old receiving chains all happen within
a few dozen steps.

The model
---------
Every sent message has a *slot* ``(sender ratchet public key, N)`` plus the sender's PN
at send time. Each party's *lineage* (what its current state has seen) is modelled as:

* sending side: ratchet public key, Ns and PN (a DH ratchet step on receipt of a new
  remote key sets PN = Ns, Ns = 0 and a fresh key);
* receiving side: the remote chains in the order they were first received (the last is
  current; only the last MAX_RECEIVER_CHAINS are retained, older ones are *dropped* with
  their stored keys), Nr of the current chain, and the stored skipped slots in insertion
  order (new ones appended: first those of the old chain up to PN, then those of the new
  chain below N; the oldest are evicted beyond MAX_STORED_SKIPPED).

Delivering a message's exact bytes must then give:

* slot stored as skipped -> decrypts to its plaintext (and the slot is removed);
* current chain, N >= Nr -> decrypts, unless N - Nr > MAX_SKIP: TooManySkipped;
* current chain with N < Nr, or a retained old chain -> DuplicateMessage (a replay, or a
  key discarded by eviction);
* a dropped chain -> some DecryptError;
* an unseen ratchet key -> a DH ratchet step and decryption, unless N > MAX_SKIP:
  TooManySkipped; the previous chain's keys are stored only up to the frame's budget
  (Nr + MAX_SKIP - N), the rest are abandoned (DuplicateMessage later).

So every untampered message within the limits decrypts exactly once, to its plaintext;
every rejection (all tampered frames included) raises an E2EError and leaves the
serialized state byte-identical. After every step the implementation's ratchet state must
equal the model: keys, counters, chain list and the skipped slots in order, so the stored
skipped keys and chains stay within their bounds.

Persistence, crash and restore
------------------------------
After every successful encrypt or decrypt a party *persists* ``Session.to_bytes()`` (the
store rule: persist before the frame leaves / after a frame is accepted). A *crash*
replaces the live session by ``Session.from_bytes`` of the persisted bytes: nothing that
was acknowledged is lost, so the reloaded state equals the live one byte for byte.

A *snapshot* records a party's bytes and its model lineage. *Restoring* it is modelled
only when the party has sent nothing since the snapshot: that is a receiver rolled back
(e.g. a device restored from backup). Its lineage reverts to the snapshot's, so messages
it decrypted after the snapshot decrypt again when redelivered (the model's slots are
per lineage), and fresh messages keep flowing both ways (the ``ping_pong`` rule).

Restoring a party that *has* sent since the snapshot is the cloned-sender scenario: it
would reuse message keys, which the protocol cannot detect. It is not in the machine; the
separate tests at the end pin down its exact, bounded consequence.
"""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import e2e.ratchet
from e2e import (
    PQ,
    DecryptError,
    DuplicateMessage,
    E2EError,
    KeyPair,
    LocalPrekeys,
    Session,
    Suite,
    TooManySkipped,
)
from e2e.keys import kem_encapsulate

SMALL_LIMITS = {
    "MAX_SKIP": 6,
    "MAX_STORED_SKIPPED": 8,
    "MAX_RECEIVER_CHAINS": 3,
    "MAX_SKIPPED_AGE": 10,
}

Slot = tuple[bytes, int]


@dataclass
class Lineage:
    """The model of one party's state (see the module docstring)."""

    dhs: bytes
    ns: int = 0
    pn: int = 0
    chains: list[bytes] = field(default_factory=list)
    dropped: set[bytes] = field(default_factory=set)
    nr: int = 0
    #: The initiator's remote ratchet key before any reply: the peer's signed prekey,
    #: which carries no messages (no receiving chain, nothing to skip in it).
    first_dhr: bytes | None = None
    skipped: dict[Slot, None] = field(default_factory=dict)


@dataclass(frozen=True)
class Msg:
    sender: int
    slot: Slot
    pn: int
    frame: bytes
    plaintext: bytes


@dataclass(frozen=True)
class Snapshot:
    party: int
    state: bytes
    lineage: Lineage
    sends: int


# Outcomes the model predicts.
OK, DUP, TOO_FAR, FAIL = "ok", "duplicate", "too-far", "fail"


class Parties(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.saved = {name: getattr(e2e.ratchet, name) for name in SMALL_LIMITS}
        for name, value in SMALL_LIMITS.items():
            setattr(e2e.ratchet, name, value)
        self.limits = SMALL_LIMITS
        self.sessions: list[Session] = []
        self.persisted: list[bytes] = []
        self.model: list[Lineage] = []
        self.sends = [0, 0]
        self.sent: list[Msg] = []
        self.queue: list[Msg] = []  # undelivered, in send order
        self.snapshots: list[Snapshot] = []
        self.counter = 0

    def teardown(self) -> None:
        for name, value in self.saved.items():
            setattr(e2e.ratchet, name, value)

    # -- helpers ---------------------------------------------------------------------

    def _plaintext(self) -> bytes:
        self.counter += 1
        return b"msg-%d" % self.counter

    def _persist(self, p: int) -> None:
        self.persisted[p] = self.sessions[p].to_bytes()

    def _send(self, p: int) -> Msg:
        s, m = self.sessions[p], self.model[p]
        pt = self._plaintext()
        assert s.ratchet.dhs.public == m.dhs and s.ratchet.ns == m.ns and s.ratchet.pn == m.pn
        frame = s.encrypt(pt)
        self._persist(p)
        msg = Msg(p, (m.dhs, m.ns), m.pn, frame, pt)
        m.ns += 1
        self.sends[p] += 1
        self.sent.append(msg)
        self.queue.append(msg)
        return msg

    def _predict(self, m: Lineage, msg: Msg) -> str:
        dh, n = msg.slot
        max_skip = self.limits["MAX_SKIP"]
        if msg.slot in m.skipped:
            return OK
        if m.chains and dh == m.chains[-1]:
            if n < m.nr:
                return DUP
            return TOO_FAR if n - m.nr > max_skip else OK
        if dh in m.chains:
            return DUP
        if dh in m.dropped:
            return FAIL
        if n > max_skip:
            return TOO_FAR
        return OK

    def _accept(self, r: int, msg: Msg) -> None:
        """Update receiver ``r``'s model for an accepted ``msg`` (prediction was OK)."""
        m = self.model[r]
        dh, n = msg.slot
        if msg.slot in m.skipped:
            del m.skipped[msg.slot]
            return
        if not m.chains or dh != m.chains[-1]:  # a new chain: DH ratchet step
            if m.chains:
                budget_end = m.nr + self.limits["MAX_SKIP"] - n
                for i in range(m.nr, min(msg.pn, budget_end)):
                    m.skipped[(m.chains[-1], i)] = None
            m.chains.append(dh)
            m.nr = 0
            m.pn, m.ns = m.ns, 0
            m.dhs = self.sessions[r].ratchet.dhs.public
        for i in range(m.nr, n):
            m.skipped[(dh, i)] = None
        m.nr = n + 1
        keep = self.limits["MAX_RECEIVER_CHAINS"]
        if len(m.chains) > keep:
            gone = m.chains[:-keep]
            m.dropped.update(gone)
            m.chains = m.chains[-keep:]
            m.skipped = {k: v for k, v in m.skipped.items() if k[0] not in gone}
        age = self.limits["MAX_SKIPPED_AGE"]
        m.skipped = {k: v for k, v in m.skipped.items() if k[0] != dh or k[1] + age >= m.nr}
        while len(m.skipped) > self.limits["MAX_STORED_SKIPPED"]:
            del m.skipped[next(iter(m.skipped))]

    def _deliver(self, msg: Msg, frame: bytes | None = None) -> str:
        """Deliver ``msg`` (or a tampered ``frame`` of it); check against the model."""
        r = 1 - msg.sender
        s = self.sessions[r]
        before = s.to_bytes()
        if frame is not None:
            with pytest.raises(E2EError):
                s.decrypt(frame)
            assert s.to_bytes() == before, "a tampered frame changed the state"
            return FAIL
        expect = self._predict(self.model[r], msg)
        if expect == OK:
            assert s.decrypt(msg.frame) == msg.plaintext
            self._accept(r, msg)
            self._persist(r)
            if msg in self.queue:
                self.queue.remove(msg)
            return OK
        if msg in self.queue:
            self.queue.remove(msg)
        error = {DUP: DuplicateMessage, TOO_FAR: TooManySkipped, FAIL: DecryptError}[expect]
        with pytest.raises(error):
            s.decrypt(msg.frame)
        assert s.to_bytes() == before, "a rejected frame changed the state"
        return expect

    # -- set-up ----------------------------------------------------------------------

    @initialize()
    def handshake(self) -> None:
        suite = PQ
        ai, bi = KeyPair.generate(), KeyPair.generate()
        keys = LocalPrekeys.generate(bi, suite, one_time=1)
        alice = Session.initiate(ai, keys.bundle().to_bytes(), allowed_suites=(suite,))
        m0 = alice.encrypt(b"m0")
        bob, pt = Session.respond(bi, keys, m0, allowed_suites=(suite,))
        assert pt == b"m0"
        self.sessions = [alice, bob]
        self.persisted = [alice.to_bytes(), bob.to_bytes()]
        a0 = alice.ratchet.dhs.public
        self.model = [
            Lineage(a0, ns=1, first_dhr=alice.ratchet.dhr),
            Lineage(bob.ratchet.dhs.public, chains=[a0], nr=1),
        ]
        self.sends = [1, 0]

    # -- rules -----------------------------------------------------------------------

    @rule(p=st.integers(0, 1))
    def send(self, p: int) -> None:
        self._send(p)

    @rule(p=st.integers(0, 1), count=st.integers(2, 8))
    def burst(self, p: int, count: int) -> None:
        for _ in range(count):
            self._send(p)

    @precondition(lambda self: self.queue)
    @rule(direction=st.integers(0, 1))
    def deliver_next(self, direction: int) -> None:
        """Deliver the oldest undelivered message (of one direction if there is one)."""
        mine = [m for m in self.queue if m.sender == direction] or self.queue
        self._deliver(mine[0])

    @precondition(lambda self: self.queue)
    @rule(data=st.data())
    def drop_oldest(self, data: st.DataObject) -> None:
        """The network loses a message (it may still turn up later, via deliver_any)."""
        self.queue.pop(data.draw(st.integers(0, min(2, len(self.queue) - 1))))

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def deliver_any(self, data: st.DataObject) -> None:
        """Reordered, delayed or replayed delivery of any message ever sent."""
        self._deliver(data.draw(st.sampled_from(self.sent)))

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """Replay a message its receiver has accepted in this lineage: DuplicateMessage."""
        msg = data.draw(st.sampled_from(self.sent[-10:]))
        if self._deliver(msg) == OK:
            assert self._deliver(msg) == DUP

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def tamper(self, data: st.DataObject) -> None:
        msg = data.draw(st.sampled_from(self.sent[-10:]))
        frame = msg.frame
        how = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
        if how == "flip":
            at = data.draw(st.integers(0, len(frame) - 1))
            bit = 1 << data.draw(st.integers(0, 7))
            bad = frame[:at] + bytes([frame[at] ^ bit]) + frame[at + 1 :]
        elif how == "truncate":
            bad = frame[: data.draw(st.integers(0, len(frame) - 1))]
        else:
            bad = frame + data.draw(st.binary(min_size=1, max_size=4))
        self._deliver(msg, bad)

    @rule(p=st.integers(0, 1))
    def snapshot(self, p: int) -> None:
        self.snapshots.append(
            Snapshot(p, self.sessions[p].to_bytes(), copy.deepcopy(self.model[p]), self.sends[p])
        )

    @precondition(lambda self: self.snapshots)
    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        """Roll a receiver back to a snapshot taken since its last send."""
        fit = [s for s in self.snapshots if s.sends == self.sends[s.party]]
        if not fit:
            return
        self.restore_snapshot(data.draw(st.sampled_from(fit)))

    def restore_snapshot(self, snap: Snapshot) -> None:
        assert snap.sends == self.sends[snap.party]
        self.sessions[snap.party] = Session.from_bytes(snap.state)
        self.persisted[snap.party] = snap.state
        self.model[snap.party] = copy.deepcopy(snap.lineage)

    @rule(p=st.integers(0, 1), count=st.integers(1, 4), data=st.data())
    def rollback_receiver(self, p: int, count: int, data: st.DataObject) -> None:
        """Snapshot ``p``, let it receive up to ``count`` messages, restore the snapshot."""
        self.snapshot(p)
        for _ in range(count):
            inbound = [m for m in self.sent if m.sender != p]
            if inbound:
                self._deliver(data.draw(st.sampled_from(inbound[-6:])))
        self.restore_snapshot(self.snapshots[-1])

    @rule(p=st.integers(0, 1))
    def crash_and_reload(self, p: int) -> None:
        live = self.sessions[p].to_bytes()
        self.sessions[p] = Session.from_bytes(self.persisted[p])
        assert self.sessions[p].to_bytes() == live, "an acknowledged change was lost"

    @rule(first=st.integers(0, 1))
    def ping_pong(self, first: int) -> None:
        """Fresh messages both ways decrypt, unless one is further ahead than MAX_SKIP."""
        for p in (first, 1 - first, first):
            outcome = self._deliver(self._send(p))
            assert outcome in (OK, TOO_FAR)

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def ratchets_match_the_model(self) -> None:
        for s, m in zip(self.sessions, self.model, strict=True):
            r = s.ratchet
            assert r.dhs.public == m.dhs and r.ns == m.ns and r.pn == m.pn
            assert r.dhr == (m.chains[-1] if m.chains else m.first_dhr)
            assert [dh for dh, _ in r.old_chains] == m.chains[:-1]
            assert r.nr == m.nr
            assert list(r.skipped) == list(m.skipped)
            assert len(r.skipped) <= self.limits["MAX_STORED_SKIPPED"]
            assert len(r.old_chains) < self.limits["MAX_RECEIVER_CHAINS"]

    @invariant()
    def persisted_is_current(self) -> None:
        for s, saved in zip(self.sessions, self.persisted, strict=True):
            assert s.to_bytes() == saved


# E2E_SM_EXAMPLES lowers the example count (mutation runs use 25).
Parties.TestCase.settings = settings(
    max_examples=int(os.environ.get("E2E_SM_EXAMPLES", "150")),
    stateful_step_count=60,
    deadline=None,
)
TestParties = Parties.TestCase


# -- the cloned sender, outside the machine ------------------------------------------------


def _pair(suite: Suite) -> tuple[Session, Session]:
    ai, bi = KeyPair.generate(), KeyPair.generate()
    keys = LocalPrekeys.generate(bi, suite, one_time=1)
    alice = Session.initiate(ai, keys.bundle().to_bytes(), allowed_suites=(suite,))
    bob, _ = Session.respond(bi, keys, alice.encrypt(b"hello"), allowed_suites=(suite,))
    alice.decrypt(bob.encrypt(b"hi"))
    return alice, bob


@pytest.mark.parametrize("suite", [PQ], ids=["PQ"])
def test_cloned_sender_after_delivery_is_a_duplicate(suite: Suite) -> None:
    """A sender rolled back re-sends in a slot the receiver already consumed: refused."""
    alice, bob = _pair(suite)
    old = alice.to_bytes()
    assert bob.decrypt(alice.encrypt(b"original")) == b"original"
    clone = Session.from_bytes(old)
    before = bob.to_bytes()
    with pytest.raises(DuplicateMessage):
        bob.decrypt(clone.encrypt(b"clone"))
    assert bob.to_bytes() == before


@pytest.mark.parametrize("suite", [PQ], ids=["PQ"])
def test_cloned_sender_first_delivery_wins_the_slot(suite: Suite) -> None:
    """Two messages in one slot (the key reuse a clone causes): exactly one decrypts.

    The protocol cannot tell a clone from the original; what it guarantees is that one
    message key opens at most one message, so the second one is a duplicate.
    """
    alice, bob = _pair(suite)
    old = alice.to_bytes()
    original = alice.encrypt(b"original")
    cloned = Session.from_bytes(old).encrypt(b"clone")
    assert cloned != original
    assert bob.decrypt(cloned) == b"clone"
    with pytest.raises(DuplicateMessage):
        bob.decrypt(original)
    # The session goes on: the next message of the original sender decrypts.
    assert bob.decrypt(alice.encrypt(b"next")) == b"next"


# -- pinned by mutation testing (mutation/REPORT.md) ---------------------------------------------


class _Rng:
    """A deterministic byte source: the same label gives the same bytes, run after run."""

    def __init__(self, label: bytes) -> None:
        self.label, self.count = label, 0

    def __call__(self, n: int) -> bytes:
        self.count += 1
        return hashlib.shake_256(self.label + self.count.to_bytes(8, "big")).digest(n)


_ENCAPSULATED: dict[bytes, tuple[bytes, bytes]] = {}


def _fixed_encapsulate(public: bytes) -> tuple[bytes, bytes]:
    """One real encapsulation per public key, replayed: fixes the only randomness no rng feeds."""
    if public not in _ENCAPSULATED:
        _ENCAPSULATED[public] = kem_encapsulate(public)
    return _ENCAPSULATED[public]


def _scripted_run() -> list[bytes]:
    """A conversation whose every random byte comes from the given rngs (and one fixed KEM
    encapsulation)."""
    rng_a, rng_b = _Rng(b"alice"), _Rng(b"bob")
    ai, bi = KeyPair.generate(rng_a), KeyPair.generate(rng_b)
    keys = LocalPrekeys.generate(bi, PQ, one_time=1, rng=rng_b)
    alice = Session.initiate(
        ai, keys.bundle(), allowed_suites=(PQ,), rng=rng_a, encapsulate=_fixed_encapsulate
    )
    m0 = alice.encrypt(b"m0")
    bob, _ = Session.respond(bi, keys, m0, allowed_suites=(PQ,), rng=rng_b)
    b0 = bob.encrypt(b"b0")
    alice.decrypt(b0)
    a1 = alice.encrypt(b"a1")
    bob.decrypt(a1)
    return [m0, b0, a1, alice.to_bytes(), bob.to_bytes()]


def test_sessions_draw_all_randomness_from_their_rng() -> None:
    """Both ends keep the rng they were given for every later ratchet key (vectors rely on it)."""
    assert _scripted_run() == _scripted_run()


@pytest.mark.parametrize("suite", [PQ], ids=["PQ"])
def test_initial_ratchet_state_follows_the_spec(suite: Suite) -> None:
    """RatchetInitAlice: DHr = Bob's signed prekey, she can send; Bob cannot until he receives."""
    from e2e.ratchet import Ratchet

    ai, bi = KeyPair.generate(), KeyPair.generate()
    keys = LocalPrekeys.generate(bi, suite, one_time=1)
    bundle = keys.bundle()
    alice = Session.initiate(ai, bundle, allowed_suites=(suite,))
    assert alice.ratchet.dhr == bundle.spk
    assert alice.ratchet.can_send() and alice.ratchet.ckr is None
    spk = keys.signed_prekey(bundle.spk_id)
    bob = Ratchet.responder(suite, bytes(66), bytes(32), spk, None, None)
    assert not bob.can_send() and bob.dhs is spk and bob.dhr is None
