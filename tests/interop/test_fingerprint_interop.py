"""Safety numbers against the official libsignal client, live (fresh keys each run), for
every pinned libsignal version; vectors/fingerprint.json keeps fixed cases."""

from __future__ import annotations

import os

import pytest

from e2e.fingerprint import safety_number, serialize_identity
from e2e.keys import KeyPair
from interop.harness import Harness


@pytest.mark.parametrize("version", [1, 2])
def test_safety_numbers_match_libsignal(libsignal: Harness, version: int) -> None:
    for _ in range(4):
        a, b = KeyPair.generate().public, KeyPair.generate().public
        aid, bid = os.urandom(8).hex().encode(), "caf\u00e9-m\u00fcller".encode()
        mine = safety_number(aid, a, bid, b, version=version)
        theirs = safety_number(bid, b, aid, a, version=version)
        got = libsignal.call(
            "fingerprint", iterations=5200, version=version,
            local_id=aid.hex(), local_key=serialize_identity(a).hex(),
            remote_id=bid.hex(), remote_key=serialize_identity(b).hex(),
            scanned=theirs.scannable.to_bytes().hex(),
        )  # fmt: skip
        assert got["displayable"] == mine.display
        assert got["scannable"] == mine.scannable.to_bytes().hex()
        assert got["matches"] is True
        # libsignal's code scanned by e2e, and a mismatch both ways.
        assert theirs.scannable.compare(bytes.fromhex(got["scannable"]))
        other = safety_number(bid, KeyPair.generate().public, aid, a, version=version)
        got2 = libsignal.call(
            "fingerprint", iterations=5200, version=version,
            local_id=aid.hex(), local_key=serialize_identity(a).hex(),
            remote_id=bid.hex(), remote_key=serialize_identity(b).hex(),
            scanned=other.scannable.to_bytes().hex(),
        )  # fmt: skip
        assert got2["matches"] is False
        assert not other.scannable.compare(bytes.fromhex(got["scannable"]))
