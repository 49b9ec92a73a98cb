"""Peak memory of one attachment streamed through e2e.attachment (SPEC.md §16).

    python benches/attachment_memory.py [--mib 1024]

In this fresh interpreter: import e2e.attachment and make one 1 MiB plaintext piece, then read
the resident set (VmRSS, the interpreter's own); then stream ``--mib`` MiB through an
Encryptor into a Decryptor, 1 MiB at a time (what a client does from a file to a socket and
from a socket to a file), and check that the plaintext that came out is the plaintext that
went in (a running SHA-256 of each) and that the digest verified (it is learnt in a first
pass over the same bytes). Prints JSON: the base, the
peak (VmHWM) and the peak above the base, in bytes. Memory that grew with the attachment's
size would show here as hundreds of MiB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterator


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    args = parser.parse_args(argv)
    from e2e import _testing
    from e2e.attachment import Decryptor, Encryptor
    from e2e.vectors.protocol import DRng

    piece = bytearray(os.urandom(1 << 20))
    size = args.mib << 20
    # warm up the code paths (first-call allocations belong to the interpreter's own)
    list(Encryptor().finish())
    base = _status("VmRSS")

    def stream() -> Encryptor:
        # the same key and salt in both passes (a seeded source, allowed in this bench only)
        with _testing.injected_rng():
            return Encryptor(rng=DRng(b"attachment-memory"))

    def pieces() -> Iterator[bytearray]:
        for i in range(args.mib):
            piece[:8] = i.to_bytes(8, "big")  # every piece different
            yield piece

    # Pass 1 encrypts to learn the digest; pass 2 encrypts the same bytes again into a
    # decryptor that checks every chunk and, at the end, that digest.
    enc = stream()
    for p in pieces():
        enc.update(p)
    for _ in enc.finish():
        pass
    digest = enc.digest
    enc = stream()
    dec = Decryptor(enc.key, digest, size)
    sent, got = hashlib.sha256(), hashlib.sha256()
    dec.update(enc.header)
    for p in pieces():
        sent.update(p)
        got.update(dec.update(enc.update(p)))
    for tail in enc.finish():
        got.update(dec.update(tail))
    got.update(dec.finish())
    if sent.digest() != got.digest() or dec.released != size:
        print("the plaintext that came out differs", file=sys.stderr)
        return 1
    peak = _status("VmHWM")
    print(json.dumps({"mib": args.mib, "base": base, "peak": peak, "peak_above_base": peak - base}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
