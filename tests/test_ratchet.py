"""Double Ratchet: ordering, DH ratchet steps, skipped keys and their limits, replays, and
state that stays byte-identical through every rejected message."""

from __future__ import annotations

import os
from collections.abc import Callable

import cbor2
import pytest
from helpers import (
    Pair,
    byte_flips,
    edit_frame,
    expect_unchanged,
    frame_fields,
    handshake,
    reencode,
    setup,
)
from hypothesis import given
from hypothesis import strategies as st

from e2e.constants import MAX_COUNTER, MAX_PLAINTEXT_BYTES, MAX_SKIP
from e2e.errors import (
    AuthenticationFailed,
    DecodeError,
    DecryptError,
    DuplicateMessage,
    E2EError,
    LimitExceeded,
    StateError,
    TooManySkipped,
    UnknownSuite,
)
from e2e.frame import SEALED_HEADER_LEN, K, T
from e2e.header import Header
from e2e.keys import KeyPair
from e2e.message_key import HeaderCipher
from e2e.ratchet import Ratchet
from e2e.session import Session
from e2e.suite import PQ, Suite

Limits = Callable[..., None]


def sessions(pair: Pair) -> tuple[Session, Session]:
    assert pair.bob is not None
    return pair.alice, pair.bob


def ratchet_key(session: Session) -> bytes:
    return session.ratchet.dhs.public


# --- in order, many DH steps ------------------------------------------------------------


def test_in_order_ping_pong_ratchets_every_turn(suite: Suite) -> None:
    alice, bob = sessions(handshake(suite))
    seen_keys: set[bytes] = set()
    for turn in range(30):
        sender, receiver = (alice, bob) if turn % 2 else (bob, alice)
        seen_keys.add(ratchet_key(sender))
        for i in range(turn % 4 + 1):
            msg = b"turn %d msg %d" % (turn, i)
            assert receiver.decrypt(sender.encrypt(msg)) == msg
    # Every turn after a reply used a fresh ratchet key: one DH step per direction change.
    assert len(seen_keys) == 30


def test_encrypted_headers_hide_everything() -> None:
    alice, bob = sessions(handshake(PQ))
    a, b = alice.encrypt(b"x"), alice.encrypt(b"x")
    ha, hb = frame_fields(a)[K.HEADER], frame_fields(b)[K.HEADER]
    assert len(ha) == len(hb) == SEALED_HEADER_LEN == 132
    assert ratchet_key(alice) not in ha and ha[:12] != hb[:12]
    assert bob.decrypt(b) == b"x" and bob.decrypt(a) == b"x"


def test_initiator_attaches_prekey_fields_until_it_hears_back(suite: Suite) -> None:
    pair = setup(suite)
    frames = [pair.alice.encrypt(b"%d" % i) for i in range(3)]
    assert all(frame_fields(f)[K.TYPE] == T.PREKEY_MESSAGE for f in frames)
    bob, pt = pair.respond(frames[2])  # the third arrives first
    assert pt == b"2"
    assert bob.decrypt(frames[0]) == b"0" and bob.decrypt(frames[1]) == b"1"
    assert pair.alice.encrypt(b"still")[:8] == frames[0][:8]  # not answered yet: type 2
    pair.alice.decrypt(bob.encrypt(b"answer"))
    plain = pair.alice.encrypt(b"now plain")
    assert frame_fields(plain)[K.TYPE] == T.MESSAGE
    assert bob.decrypt(plain) == b"now plain"


def test_responder_cannot_send_before_it_has_received(suite: Suite) -> None:
    ratchet = Ratchet.responder(
        suite, bytes(66), os.urandom(32), KeyPair.generate(), os.urandom(32), os.urandom(32)
    )
    with pytest.raises(StateError):
        ratchet.encrypt(b"too early")


def test_plaintext_size_limit(suite: Suite) -> None:
    alice, bob = sessions(handshake(suite))
    expect_unchanged(alice, lambda: alice.encrypt(bytes(MAX_PLAINTEXT_BYTES + 1)), LimitExceeded)
    assert bob.decrypt(alice.encrypt(b"")) == b""
    big = os.urandom(MAX_PLAINTEXT_BYTES)
    assert bob.decrypt(alice.encrypt(big)) == big


# --- out of order (hypothesis) ----------------------------------------------------------


@given(data=st.data())
def test_random_permutation_within_a_chain(suite: Suite, data: st.DataObject) -> None:
    alice, bob = sessions(handshake(suite))
    n = data.draw(st.integers(1, 25))
    frames = [alice.encrypt(b"m%d" % i) for i in range(n)]
    order = data.draw(st.permutations(range(n)))
    for i in order:
        assert bob.decrypt(frames[i]) == b"m%d" % i
    for i in order[:3]:  # and each of them only once
        expect_unchanged(bob, lambda i=i: bob.decrypt(frames[i]), DuplicateMessage)


# Actions: (0, who) = ``who`` sends a message; (1, who, pick) = deliver one of the messages in
# flight *to* ``who``, chosen by ``pick``. Bob has already answered once, so both can send.
_ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just(0), st.integers(0, 1)),
        st.tuples(st.just(1), st.integers(0, 1), st.integers(0, 2**16)),
    ),
    max_size=60,
)


@given(actions=_ACTIONS, tail_seed=st.randoms(use_true_random=False))
def test_random_schedule_across_dh_steps(
    suite: Suite, limits: Limits, actions: list[tuple[int, ...]], tail_seed: object
) -> None:
    """Arbitrary interleavings of sends and out-of-order deliveries in both directions.

    Receiving-chain eviction is tested on its own below; here it is lifted so that every
    message must decrypt exactly once, whatever the order.
    """
    limits(MAX_RECEIVER_CHAINS=10_000)
    pair = handshake(suite)
    parties = sessions(pair)
    in_flight: list[list[tuple[bytes, bytes]]] = [[], []]  # messages *to* alice, to bob
    counter = 0
    delivered = 0

    def deliver(to: int, index: int) -> None:
        nonlocal delivered
        frame, expected = in_flight[to].pop(index)
        assert parties[to].decrypt(frame) == expected
        delivered += 1

    for action in actions:
        if action[0] == 0:
            sender = action[1]
            msg = b"%d:%d" % (sender, counter)
            counter += 1
            in_flight[1 - sender].append((parties[sender].encrypt(msg), msg))
        elif in_flight[action[1]]:
            deliver(action[1], action[2] % len(in_flight[action[1]]))
    rnd = tail_seed
    for to in (0, 1):
        while in_flight[to]:
            deliver(to, rnd.randrange(len(in_flight[to])))  # type: ignore[attr-defined]
    assert delivered == counter
    # The session still works both ways afterwards.
    alice, bob = parties
    assert bob.decrypt(alice.encrypt(b"end")) == b"end"
    assert alice.decrypt(bob.encrypt(b"end")) == b"end"


def test_out_of_order_across_dh_steps_both_directions(suite: Suite) -> None:
    alice, bob = sessions(handshake(suite))
    held_for_bob: list[tuple[bytes, bytes]] = []
    held_for_alice: list[tuple[bytes, bytes]] = []
    for rnd in range(4):
        # Each side sends 3, one of which is delivered now and two held back.
        for i in range(3):
            msg = b"a%d.%d" % (rnd, i)
            held_for_bob.append((alice.encrypt(msg), msg))
        f, m = held_for_bob.pop(-2)
        assert bob.decrypt(f) == m
        for i in range(3):
            msg = b"b%d.%d" % (rnd, i)
            held_for_alice.append((bob.encrypt(msg), msg))
        f, m = held_for_alice.pop(-1)
        assert alice.decrypt(f) == m
    # Now the late ones, newest first, across four chains per direction.
    for f, m in reversed(held_for_bob):
        assert bob.decrypt(f) == m
    for f, m in reversed(held_for_alice):
        assert alice.decrypt(f) == m


# --- skipped keys and their limits ------------------------------------------------------


def test_too_many_skipped_default_limit(suite: Suite) -> None:
    budget = MAX_SKIP
    alice, bob = sessions(handshake(suite))
    frames = [alice.encrypt(b"%d" % i) for i in range(budget + 2)]
    # Alice ratcheted on Bob's answer: a chain Bob has not seen, so N counts from 0.
    expect_unchanged(bob, lambda: bob.decrypt(frames[budget + 1]), TooManySkipped)
    assert bob.decrypt(frames[budget]) == b"%d" % budget  # exactly the budget skipped
    assert bob.decrypt(frames[budget + 1]) == b"%d" % (budget + 1)
    assert bob.decrypt(frames[3]) == b"3"


def test_too_many_skipped_in_current_chain(suite: Suite, limits: Limits) -> None:
    limits(MAX_SKIP=5)
    alice, bob = sessions(handshake(suite))
    frames = [alice.encrypt(b"%d" % i) for i in range(8)]
    expect_unchanged(bob, lambda: bob.decrypt(frames[6]), TooManySkipped)
    expect_unchanged(bob, lambda: bob.decrypt(frames[7]), TooManySkipped)
    assert bob.decrypt(frames[5]) == b"5"  # skips 0..4: exactly 5
    assert bob.decrypt(frames[7]) == b"7"
    for i in (0, 6, 4, 1, 2, 3):
        assert bob.decrypt(frames[i]) == b"%d" % i


def test_too_many_skipped_on_a_new_chain(suite: Suite, limits: Limits) -> None:
    limits(MAX_SKIP=5)
    alice, bob = sessions(handshake(suite))
    alice.decrypt(bob.encrypt(b"new chain please"))
    frames = [alice.encrypt(b"%d" % i) for i in range(7)]  # a chain Bob has not seen
    expect_unchanged(bob, lambda: bob.decrypt(frames[6]), TooManySkipped)
    assert bob.decrypt(frames[5]) == b"5"
    assert bob.decrypt(frames[0]) == b"0"


def test_previous_chain_beyond_the_budget_is_abandoned(suite: Suite, limits: Limits) -> None:
    """A new chain whose PN says Bob missed more than the budget of the previous one: the
    frame is accepted, the previous chain's keys beyond the budget are never derived."""
    limits(MAX_SKIP=5)
    alice, bob = sessions(handshake(suite))
    old = [alice.encrypt(b"old%d" % i) for i in range(8)]  # a chain new to Bob: N = 0..7
    assert bob.decrypt(old[0]) == b"old0"  # Bob ratchets: nr = 1 of this chain
    alice.decrypt(bob.encrypt(b"reply"))  # Bob's new chain: Alice ratchets
    new = alice.encrypt(b"new")  # N = 0, PN = 8: Bob skips 1..5 (the budget), 6 and 7 lost
    assert bob.decrypt(new) == b"new"
    for i in (7, 6):
        expect_unchanged(bob, lambda i=i: bob.decrypt(old[i]), DuplicateMessage)
    for i in (5, 1, 4, 2, 3):
        assert bob.decrypt(old[i]) == b"old%d" % i


def test_previous_chain_within_the_budget_after_catching_up(suite: Suite, limits: Limits) -> None:
    limits(MAX_SKIP=5)
    alice, bob = sessions(handshake(suite))
    old = [alice.encrypt(b"old%d" % i) for i in range(7)]
    alice.decrypt(bob.encrypt(b"reply"))
    new = alice.encrypt(b"new")
    assert bob.decrypt(old[4]) == b"old4"  # now nr = 6, 2 left to skip
    assert bob.decrypt(new) == b"new"
    for i in (6, 5, 0, 3):
        assert bob.decrypt(old[i]) == b"old%d" % i


def test_stored_skipped_keys_bounded_oldest_evicted_first(suite: Suite, limits: Limits) -> None:
    limits(MAX_SKIP=10, MAX_STORED_SKIPPED=6)
    alice, bob = sessions(handshake(suite))
    frames = [alice.encrypt(b"%d" % i) for i in range(11)]
    assert bob.decrypt(frames[10]) == b"10"  # skips 0..9 (ten keys): keeps 4..9
    assert len(bob.ratchet.skipped) == 6
    for i in (0, 1, 2, 3):  # evicted, oldest first: a replay as far as Bob can tell
        expect_unchanged(bob, lambda i=i: bob.decrypt(frames[i]), DuplicateMessage)
    for i in (9, 4, 7):
        assert bob.decrypt(frames[i]) == b"%d" % i
    assert len(bob.ratchet.skipped) == 3
    # Eviction across chains: the older chain's keys go first.
    alice.decrypt(bob.encrypt(b"turn"))
    later = [alice.encrypt(b"L%d" % i) for i in range(6)]
    assert bob.decrypt(later[5]) == b"L5"  # 5 new skipped keys (0..4) + 3 old = 8 > 6
    assert len(bob.ratchet.skipped) == 6
    expect_unchanged(bob, lambda: bob.decrypt(frames[5]), DuplicateMessage)  # oldest two go
    expect_unchanged(bob, lambda: bob.decrypt(frames[6]), DuplicateMessage)
    assert bob.decrypt(frames[8]) == b"8"
    for i in range(5):
        assert bob.decrypt(later[i]) == b"L%d" % i
    assert len(bob.ratchet.skipped) == 0


@given(data=st.data())
def test_skipped_store_never_exceeds_limit(
    suite: Suite, limits: Limits, data: st.DataObject
) -> None:
    limits(MAX_SKIP=8, MAX_STORED_SKIPPED=5, MAX_RECEIVER_CHAINS=3)
    alice, bob = sessions(handshake(suite))
    for _ in range(data.draw(st.integers(1, 6))):
        n = data.draw(st.integers(1, 9))
        frames = [alice.encrypt(b"x") for _ in range(n)]
        for i in data.draw(st.lists(st.integers(0, n - 1), max_size=4, unique=True)):
            before = bob.to_bytes()
            try:
                bob.decrypt(frames[i])
            except (TooManySkipped, DuplicateMessage):  # too far ahead / key evicted
                assert bob.to_bytes() == before
            assert len(bob.ratchet.skipped) <= 5
            assert len(bob.ratchet.old_chains) < 3
        alice.decrypt(bob.encrypt(b"turn"))


def test_receiving_chains_bounded(suite: Suite, limits: Limits) -> None:
    limits(MAX_RECEIVER_CHAINS=3)
    alice, bob = sessions(handshake(suite))
    late: list[bytes] = []
    for chain in range(6):
        # Alice ratchets (after Bob's reply), sends two; Bob gets only the second.
        alice.decrypt(bob.encrypt(b"reply %d" % chain))
        first, second = alice.encrypt(b"c%d.0" % chain), alice.encrypt(b"c%d.1" % chain)
        assert bob.decrypt(second) == b"c%d.1" % chain
        late.append(first)
        assert len(bob.ratchet.old_chains) <= 2
    # The current chain and the two before it keep their skipped keys; older ones are gone.
    for chain in range(3):
        expect_unchanged(bob, lambda chain=chain: bob.decrypt(late[chain]), DecryptError)
    for chain in (5, 3, 4):
        assert bob.decrypt(late[chain]) == b"c%d.0" % chain


# --- replays ---------------------------------------------------------------------------


def test_replay_in_chain(suite: Suite) -> None:
    alice, bob = sessions(handshake(suite))
    f = alice.encrypt(b"once")
    assert bob.decrypt(f) == b"once"
    expect_unchanged(bob, lambda: bob.decrypt(f), DuplicateMessage)
    g = alice.encrypt(b"next")
    assert bob.decrypt(g) == b"next"
    expect_unchanged(bob, lambda: bob.decrypt(f), DuplicateMessage)


def test_replay_of_skipped_then_used(suite: Suite) -> None:
    alice, bob = sessions(handshake(suite))
    f0, f1 = alice.encrypt(b"0"), alice.encrypt(b"1")
    assert bob.decrypt(f1) == b"1"
    assert bob.decrypt(f0) == b"0"
    expect_unchanged(bob, lambda: bob.decrypt(f0), DuplicateMessage)
    expect_unchanged(bob, lambda: bob.decrypt(f1), DuplicateMessage)


def test_replay_from_an_old_chain(suite: Suite) -> None:
    alice, bob = sessions(handshake(suite))
    f = alice.encrypt(b"old chain")
    assert bob.decrypt(f) == b"old chain"
    for _ in range(3):  # several DH steps later
        alice.decrypt(bob.encrypt(b"r"))
        bob.decrypt(alice.encrypt(b"s"))
    expect_unchanged(bob, lambda: bob.decrypt(f), DuplicateMessage)


def test_replay_of_the_first_prekey_message(suite: Suite) -> None:
    pair = setup(suite)
    first = pair.alice.encrypt(b"first")
    bob, _ = pair.respond(first)
    expect_unchanged(bob, lambda: bob.decrypt(first), DuplicateMessage)
    pair.alice.decrypt(bob.encrypt(b"answer"))
    bob.decrypt(pair.alice.encrypt(b"after"))
    expect_unchanged(bob, lambda: bob.decrypt(first), DuplicateMessage)


def test_replay_to_the_initiator(suite: Suite) -> None:
    alice, bob = sessions(handshake(suite))
    f = bob.encrypt(b"to alice")
    assert alice.decrypt(f) == b"to alice"
    expect_unchanged(alice, lambda: alice.decrypt(f), DuplicateMessage)


# --- a failed decrypt changes nothing ----------------------------------------------------


def _scenarios(suite: Suite) -> dict[str, tuple[Session, bytes, bytes]]:
    """(receiver, frame, plaintext) for a message of each kind of receive path."""
    out: dict[str, tuple[Session, bytes, bytes]] = {}
    alice, bob = sessions(handshake(suite))
    out["current-chain"] = (bob, alice.encrypt(b"current"), b"current")
    a2, b2 = sessions(handshake(suite))
    a2.decrypt(b2.encrypt(b"ratchet"))
    out["new-chain"] = (b2, a2.encrypt(b"new chain"), b"new chain")
    a3, b3 = sessions(handshake(suite))
    skipped = a3.encrypt(b"skipped")
    b3.decrypt(a3.encrypt(b"later"))
    out["skipped-key"] = (b3, skipped, b"skipped")
    a4, b4 = sessions(handshake(suite))
    out["to-initiator"] = (a4, b4.encrypt(b"to alice"), b"to alice")
    pair = setup(suite)
    first = pair.alice.encrypt(b"p0")
    second = pair.alice.encrypt(b"p1")
    b5, _ = pair.respond(first)
    out["prekey-message"] = (b5, second, b"p1")
    return out


SCENARIOS = ["current-chain", "new-chain", "skipped-key", "to-initiator", "prekey-message"]


@pytest.mark.parametrize("kind", SCENARIOS)
def test_every_single_byte_flip_is_rejected_without_state_change(suite: Suite, kind: str) -> None:
    receiver, frame, plaintext = _scenarios(suite)[kind]
    before = receiver.to_bytes()
    positions = range(len(frame))
    if len(frame) > 400:  # the PQ prekey message: every byte around the KEM ciphertext
        positions = [*range(0, 200), *range(len(frame) - 250, len(frame)), 1000, 1500]
    for i, bad in byte_flips(frame, positions):
        with pytest.raises(E2EError):
            receiver.decrypt(bad)
        assert receiver.to_bytes() == before, f"flip at byte {i} changed the state"
    assert receiver.decrypt(frame) == plaintext


@pytest.mark.parametrize("kind", SCENARIOS)
def test_truncated_and_extended_frames_rejected(suite: Suite, kind: str) -> None:
    receiver, frame, plaintext = _scenarios(suite)[kind]
    for cut in {0, 1, 5, 40, len(frame) // 2, len(frame) - 17, len(frame) - 1}:
        expect_unchanged(receiver, lambda cut=cut: receiver.decrypt(frame[:cut]), DecodeError)
    expect_unchanged(receiver, lambda: receiver.decrypt(frame + b"\x00"), DecodeError)
    body = frame_fields(frame)[K.BODY]
    for shorter in (body[:-1], body[:-16], body[:16], b""):
        expect_unchanged(receiver, lambda b=shorter: receiver.decrypt(edit_frame(frame, body=b)))
    assert receiver.decrypt(frame) == plaintext


@pytest.mark.parametrize("kind", SCENARIOS)
def test_body_and_header_tamper_are_authentication_failures(suite: Suite, kind: str) -> None:
    receiver, frame, plaintext = _scenarios(suite)[kind]
    fields = frame_fields(frame)
    body, header = fields[K.BODY], fields[K.HEADER]
    for i in (0, len(body) // 2, len(body) - 1):
        flipped = body[:i] + bytes([body[i] ^ 0x80]) + body[i + 1 :]
        expect_unchanged(
            receiver, lambda b=flipped: receiver.decrypt(edit_frame(frame, body=b)),
            AuthenticationFailed,
        )  # fmt: skip
    for i in (0, 11, 12, 43, 44, 83, 84, 99):  # nonce, commitment, ciphertext, tag
        flipped = header[:i] + bytes([header[i] ^ 0x04]) + header[i + 1 :]
        expect_unchanged(
            receiver, lambda h=flipped: receiver.decrypt(edit_frame(frame, header=h)),
            AuthenticationFailed,
        )  # fmt: skip
    assert receiver.decrypt(frame) == plaintext


def test_message_of_another_session(suite: Suite) -> None:
    alice, bob = sessions(handshake(suite))
    carol, dave = sessions(handshake(suite))
    foreign = carol.encrypt(b"for dave")
    expect_unchanged(bob, lambda: bob.decrypt(foreign), DecryptError)
    foreign_reply = dave.encrypt(b"for carol")
    expect_unchanged(alice, lambda: alice.decrypt(foreign_reply), DecryptError)
    # A prekey message of another session is refused before any decryption.
    pair = setup(suite)
    other_first = pair.alice.encrypt(b"x")
    expect_unchanged(bob, lambda: bob.decrypt(other_first), StateError)
    assert dave.decrypt(foreign) == b"for dave"
    assert bob.decrypt(alice.encrypt(b"mine")) == b"mine"


@pytest.mark.parametrize("retired", [1, 2])
def test_frame_of_a_retired_suite(suite: Suite, retired: int) -> None:
    """Suite ids 1 (the former libsignal-schedule frame suite) and 2 (the HMAC key schedule
    suite 3 replaced) are unknown: a frame relabelled to one is refused with UnknownSuite
    before anything else, the session unchanged."""
    alice, bob = sessions(handshake(suite))
    relabelled = edit_frame(alice.encrypt(b"x"), suite=retired)
    expect_unchanged(bob, lambda: bob.decrypt(relabelled), UnknownSuite)
    assert bob.decrypt(alice.encrypt(b"ok")) == b"ok"


def test_state_of_the_retired_suite_2_is_refused() -> None:
    """A session state written for suite 2 (an older package) cannot be continued under
    suite 3's key schedule: loading it is a StateError, never a session that would derive
    other keys than its peer."""
    alice, _ = sessions(handshake(PQ))
    fields = frame_fields(alice.to_bytes())
    assert fields[1] == PQ.id == 3
    with pytest.raises(StateError, match="unknown ciphersuite id 2"):
        Session.from_bytes(reencode({**fields, 1: 2}))


def test_own_message_reflected_back(suite: Suite) -> None:
    alice, bob = sessions(handshake(suite))
    own = alice.encrypt(b"mine")
    expect_unchanged(alice, lambda: alice.decrypt(own), DecryptError)
    assert bob.decrypt(own) == b"mine"


def test_sending_counter_limit(suite: Suite) -> None:
    """A chain at MAX_COUNTER must ratchet first: encrypt refuses, state unchanged."""
    alice, bob = sessions(handshake(suite))
    fields = cbor2.loads(alice.to_bytes())
    fields[9] = MAX_COUNTER - 1  # NS
    near = Session.from_bytes(reencode(fields))
    frame = near.encrypt(b"last")
    expect_unchanged(near, lambda: near.encrypt(b"one too many"), LimitExceeded)
    # Bob cannot follow a jump of four billion messages either.
    expect_unchanged(bob, lambda: bob.decrypt(frame), TooManySkipped)


@given(actions=_ACTIONS, replays=st.lists(st.integers(0, 2**16), max_size=10))
def test_random_schedule_under_tight_limits(
    suite: Suite, limits: Limits, actions: list[tuple[int, ...]], replays: list[int]
) -> None:
    """With tiny limits some messages must be refused; whatever happens, a message decrypts
    at most once and to its own plaintext, and every refusal leaves the state as it was.
    (A peer that ran far ahead may stay undecryptable: that is the limit doing its job.)"""
    limits(MAX_SKIP=4, MAX_STORED_SKIPPED=3, MAX_RECEIVER_CHAINS=2)
    parties = sessions(handshake(suite))
    in_flight: list[list[tuple[bytes, bytes]]] = [[], []]
    seen: list[list[tuple[bytes, bytes]]] = [[], []]
    accepted: set[bytes] = set()
    counter = 0

    def deliver(to: int, frame: bytes, expected: bytes) -> None:
        session = parties[to]
        before = session.to_bytes()
        try:
            plaintext = session.decrypt(frame)
        except DecryptError:
            assert session.to_bytes() == before
            return
        assert plaintext == expected and expected not in accepted
        accepted.add(expected)

    for action in actions:
        if action[0] == 0:
            sender = action[1]
            msg = b"%d:%d" % (sender, counter)
            counter += 1
            in_flight[1 - sender].append((parties[sender].encrypt(msg), msg))
        elif in_flight[action[1]]:
            to = action[1]
            frame, msg = in_flight[to].pop(action[2] % len(in_flight[to]))
            seen[to].append((frame, msg))
            deliver(to, frame, msg)
    for to in (0, 1):
        for frame, msg in in_flight[to]:
            seen[to].append((frame, msg))
            deliver(to, frame, msg)
    for r in replays:  # messages delivered again: never a second plaintext
        to = r % 2
        if seen[to]:
            frame, msg = seen[to][r % len(seen[to])]
            deliver(to, frame, msg)  # may succeed only if it was refused before


# --- header keys: one AEAD derivation per chain, and what the cache must never change -------


def _count_header_ciphers(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record every header key whose AEAD the ratchet derives from now on."""
    import e2e.ratchet as ratchet_mod

    built: list[bytes] = []
    real = ratchet_mod.header_cipher

    def counting(key: bytes) -> HeaderCipher:
        built.append(key)
        return real(key)

    monkeypatch.setattr(ratchet_mod, "header_cipher", counting)
    return built


def test_header_key_aead_is_derived_once_per_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = sessions(handshake(PQ))
    built = _count_header_ciphers(monkeypatch)
    for i in range(20):  # one new sending chain of Alice's
        assert bob.decrypt(alice.encrypt(b"m%d" % i)) == b"m%d" % i
    # Alice derives her new hks once; Bob derives it once as his next header key, fails the
    # current one by its cached commitment, and keeps the derived AEAD for the rest of the chain.
    assert built == [alice.ratchet.hks, alice.ratchet.hks]
    assert bob.ratchet.hkr == alice.ratchet.hks


def test_ping_pong_derives_two_header_aeads_per_message(monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = sessions(handshake(PQ))
    built = _count_header_ciphers(monkeypatch)
    for turn in range(10):  # Bob answered last, so Alice starts: every message is a new chain
        sender, receiver = (bob, alice) if turn % 2 else (alice, bob)
        assert receiver.decrypt(sender.encrypt(b"turn")) == b"turn"
        assert built[-2:] == [sender.ratchet.hks, sender.ratchet.hks]
    assert len(built) == 20


def _count_header_trials(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record the header key of every header AEAD asked to open a header from now on."""
    tried: list[bytes] = []
    real = HeaderCipher.open

    def counting(self: HeaderCipher, ad: bytes, sealed: bytes) -> bytes | None:
        tried.append(self.key)
        return real(self, ad, sealed)

    monkeypatch.setattr(HeaderCipher, "open", counting)
    return tried


def test_header_trial_order_follows_who_sent_last(monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver that has sent since it last received tries NHKr first (the peer's answer
    starts a new chain), else HKr; either way the header key that opens is the same one, and a
    frame of the peer's current chain crossing our message still opens (SPEC.md §4.5)."""
    alice, bob = sessions(handshake(PQ))
    tried = _count_header_trials(monkeypatch)
    for turn in range(6):  # ping-pong: every receiver has just sent, every frame a new chain
        sender, receiver = (bob, alice) if turn % 2 else (alice, bob)
        nhkr = receiver.ratchet.nhkr
        tried.clear()
        assert receiver.decrypt(sender.encrypt(b"turn")) == b"turn"
        assert tried == [nhkr]  # opened at the first trial
    # One way: Alice sends three; Bob, who sent nothing since, tries his current key first.
    frames = [alice.encrypt(b"%d" % i) for i in range(3)]
    assert bob.decrypt(frames[0]) == b"0"  # the first is a new chain (Bob answered last)
    for f in frames[1:]:
        tried.clear()
        assert bob.decrypt(f) in (b"1", b"2")
        assert tried == [bob.ratchet.hkr]
    # Crossing: Bob sends, then Alice's next frame of her current chain arrives first.
    from_bob = bob.encrypt(b"crossing")
    late = alice.encrypt(b"still on the old chain")
    tried.clear()
    expect = [bob.ratchet.nhkr, bob.ratchet.hkr]
    assert bob.decrypt(late) == b"still on the old chain"
    assert tried == expect  # NHKr first (it fails on its commitment), then HKr opens
    assert alice.decrypt(from_bob) == b"crossing"


def test_restored_session_rebuilds_its_header_aeads(monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = sessions(handshake(PQ))
    bob.decrypt(alice.encrypt(b"warm"))
    built = _count_header_ciphers(monkeypatch)
    bob2 = Session.from_bytes(bob.to_bytes())
    alice2 = Session.from_bytes(alice.to_bytes())
    assert bob2.decrypt(alice2.encrypt(b"after restore")) == b"after restore"
    assert built == [alice.ratchet.hks, alice.ratchet.hks]  # fresh objects: no stale cache
    assert bob.decrypt(alice.encrypt(b"old objects")) == b"old objects"


def _forged_in_current_chain(alice: Session, bob: Session, dh: bytes, n: int) -> bytes:
    """A frame whose header is sealed under Bob's current header key (only Alice holds it)
    and names ``dh`` and ``n``; its body is Alice's genuine next body."""
    real = alice.encrypt(b"genuine")
    fields = frame_fields(real)
    header = Header(dh, alice.ratchet.pn, n, os.urandom(32)).encode()
    assert bob.ratchet.hkr is not None
    body = fields[K.BODY]
    blank = reencode({**fields, K.HEADER: bytes(SEALED_HEADER_LEN)})[: len(real) - len(body)]
    hdr_ad = bob.ratchet.ad + blank + body  # what a header authenticates (SPEC.md §5.2)
    fields[K.HEADER] = HeaderCipher(bob.ratchet.hkr).seal(os.urandom(12), hdr_ad, header)
    return reencode(fields)


def test_header_under_current_key_naming_another_ratchet_key_is_rejected() -> None:
    alice, bob = sessions(handshake(PQ))
    bob.decrypt(alice.encrypt(b"warm"))  # Bob's current header key's AEAD is cached now
    other = KeyPair.generate().public
    for n in (bob.ratchet.nr, bob.ratchet.nr + 1):  # the common case, and one skipping ahead
        forged = _forged_in_current_chain(alice, bob, other, n)
        exc = expect_unchanged(bob, lambda f=forged: bob.decrypt(f), AuthenticationFailed)
        assert "another ratchet key" in str(exc)
    # A genuine header under the current key, with its body tampered: nothing changes either.
    fields = frame_fields(alice.encrypt(b"next"))
    fields[K.BODY] = bytes([fields[K.BODY][0] ^ 1]) + fields[K.BODY][1:]
    expect_unchanged(bob, lambda: bob.decrypt(reencode(fields)), AuthenticationFailed)
