"""libsignal (native, through its Node binding) beside e2e, on the same workloads, one run.

    python benches/libsignal_peer.py [--package libsignal-103] [--rounds N] [--batches B]
        [--json FILE]

Needs node and ``cd tests/interop && npm ci`` (libsignal-client 0.103.0 by default, any
pinned alias with --package; AGPL-3.0, a measuring tool only). From 0.92 on both
libsignal and e2e.libsignal run SPQR in these sessions (0.90.0 too: it offers SPQR and e2e
accepts). Rounds are split into batches that alternate between the processes:
for every batch and workload, libsignal (node) runs a batch, then e2e's default PQ suite,
then e2e.libsignal (e2e speaking libsignal's wire format, version 4), so a load change on
the shared machine hits all of them alike. Each call is timed alone with its setup untimed
(as benches/ does) and the table shows median microseconds per call with libsignal's time as
a multiple of e2e's.

Workloads (256-byte payloads): encrypt, decrypt (in order), oneway (encrypt then decrypt),
ping_pong (the parties take turns: every message is a DH ratchet step) and setup (PQXDH: a
bundle processed, the first message encrypted and accepted; bundle generation untimed).
It also reports e2e.libsignal's bound on unauthenticated work: the median cost of a forged
message (a new ratchet key, MAX_JUMP ahead in its chain and SPQR_MAX_JUMP in its SPQR chain,
tried against the current and the archived state; benches/bench_libsignal_spqr.py) over the
median cost of an in-order decryption.
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

from benches.bench_libsignal_spqr import _no_setup, established, in_order_decrypt, message  # noqa: E402
from benches.bench_libsignal_spqr import forged as forged_message  # noqa: E402
from benches.workloads import WORKLOADS as E2E_WORKLOADS  # noqa: E402
from e2e.keys import KeyPair  # noqa: E402
from e2e.libsignal import MAX_JUMP, LibsignalPrekeys, SessionRecord, initiate  # noqa: E402
from e2e.libsignal.session import MAX_PREVIOUS_STATES, SPQR_MAX_JUMP  # noqa: E402
from e2e.suite import PQ  # noqa: E402

SIZE = 256
WORKLOADS = ["oneway", "encrypt", "decrypt", "ping_pong", "setup"]
Setup = Callable[[], tuple[Any, ...]]
Target = Callable[..., object]


def e2e_libsignal(workload: str) -> tuple[Setup, Target]:
    """e2e.libsignal's version of a workload (with SPQR, its default)."""
    pt = os.urandom(SIZE)
    if workload == "setup":
        alice_id, bob_id = KeyPair.generate(), KeyPair.generate()

        def setup() -> tuple[LibsignalPrekeys]:
            return (LibsignalPrekeys.generate(bob_id, 2, one_time=1),)

        def target(keys: LibsignalPrekeys) -> None:
            alice = SessionRecord(initiate(alice_id, 1, keys.bundle()))
            SessionRecord().decrypt(*alice.encrypt(pt), prekeys=keys, local_identity=bob_id)

        return setup, target
    if workload == "encrypt":
        alice = established()[0]
        return _no_setup, lambda: alice.encrypt(pt)
    if workload == "decrypt":
        return in_order_decrypt()
    return message(workload, True)


def _batch(setup: Setup, target: Target, count: int, out: list[float]) -> None:
    clock = time.perf_counter_ns
    for _ in range(count):
        args = setup()
        start = clock()
        target(*args)
        out.append(clock() - start)


def run(rounds: int, batches: int, package: str = "libsignal-103") -> dict[str, dict[str, float]]:
    from interop.harness import Harness, require_node  # noqa: F401

    h = Harness(package)
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


def table(res: dict[str, dict[str, float]], package: str = "libsignal-103") -> str:
    lines = [
        "| workload (256 B) | e2e PQ µs | e2e.libsignal µs | "
        f"{package.replace('-', ' ')} (node) µs "
        "| libsignal × e2e PQ | libsignal × e2e.libsignal |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for w in WORKLOADS:
        pq, ms, ls = res["e2e PQ"][w], res["e2e.libsignal"][w], res["libsignal"][w]
        lines.append(f"| {w} | {pq:.1f} | {ms:.1f} | {ls:.1f} | {ls / pq:.2f}× | {ls / ms:.2f}× |")
    u = res["unauthenticated work"]
    lines.append("")
    lines.append(
        f"e2e.libsignal forged message (new ratchet key, {MAX_JUMP} ahead, SPQR "
        f"{SPQR_MAX_JUMP} ahead, "
        f"{MAX_PREVIOUS_STATES + 1} states tried): {u['forged message']:.1f} µs = "
        f"{u['forged message'] / u['in-order decrypt']:.1f}× an in-order decryption "
        f"({u['in-order decrypt']:.1f} µs)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="libsignal-103")
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    res = run(args.rounds, args.batches, args.package)
    print(table(res, args.package))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
