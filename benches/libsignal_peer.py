"""libsignal (native, through its Node binding) beside e2e, on the same workloads, one run.

    python benches/libsignal_peer.py [--rounds N] [--batches B] [--json FILE]

Needs node and ``cd tests/interop && npm ci`` (libsignal-client 0.90.0; AGPL-3.0, a
measuring tool only). Rounds are split into batches that alternate between the processes:
for every batch and workload, libsignal (node) runs a batch, then e2e's default PQ suite,
then e2e.libsignal (e2e speaking libsignal's wire format, version 4), so a load change on
the shared machine hits all of them alike. Each call is timed alone with its setup untimed
(as benches/ does) and the table shows median microseconds per call with libsignal's time as
a multiple of e2e's.

Workloads (256-byte payloads): encrypt, decrypt (in order), oneway (encrypt then decrypt),
ping_pong (the parties take turns: every message is a DH ratchet step) and setup (PQXDH: a
bundle processed, the first message encrypted and accepted; bundle generation untimed).
It also reports e2e.libsignal's bound on unauthenticated work: the median cost of a forged
message (a new ratchet key, MAX_JUMP ahead, tried against the current and both archived
states) over the median cost of an in-order decryption.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benches.workloads import WORKLOADS as E2E_WORKLOADS  # noqa: E402
from e2e.errors import E2EError  # noqa: E402
from e2e.keys import KeyPair  # noqa: E402
from e2e.libsignal import MAX_JUMP, LibsignalPrekeys, SessionRecord, initiate  # noqa: E402
from e2e.libsignal.session import MAX_PREVIOUS_STATES  # noqa: E402
from e2e.libsignal.wire import encode_signal_message  # noqa: E402
from e2e.suite import PQ  # noqa: E402

SIZE = 256
WORKLOADS = ["oneway", "encrypt", "decrypt", "ping_pong", "setup"]
Setup = Callable[[], tuple[Any, ...]]
Target = Callable[..., object]


def _no_setup() -> tuple[()]:
    return ()


def _established() -> tuple[SessionRecord, SessionRecord]:
    alice_id, bob_id = KeyPair.generate(), KeyPair.generate()
    keys = LibsignalPrekeys.generate(bob_id, 2, one_time=1)
    alice, bob = SessionRecord(initiate(alice_id, 1, keys.bundle())), SessionRecord()
    bob.decrypt(*alice.encrypt(b"hi"), prekeys=keys, local_identity=bob_id)
    alice.decrypt(*bob.encrypt(b"hello"))
    return alice, bob


def e2e_libsignal(workload: str) -> tuple[Setup, Target]:
    """e2e.libsignal's version of a workload."""
    pt = os.urandom(SIZE)
    if workload == "setup":
        alice_id, bob_id = KeyPair.generate(), KeyPair.generate()

        def setup() -> tuple[LibsignalPrekeys]:
            return (LibsignalPrekeys.generate(bob_id, 2, one_time=1),)

        def target(keys: LibsignalPrekeys) -> None:
            alice = SessionRecord(initiate(alice_id, 1, keys.bundle()))
            SessionRecord().decrypt(*alice.encrypt(pt), prekeys=keys, local_identity=bob_id)

        return setup, target
    alice, bob = _established()
    if workload == "encrypt":
        return _no_setup, lambda: alice.encrypt(pt)
    if workload == "decrypt":
        return lambda: alice.encrypt(pt), bob.decrypt
    if workload == "oneway":
        return _no_setup, lambda: bob.decrypt(*alice.encrypt(pt))
    turn = [alice, bob]

    def ping() -> None:
        sender, receiver = turn
        receiver.decrypt(*sender.encrypt(pt))
        turn.reverse()

    return _no_setup, ping


def forged_message() -> tuple[Setup, Target]:
    """The costliest message e2e.libsignal rejects: an unknown ratchet key, MAX_JUMP ahead,
    tried against the current state and MAX_PREVIOUS_STATES archived ones."""
    alice_id, bob_id = KeyPair.generate(), KeyPair.generate()
    bob = SessionRecord()
    for _ in range(MAX_PREVIOUS_STATES + 1):
        keys = LibsignalPrekeys.generate(bob_id, 2, one_time=1)
        alice = SessionRecord(initiate(alice_id, 1, keys.bundle()))
        bob.decrypt(*alice.encrypt(b"hi"), prekeys=keys, local_identity=bob_id)
    assert len(bob.previous) == MAX_PREVIOUS_STATES
    ct = os.urandom(SIZE + 16)

    def setup() -> tuple[int, bytes]:
        msg = encode_signal_message(
            4,
            os.urandom(32),
            KeyPair.generate().public,
            MAX_JUMP,
            0,
            ct,
            alice_id.public,
            bob_id.public,
        )
        return 2, msg

    def target(kind: int, msg: bytes) -> None:
        try:
            bob.decrypt(kind, msg)
        except E2EError:
            return
        raise AssertionError("a forged message was accepted")

    return setup, target


def _batch(setup: Setup, target: Target, count: int, out: list[float]) -> None:
    clock = time.perf_counter_ns
    for _ in range(count):
        args = setup()
        start = clock()
        target(*args)
        out.append(clock() - start)


def run(rounds: int, batches: int) -> dict[str, dict[str, float]]:
    from interop.harness import Harness, require_node  # noqa: F401

    h = Harness("libsignal-090")
    times: dict[str, dict[str, list[float]]] = {
        k: {w: [] for w in WORKLOADS} for k in ("libsignal", "e2e PQ", "e2e.libsignal")
    }
    extra: dict[str, list[float]] = {"in-order decrypt": [], "forged message": []}
    try:
        ours = {w: E2E_WORKLOADS[w].e2e(PQ.id, SIZE) for w in WORKLOADS}
        mine = {w: e2e_libsignal(w) for w in WORKLOADS}
        forged = forged_message()
        plain_decrypt = e2e_libsignal("decrypt")
        for b in range(batches):
            for w in WORKLOADS:
                n = max(2, rounds // batches // (10 if w == "setup" else 1))
                warm = b == 0
                got = h.call("bench_workload", workload=w, size=SIZE, count=n + (5 if warm else 0))
                times["libsignal"][w] += got["ns"][5 if warm else 0 :]
                for name, (setup, target) in (("e2e PQ", ours[w]), ("e2e.libsignal", mine[w])):
                    sink: list[float] = []
                    _batch(setup, target, n + (5 if warm else 0), sink)
                    times[name][w] += sink[5 if warm else 0 :]
            n = max(2, rounds // batches)
            _batch(*plain_decrypt, n, extra["in-order decrypt"])
            _batch(*forged, n, extra["forged message"])
    finally:
        h.close()
    out = {k: {w: statistics.median(v) / 1000 for w, v in d.items()} for k, d in times.items()}
    out["unauthenticated work"] = {k: statistics.median(v) / 1000 for k, v in extra.items()}
    return out


def table(res: dict[str, dict[str, float]]) -> str:
    lines = [
        "| workload (256 B) | e2e PQ µs | e2e.libsignal µs | libsignal 0.90 (node) µs "
        "| libsignal × e2e PQ | libsignal × e2e.libsignal |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for w in WORKLOADS:
        pq, ms, ls = res["e2e PQ"][w], res["e2e.libsignal"][w], res["libsignal"][w]
        lines.append(f"| {w} | {pq:.1f} | {ms:.1f} | {ls:.1f} | {ls / pq:.2f}× | {ls / ms:.2f}× |")
    u = res["unauthenticated work"]
    lines.append("")
    lines.append(
        f"e2e.libsignal forged message (new ratchet key, {MAX_JUMP} ahead, "
        f"{MAX_PREVIOUS_STATES + 1} states tried): {u['forged message']:.1f} µs = "
        f"{u['forged message'] / u['in-order decrypt']:.1f}× an in-order decryption "
        f"({u['in-order decrypt']:.1f} µs)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    res = run(args.rounds, args.batches)
    print(table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
