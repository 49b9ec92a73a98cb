"""The benchmark workloads through e2e's public API, their floors, and a small timer.

A workload factory takes (suite id, payload size) and returns ``(setup, target)``: every
round calls ``setup()`` untimed and then times ``target(*setup())`` once. pytest-benchmark
runs them through ``benchmark.pedantic``; :func:`measure` runs them without pytest (for
``python -m e2e bench`` and benches/peers.py). :data:`FLOORS` maps each workload to the
function of :mod:`benches.floor` that makes only its primitive calls.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

from benches import floor
from e2e import PQ, E2EError, KeyPair, LocalPrekeys, Session
from e2e.constants import MAX_SKIP
from e2e.frame import SEALED_HEADER_LEN, K, decode_message, encode_message
from e2e.ratchet import sealed_body_len
from e2e.suite import get_suite

Setup = Callable[[], tuple[Any, ...]]
Target = Callable[..., object]
Factory = Callable[[int, int], tuple[Setup, Target]]

SIZES = {"256B": 256, "4KiB": 4096, "64KiB": 65536}
SUITE_NAMES = {PQ.id: "pq"}


def _no_setup() -> tuple[()]:
    return ()


def established(suite_id: int) -> tuple[Session, Session]:
    """Alice and Bob after one message each way (Alice's prekey fields are dropped)."""
    suite = get_suite(suite_id)
    alice_id, bob_id = KeyPair.generate(), KeyPair.generate()
    bob_keys = LocalPrekeys.generate(bob_id, suite, one_time=1)
    alice = Session.initiate(alice_id, bob_keys.bundle().to_bytes(), allowed_suites=(suite,))
    bob, _ = Session.respond(bob_id, bob_keys, alice.encrypt(b"hi"), allowed_suites=(suite,))
    alice.decrypt(bob.encrypt(b"hello"))
    return alice, bob


def encrypt(suite: int, size: int) -> tuple[Setup, Target]:
    alice, _ = established(suite)
    pt = os.urandom(size)
    return _no_setup, lambda: alice.encrypt(pt)


def decrypt(suite: int, size: int) -> tuple[Setup, Target]:
    alice, bob = established(suite)
    pt = os.urandom(size)
    return lambda: (alice.encrypt(pt),), bob.decrypt


def oneway(suite: int, size: int) -> tuple[Setup, Target]:
    alice, bob = established(suite)
    pt = os.urandom(size)
    return _no_setup, lambda: bob.decrypt(alice.encrypt(pt))


def out_of_order(suite: int, size: int) -> tuple[Setup, Target]:
    alice, bob = established(suite)
    pt = os.urandom(size)

    def setup() -> tuple[bytes, bytes]:
        first = alice.encrypt(pt)
        return alice.encrypt(pt), first

    def target(later: bytes, earlier: bytes) -> None:
        bob.decrypt(later)
        bob.decrypt(earlier)

    return setup, target


def ping_pong(suite: int, size: int) -> tuple[Setup, Target]:
    alice, bob = established(suite)
    pt = os.urandom(size)
    turn = [alice, bob]

    def target() -> None:
        sender, receiver = turn
        receiver.decrypt(sender.encrypt(pt))
        turn.reverse()

    return _no_setup, target


def session_setup(suite_id: int, size: int) -> tuple[Setup, Target]:
    suite = get_suite(suite_id)
    allowed = (suite,)
    alice_id, bob_id = KeyPair.generate(), KeyPair.generate()
    pt = os.urandom(size)

    def setup() -> tuple[LocalPrekeys, bytes]:
        keys = LocalPrekeys.generate(bob_id, suite, one_time=1)
        return keys, keys.bundle().to_bytes()

    def target(keys: LocalPrekeys, bundle: bytes) -> None:
        alice = Session.initiate(alice_id, bundle, allowed_suites=allowed)
        Session.respond(bob_id, keys, alice.encrypt(pt), allowed_suites=allowed)

    return setup, target


def frame_encode(suite_id: int, size: int) -> tuple[Setup, Target]:
    suite = get_suite(suite_id)
    header = os.urandom(SEALED_HEADER_LEN)
    body_len = sealed_body_len(suite, size)
    body = os.urandom(body_len)
    return _no_setup, lambda: encode_message(suite, header, None, body_len, lambda _: body)


def frame_decode(suite_id: int, size: int) -> tuple[Setup, Target]:
    suite = get_suite(suite_id)
    header = os.urandom(SEALED_HEADER_LEN)
    body_len = sealed_body_len(suite, size)
    body = os.urandom(body_len)
    raw = encode_message(suite, header, None, body_len, lambda _: body)
    return _no_setup, lambda: decode_message(raw)


# -- hostile input (issue 11): frames the receiver rejects, timed against a normal decrypt --------
#
# These run e2e on both sides: side A rejects a hostile frame, side B is the ``decrypt``
# workload above (an in-order message of the same suite and size). Their ratio is what a
# rejected frame costs in normal decrypts; benches/bounds.json bounds it at 10 (SPEC.md §12).
# A rejected frame leaves the state exactly as it was, so one frame is replayed every call.


def _with_old_chains(suite: int) -> tuple[Session, Session]:
    """After enough turns that Bob holds the most old receiving chains (MAX_RECEIVER_CHAINS
    - 1): the most header keys a header is tried under before it is refused."""
    alice, bob = established(suite)
    for _ in range(6):
        bob.decrypt(alice.encrypt(b"turn"))
        alice.decrypt(bob.encrypt(b"turn"))
    return alice, bob


def _rejected(session: Session, raw: bytes) -> Target:
    def target() -> None:
        try:
            session.decrypt(raw)
        except E2EError:
            return
        raise AssertionError("a hostile frame was accepted")

    return target


def _with_header(raw: bytes, header: bytes) -> bytes:
    fields = cbor2.loads(raw)
    fields[K.HEADER] = header
    return bytes(cbor2.dumps(dict(sorted(fields.items()))))


def hostile_forged_header(suite: int, size: int) -> tuple[Setup, Target]:
    """A header no key of the receiver opens: random sealed-header bytes, tried under the
    current, next and every old chain's header key."""
    alice, bob = _with_old_chains(suite)
    raw = alice.encrypt(os.urandom(size))
    header = os.urandom(SEALED_HEADER_LEN)
    return _no_setup, _rejected(bob, _with_header(raw, header))


def hostile_forged_body(suite: int, size: int) -> tuple[Setup, Target]:
    """The peer's genuine next frame (a new chain: a DH ratchet step) with one body byte
    changed. It is refused at the header, which authenticates the body."""
    alice, bob = established(suite)
    raw = alice.encrypt(os.urandom(size))
    return _no_setup, _rejected(bob, raw[:-1] + bytes([raw[-1] ^ 1]))


def hostile_max_skip(suite: int, size: int) -> tuple[Setup, Target]:
    """The costliest frame to reject: the peer's genuine frame MAX_SKIP messages ahead with its
    body changed (its header authenticates the body, so it is refused before any key is
    derived)."""
    alice, bob = established(suite)
    raw = [alice.encrypt(os.urandom(size)) for _ in range(MAX_SKIP + 1)][-1]
    return _no_setup, _rejected(bob, raw[:-1] + bytes([raw[-1] ^ 1]))


@dataclass(frozen=True)
class Workload:
    """One workload: e2e's factory, its floor's, and the payload sizes it runs at."""

    name: str
    e2e: Factory
    floor: Factory
    sizes: tuple[str, ...]
    #: Messages per timed call (out-of-order times a pair).
    messages: int = 1


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("encrypt", encrypt, floor.encrypt, ("256B", "4KiB", "64KiB")),
        Workload("decrypt", decrypt, floor.decrypt, ("256B", "4KiB", "64KiB")),
        Workload("oneway", oneway, floor.oneway, ("256B", "4KiB", "64KiB")),
        Workload("out_of_order", out_of_order, floor.out_of_order, ("256B",), messages=2),
        Workload("ping_pong", ping_pong, floor.ping_pong, ("256B",)),
        Workload("setup", session_setup, floor.session_setup, ("256B",)),
        Workload("frame_encode", frame_encode, floor.frame_encode, ("256B", "64KiB")),
        Workload("frame_decode", frame_decode, floor.frame_decode, ("256B", "64KiB")),
        # side B is e2e's own normal decrypt, not a floor (see "hostile input" above)
        Workload("hostile_forged_header", hostile_forged_header, decrypt, ("256B",)),
        Workload("hostile_forged_body", hostile_forged_body, decrypt, ("256B",)),
        Workload("hostile_max_skip", hostile_max_skip, decrypt, ("256B",)),
    )
}

#: Workloads whose side B is e2e's normal decrypt rather than a floor.
HOSTILE = ("hostile_forged_header", "hostile_forged_body", "hostile_max_skip")


def case_name(workload: str, suite: int, size: str) -> str:
    """The id both benches and check_ratios use: e.g. ``pq-oneway-256B``."""
    return f"{SUITE_NAMES[suite]}-{workload}-{size}"


def cases() -> list[tuple[str, int, str]]:
    """Every (workload, suite, size) that is benchmarked."""
    return [
        (w.name, suite, size)
        for w in WORKLOADS.values()
        for suite in (PQ.id,)
        for size in w.sizes
    ]


def measure(factory: Factory, suite: int, size: int, rounds: int, warmup: int = 20) -> float:
    """Median time of one call of the workload in seconds, as pedantic() times it."""
    setup, target = factory(suite, size)
    times: list[float] = []
    clock = time.perf_counter
    for i in range(warmup + rounds):
        args = setup()
        start = clock()
        target(*args)
        elapsed = clock() - start
        if i >= warmup:
            times.append(elapsed)
    return statistics.median(times)
