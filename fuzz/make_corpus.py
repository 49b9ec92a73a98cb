"""Write the fuzz fixture and the seed corpora: ``python fuzz/make_corpus.py``.

* ``fuzz/decrypt_fixture.cbor``: per suite, Bob's and Alice's states mid-conversation and
  the frames around them (used by fuzz_decrypt and fuzz_state);
* ``tests/corpus/{frame,bundle,decrypt,state}/seed-<sha1>``: valid objects and a few
  hand-made malformed ones.

Re-running replaces the fixture (the ML-KEM encapsulation is random, so the states change)
and the ``seed-*`` files; ``crash-*`` regression files are kept. Replay them all with
``pytest tests/test_corpus.py``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cbor2

from e2e import PQ, Session, Suite
from fuzz._harness import CORPUS, FIXTURE, DetRng, bob_prekeys, identity


def conversation(suite: Suite) -> tuple[dict[str, object], list[bytes], list[bytes]]:
    """Run a fixed conversation; return the fixture entry, all frames, all states."""
    rng = DetRng(b"conversation-%d" % suite.id)
    prekeys = bob_prekeys(suite)
    bundle = prekeys.bundle().to_bytes()
    alice = Session.initiate(identity("alice"), bundle, allowed_suites=(suite,), rng=rng)
    states = [alice.to_bytes()]
    m0 = alice.encrypt(b"m0")
    m1 = alice.encrypt(b"m1")
    bob, _ = Session.respond(identity("bob"), prekeys, m0, allowed_suites=(suite,), rng=rng)
    bob.decrypt(m1)
    b0 = bob.encrypt(b"b0")
    alice.decrypt(b0)
    a = [alice.encrypt(b"a%d" % i) for i in range(1, 6)]
    bob.decrypt(a[0])
    bob.decrypt(a[3])  # a[1], a[2] are now skipped keys; a[4] is undelivered
    bob_state, alice_state = bob.to_bytes(), alice.to_bytes()
    later_bob = Session.from_bytes(bob_state, rng=rng)
    b1 = later_bob.encrypt(b"b1")
    later_alice = Session.from_bytes(alice_state, rng=rng)
    later_alice.decrypt(b1)
    a6 = later_alice.encrypt(b"a6")  # a new chain, PN = 5: Bob must skip a[4] first
    states += [bob_state, alice_state, later_bob.to_bytes(), later_alice.to_bytes()]
    frames = [m0, m1, b0, *a, b1, a6]
    fixture = {"bob": bob_state, "alice": alice_state, "frames": frames}
    return fixture, frames, states


def malformed() -> list[bytes]:
    return [
        b"",
        b"\xa0",
        b"\x80",
        b"\xbf\x00\x01\xff",  # indefinite-length map
        b"\xa1\x00\xc1\x00",  # a tag
        b"\xa1\x00\x18\x01",  # non-shortest integer
        b"\xa2\x01\x02\x00\x01",  # unsorted keys
        b"\xa1\x00\x01" * 3,
        b"\x9f" * 64 + b"\xff" * 64,
    ]


def tweak(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def write(target: str, items: list[bytes]) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("seed-*"):
        old.unlink()
    for item in items:
        (d / f"seed-{hashlib.sha1(item).hexdigest()}").write_bytes(item)  # noqa: S324


def run() -> None:
    fixture: dict[str, object] = {}
    frames: list[bytes] = []
    states: list[bytes] = []
    bundles: list[bytes] = []
    for name, suite in (("pq", PQ),):
        entry, fr, st = conversation(suite)
        fixture[name] = entry
        frames += fr
        states += st
        keys = bob_prekeys(suite)
        bundles += [keys.bundle().to_bytes(), keys.bundle(use_one_time=False).to_bytes()]
    FIXTURE.write_bytes(cbor2.dumps(fixture))
    bad = malformed()
    write("frame", frames + [tweak(f, 1) for f in frames[:3]] + bad)
    write("bundle", bundles + [tweak(b, len(b) - 5) for b in bundles] + bad)
    write("decrypt", frames + [tweak(f, len(f) - 3) for f in frames] + bad)
    write("state", states + [tweak(s, 2) for s in states] + bad)


if __name__ == "__main__":
    run()
