"""Resource limits are checked before any work is done (issue 6.3).

"Before work" is made observable by counting calls: ``cbor2.loads`` for the size and
nesting of frames, bundles and states; ``chain_step`` (the per-skipped-key HMAC) and
``KeyPair.exchange`` (X25519) for the skip distance. An input over a limit must be refused
with zero such calls and leave every state byte-identical. Each limit is also tested at
its exact boundary, where the input must still be accepted (or fail for another reason).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cbor2
import pytest

import e2e.prekeys
import e2e.ratchet
from e2e import (
    PQ,
    AuthenticationFailed,
    DecodeError,
    DuplicateMessage,
    E2EError,
    KeyPair,
    LimitExceeded,
    LocalPrekeys,
    PrekeyBundle,
    Session,
    StateError,
    Suite,
    TooManySkipped,
)
from e2e.constants import (
    MAX_BUNDLE_BYTES,
    MAX_COUNTER,
    MAX_FRAME_BYTES,
    MAX_PLAINTEXT_BYTES,
    MAX_RECEIVER_CHAINS,
    MAX_SKIP,
    MAX_SKIPPED_AGE,
    MAX_STATE_BYTES,
    MAX_STORED_SKIPPED,
)
from e2e.frame import SEALED_HEADER_LEN, Field, decode_map, decode_message

SUITES = [PQ]
IDS = ["PQ"]


class Counter:
    def __init__(self) -> None:
        self.calls = 0


def _count(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> Counter:
    counter = Counter()
    real = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter.calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return counter


class Work:
    def __init__(self, *counters: Counter) -> None:
        self.counters = counters

    @property
    def calls(self) -> int:
        return sum(c.calls for c in self.counters)

    def reset(self) -> None:
        for c in self.counters:
            c.calls = 0


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts every cbor2.loads call (the frame, bundle and state decoders all use it)."""
    return _count(monkeypatch, cbor2, "loads")


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Work:
    """Counts KDF_CK (as the ratchet calls it) plus every X25519 exchange."""
    return Work(
        _count(monkeypatch, e2e.ratchet, "kdf_ck"), _count(monkeypatch, KeyPair, "exchange")
    )


def _pair(suite: Suite) -> tuple[Session, Session, LocalPrekeys, KeyPair]:
    ai, bi = KeyPair.generate(), KeyPair.generate()
    keys = LocalPrekeys.generate(bi, suite, one_time=1)
    alice = Session.initiate(ai, keys.bundle().to_bytes(), allowed_suites=(suite,))
    bob, _ = Session.respond(bi, keys, alice.encrypt(b"first"), allowed_suites=(suite,))
    return alice, bob, keys, bi


def _frame(body_len: int, header_len: int = SEALED_HEADER_LEN) -> bytes:
    """A well-shaped message frame (it decodes; it would not authenticate)."""
    return cbor2.dumps({0: 1, 1: PQ.id, 2: 1, 9: bytes(header_len), 10: bytes(body_len)})


def _frame_of_size(size: int) -> bytes:
    frame = _frame(size - 200)
    frame = _frame(size - 200 + size - len(frame))
    assert len(frame) == size
    return frame


# -- frame size ------------------------------------------------------------------------------


def test_frame_at_the_size_limit_decodes() -> None:
    assert len(decode_message(_frame_of_size(MAX_FRAME_BYTES)).raw) == MAX_FRAME_BYTES


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
def test_oversize_frame_refused_before_decoding(suite: Suite, loads: Counter) -> None:
    alice, bob, keys, bi = _pair(suite)
    oversize = _frame_of_size(MAX_FRAME_BYTES + 1)
    before = bob.to_bytes()
    loads.calls = 0
    with pytest.raises(LimitExceeded):
        decode_message(oversize)
    with pytest.raises(LimitExceeded):
        bob.decrypt(oversize)
    with pytest.raises(LimitExceeded):
        Session.respond(bi, keys, oversize, allowed_suites=(suite,))
    assert loads.calls == 0
    assert bob.to_bytes() == before


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
def test_largest_plaintext_fits_the_frame_limit(suite: Suite) -> None:
    alice, bob, _, _ = _pair(suite)
    big = bytes(range(256)) * (MAX_PLAINTEXT_BYTES // 256)
    frame = alice.encrypt(big)
    assert len(frame) <= MAX_FRAME_BYTES
    assert bob.decrypt(frame) == big


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
def test_oversize_plaintext_refused_before_the_chain_moves(suite: Suite, work: Work) -> None:
    alice, _, _, _ = _pair(suite)
    before = alice.to_bytes()
    work.reset()
    with pytest.raises(LimitExceeded):
        alice.encrypt(bytes(MAX_PLAINTEXT_BYTES + 1))
    assert work.calls == 0
    assert alice.to_bytes() == before


# -- nesting ---------------------------------------------------------------------------------

NESTED = [
    b"\xa1\x00" + b"\x81" * 100_000 + b"\x00",  # {0: [[[...0...]]]}
    b"\xa1\x00" + b"\xa1\x00" * 1000 + b"\x00",  # {0: {0: {...}}}
    b"\xa1\x00\x9f" + b"\x9f" * 1000 + b"\xff" * 1001,  # indefinite arrays
    b"\xa2\x00\x01\x01\x82\x01\x02",  # {0: 1, 1: [1, 2]}: one level is already too deep
    b"\xa1\x00\xd8\x18\x41\x00",  # a tag
    b"\xa1\x00\xf9\x00\x00",  # a float
    b"\xa1\x00\x7f\xff",  # an indefinite text string
    b"\xa1\x20\x00",  # a negative key
    b"\xa1\x00\x5f\x41\x00\xff",  # an indefinite byte string
]


@pytest.mark.parametrize("raw", NESTED, ids=[f"n{i}" for i in range(len(NESTED))])
def test_nested_or_non_scalar_items_refused_before_decoding(raw: bytes, loads: Counter) -> None:
    with pytest.raises(DecodeError):
        decode_message(raw)
    with pytest.raises(DecodeError):
        PrekeyBundle.from_bytes(raw)
    with pytest.raises(StateError):
        Session.from_bytes(raw)
    assert loads.calls == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"\xa1\x00",  # a key without a value
        b"\xa1\x00\x1b\x00",  # a truncated integer
        b"\xa1\x00\x45\x00",  # a truncated byte string
        b"\xa1\x00\x5b" + b"\xff" * 8,  # a byte string of 2^64 - 1 bytes
        b"\xa1\x00\x00\x00",  # trailing bytes
        b"\xa1\x00\x1c",  # a reserved additional-information value
    ],
)
def test_truncated_or_overlong_items_refused_before_decoding(raw: bytes, loads: Counter) -> None:
    with pytest.raises(DecodeError):
        decode_message(raw)
    assert loads.calls == 0


# -- bundle and state size -------------------------------------------------------------------


def _bundle_of_size(size: int) -> bytes:
    """A bundle-shaped map whose SPK field has the wrong length, exactly ``size`` bytes."""
    raw = cbor2.dumps({0: 1, 1: 2, 2: 3, 11: bytes(size - 100)})
    raw = cbor2.dumps({0: 1, 1: 2, 2: 3, 11: bytes(size - 100 + size - len(raw))})
    assert len(raw) == size
    return raw


def test_bundle_at_the_size_limit_is_decoded(loads: Counter) -> None:
    with pytest.raises(DecodeError) as info:
        PrekeyBundle.from_bytes(_bundle_of_size(MAX_BUNDLE_BYTES))
    assert not isinstance(info.value, LimitExceeded)
    assert loads.calls == 1


def test_oversize_bundle_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch, loads: Counter
) -> None:
    verify = _count(monkeypatch, e2e.prekeys.xeddsa, "verify")
    raw = _bundle_of_size(MAX_BUNDLE_BYTES + 1)
    with pytest.raises(LimitExceeded):
        PrekeyBundle.from_bytes(raw)
    with pytest.raises(LimitExceeded):
        Session.initiate(KeyPair.generate(), raw, allowed_suites=(PQ,))
    assert loads.calls == 0 and verify.calls == 0


def test_oversize_state_refused_before_decoding(loads: Counter) -> None:
    raw = cbor2.dumps({0: 1, 16: bytes(MAX_STATE_BYTES)})
    with pytest.raises(StateError):
        Session.from_bytes(raw)
    assert loads.calls == 0


def test_state_with_too_many_skipped_keys_refused() -> None:
    _, bob, _, _ = _pair(PQ)
    obj = cbor2.loads(bob.to_bytes())

    def records(count: int) -> bytes:
        return b"".join(bytes(32) + n.to_bytes(4, "big") + bytes(64) for n in range(count))

    obj[16] = records(MAX_STORED_SKIPPED)
    raw = cbor2.dumps(dict(sorted(obj.items())))
    assert Session.from_bytes(raw).to_bytes() == raw
    obj[16] = records(MAX_STORED_SKIPPED + 1)
    with pytest.raises(StateError):
        Session.from_bytes(cbor2.dumps(dict(sorted(obj.items()))))


def test_state_with_a_repeated_skipped_key_refused() -> None:
    """Found by fuzz_state: a repeated (dh, N) record loaded and then re-serialized shorter."""
    _, bob, _, _ = _pair(PQ)
    obj = cbor2.loads(bob.to_bytes())
    obj[16] = (bytes(32) + bytes(4) + bytes(64)) * 2
    with pytest.raises(StateError):
        Session.from_bytes(cbor2.dumps(dict(sorted(obj.items()))))


# -- skip distance ---------------------------------------------------------------------------


def _budget(suite: Suite) -> int:
    """Most keys one frame may make the receiver derive in ``suite`` (SPEC.md §4.5)."""
    return MAX_SKIP


def _sends(session: Session, count: int) -> list[bytes]:
    return [session.encrypt(b"%d" % i) for i in range(count)]


@pytest.fixture(scope="module")
def long_chain() -> dict[str, tuple[bytes, bytes, list[bytes]]]:
    """Per suite: Alice's and Bob's states and MAX_SKIP + 2 frames in one chain from Alice.

    Bob has received nothing of them (his Nr for the chain is 1: the first message)."""
    out = {}
    for suite in SUITES:
        alice, bob, _, _ = _pair(suite)
        alice_state, bob_state = alice.to_bytes(), bob.to_bytes()
        out[suite.name] = (alice_state, bob_state, _sends(alice, _budget(suite) + 2))
    return out


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
def test_skip_of_exactly_max_skip_is_accepted(
    suite: Suite, long_chain: dict[str, tuple[bytes, bytes, list[bytes]]]
) -> None:
    _, bob_state, frames = long_chain[suite.name]
    bob = Session.from_bytes(bob_state)
    budget = _budget(suite)
    assert bob.decrypt(frames[budget]) == b"%d" % budget
    assert len(bob.ratchet.skipped) == budget
    assert bob.decrypt(frames[0]) == b"0"


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
def test_skip_beyond_max_skip_refused_before_work(
    suite: Suite, long_chain: dict[str, tuple[bytes, bytes, list[bytes]]], work: Work
) -> None:
    _, bob_state, frames = long_chain[suite.name]
    bob = Session.from_bytes(bob_state)
    with pytest.raises(TooManySkipped):
        bob.decrypt(frames[_budget(suite) + 1])
    assert work.calls == 0
    assert bob.to_bytes() == bob_state


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
def test_new_chain_too_far_ahead_refused_before_work(suite: Suite, work: Work) -> None:
    """N > MAX_SKIP in a new chain: refused before skipping the old chain or any DH."""
    alice, bob, _, _ = _pair(suite)
    _sends(alice, 5)  # Bob misses them: the old chain has 5 keys to skip
    alice.decrypt(bob.encrypt(b"reply"))
    budget = _budget(suite)
    frames = _sends(alice, budget + 2)
    before = bob.to_bytes()
    work.reset()
    with pytest.raises(TooManySkipped):
        bob.decrypt(frames[-1])
    assert work.calls == 0
    assert bob.to_bytes() == before
    assert bob.decrypt(frames[budget]) == b"%d" % budget  # the boundary still works


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
@pytest.mark.parametrize("n", [0, 5])
def test_previous_chain_beyond_the_frame_budget_is_abandoned(
    suite: Suite, n: int, work: Work
) -> None:
    """A new chain's frame derives at most budget + 1 keys and one X25519 before its body
    authenticates (none at all: its sealed header authenticates the frame first); the
    previous chain's keys are stored only up to Nr + budget - N, the rest are abandoned
    (those messages are lost), and the frame itself is accepted."""
    budget = _budget(suite)
    alice, bob, _, _ = _pair(suite)
    missed = _sends(alice, budget + 3)  # N = 1 .. budget + 3; Bob has Nr = 1
    alice.decrypt(bob.encrypt(b"reply"))
    frames = _sends(alice, n + 1)
    forged = frames[n][:-1] + bytes([frames[n][-1] ^ 1])
    before = bob.to_bytes()
    work.reset()
    with pytest.raises(AuthenticationFailed):
        bob.decrypt(forged)
    assert work.calls == 0
    assert bob.to_bytes() == before
    work.reset()
    assert bob.decrypt(frames[n]) == b"%d" % n
    assert work.calls == budget + 1 + 2  # chain steps of both chains; two X25519 once genuine
    kept = budget - n  # old-chain keys N = 1 .. budget - n
    assert len(bob.ratchet.skipped) == kept + n
    assert bob.decrypt(missed[kept - 1]) == b"%d" % (kept - 1)
    with pytest.raises(DuplicateMessage):  # abandoned: beyond the frame's budget
        bob.decrypt(missed[kept])


def test_previous_chain_of_exactly_max_skip_is_accepted() -> None:
    alice, bob, _, _ = _pair(PQ)
    missed = _sends(alice, MAX_SKIP)  # PN = MAX_SKIP + 1, Nr = 1
    alice.decrypt(bob.encrypt(b"reply"))
    assert bob.decrypt(alice.encrypt(b"new chain")) == b"new chain"
    assert len(bob.ratchet.skipped) == MAX_SKIP
    assert bob.decrypt(missed[-1]) == b"%d" % (MAX_SKIP - 1)


# -- stored keys and chains stay bounded -------------------------------------------------------


_STEP = min(MAX_SKIP, 32)


def _skip_through(alice: Session, bob: Session, count: int) -> list[bytes]:
    """Alice sends ``count`` frames; Bob receives every (_STEP + 1)-th one, so he stores
    _STEP skipped keys per frame received. Returns the frames."""
    frames = _sends(alice, count)
    for i in range(_STEP, count, _STEP + 1):
        bob.decrypt(frames[i])
    return frames


def test_stored_skipped_keys_are_capped_oldest_first() -> None:
    alice, bob, _, _ = _pair(PQ)
    per_chain = (_STEP + 1) * 27  # 27 * 32 = 864 keys per chain, 3 chains > 2000
    chains: list[list[bytes]] = []
    for _ in range(3):
        chains.append(_skip_through(alice, bob, per_chain))
        alice.decrypt(bob.encrypt(b"turn"))
    assert len(bob.ratchet.skipped) == MAX_STORED_SKIPPED
    with pytest.raises(DuplicateMessage):  # evicted: the very oldest skipped key
        bob.decrypt(chains[0][0])
    assert bob.decrypt(chains[2][0]) == b"0"  # the newest chain's keys are all there
    assert bob.decrypt(chains[2][per_chain - 2]) == b"%d" % (per_chain - 2)


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
def test_skipped_keys_expire_after_max_skipped_age(suite: Suite) -> None:
    """A skipped key more than MAX_SKIPPED_AGE messages behind its chain is dropped, also
    when the later messages all arrive in order (the per-message fast path)."""
    alice, bob, _, _ = _pair(suite)
    frames = _sends(alice, MAX_SKIPPED_AGE + 3)  # N = 1 .. ; Bob has Nr = 1
    bob.decrypt(frames[2])  # skips N = 1, 2 (frames 0, 1)
    for frame in frames[3:MAX_SKIPPED_AGE]:  # up to N = AGE: Nr = AGE + 1
        bob.decrypt(frame)
    assert len(bob.ratchet.skipped) == 2  # N = 1 is exactly AGE behind: kept
    bob.decrypt(frames[MAX_SKIPPED_AGE])  # Nr = AGE + 2: N = 1 is too old
    assert [n for _, n in bob.ratchet.skipped] == [2]
    bob.decrypt(frames[MAX_SKIPPED_AGE + 1])  # Nr = AGE + 3: N = 2 too
    assert len(bob.ratchet.skipped) == 0
    for old in frames[:2]:
        with pytest.raises(DuplicateMessage):
            bob.decrypt(old)


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
def test_receiving_chains_are_capped(suite: Suite) -> None:
    alice, bob, _, _ = _pair(suite)
    kept: list[bytes] = []
    for _ in range(MAX_RECEIVER_CHAINS + 2):
        first, second = _sends(alice, 2)
        bob.decrypt(second)
        kept.append(first)
        alice.decrypt(bob.encrypt(b"turn"))
        assert len(bob.ratchet.old_chains) < MAX_RECEIVER_CHAINS
    assert len(bob.ratchet.skipped) == MAX_RECEIVER_CHAINS
    with pytest.raises(E2EError):  # its chain was dropped with its keys
        bob.decrypt(kept[0])
    assert bob.decrypt(kept[-MAX_RECEIVER_CHAINS]) == b"0"


def test_frames_are_not_reencoded_for_authentication() -> None:
    """Sanity of the counting fixtures: they do count (a normal decrypt decodes once)."""
    calls: list[int] = []
    real: Callable[..., Any] = cbor2.loads

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    alice, bob, _, _ = _pair(PQ)
    frame = alice.encrypt(b"x")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cbor2, "loads", counted)
        bob.decrypt(frame)
    assert calls == [1]


# -- boundaries pinned by mutation testing (mutation/REPORT.md) --------------------------------


def test_sending_counter_stops_at_max_counter() -> None:
    """Ns may reach MAX_COUNTER (N = MAX_COUNTER - 1 is the last message sent), no further."""
    alice, _, _, _ = _pair(PQ)
    obj = cbor2.loads(alice.to_bytes())
    obj[9] = MAX_COUNTER - 1  # NS
    s = Session.from_bytes(cbor2.dumps(dict(sorted(obj.items()))))
    s.encrypt(b"last")
    assert s.ratchet.ns == MAX_COUNTER
    before = s.to_bytes()
    with pytest.raises(LimitExceeded):
        s.encrypt(b"one too many")
    assert s.to_bytes() == before
    assert Session.from_bytes(before).ratchet.ns == MAX_COUNTER


def test_largest_id_is_accepted_and_one_more_is_not() -> None:
    schema = {0: Field(int), 5: Field(int)}
    assert decode_map(cbor2.dumps({0: 1, 5: 2**32 - 1}), schema, "t")[5] == 2**32 - 1
    with pytest.raises(DecodeError):
        decode_map(cbor2.dumps({0: 1, 5: 2**32}), schema, "t")


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        (b"\xa0", 1),  # the empty map: a map head, so it reaches the decoder (no version)
        (cbor2.dumps({i: 0 for i in range(23)}), 1),  # 23 entries: the largest small map
        (cbor2.dumps({i: 0 for i in range(24)}), 0),  # 24 entries: a two-byte head
        (b"\xa1\x00\x61a", 0),  # a text string value
        (b"\xa1\x00\x60", 0),  # an empty text string value
        (
            cbor2.dumps({0: 2**40}),
            1,
        ),  # an 8-byte integer is well-formed: the range check refuses it
        (b"\xa1\x00\x1c" + bytes(16), 0),  # reserved additional information 28
        (b"\xa1\x00\x1d" + bytes(32), 0),  # reserved additional information 29
    ],
)
def test_map_head_and_item_kinds_checked_before_decoding(
    raw: bytes, decoded: int, loads: Counter
) -> None:
    with pytest.raises(DecodeError):
        decode_map(raw, {0: Field(int)}, "t")
    assert loads.calls == decoded
