"""Fuzz target: prekey bundle decoding, verification and session initiation from it.

Invariants: only E2EError on bad input; an accepted bundle re-encodes to its exact bytes;
``Session.initiate`` on the raw bytes raises only E2EError, and succeeds only for a bundle
whose signatures verify.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__file__)))

from e2e import PQ, E2EError, PrekeyBundle, Session
from e2e.errors import DecodeError, InvalidSignature
from fuzz._harness import identity, main

_ALICE = identity("alice")


def test_one_input(data: bytes) -> None:
    try:
        bundle = PrekeyBundle.from_bytes(data)
    except DecodeError:
        bundle = None
    if bundle is not None:
        assert bundle.to_bytes() == data, "accepted bundle does not re-encode to its bytes"
        try:
            bundle.verify()
            verified = True
        except InvalidSignature:
            verified = False
    try:
        session = Session.initiate(_ALICE, data, allowed_suites=(PQ,))
    except E2EError:
        return
    assert bundle is not None and verified, "initiate accepted a bundle that does not verify"
    frame = session.encrypt(b"fuzz")
    assert type(frame) is bytes


if __name__ == "__main__":
    main(test_one_input, "bundle")
