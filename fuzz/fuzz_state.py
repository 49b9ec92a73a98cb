"""Fuzz target: loading serialized session state (``Session.from_bytes``) and using it.

Invariants: loading raises only StateError; an accepted state re-serializes to exactly its
bytes (a schema-1 state: to its bytes with the schema number raised, SPEC.md §6.3); the
loaded session then encrypts and decrypts the fixture frames raising only E2EError, and
every rejected frame leaves its state byte-identical.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__file__)))

from e2e import E2EError, Session, StateError
from e2e.session import STATE_SCHEMA
from fuzz._harness import main
from fuzz.fuzz_decrypt import _FIXTURE

_FRAMES: list[bytes] = [f for states in _FIXTURE.values() for f in states["frames"]]


def test_one_input(data: bytes) -> None:
    try:
        session = Session.from_bytes(data)
    except StateError:
        return
    except E2EError as exc:
        raise AssertionError(f"from_bytes raised {type(exc).__name__}, not StateError") from None
    if data[1:3] == b"\x00\x01":  # schema 1, migrated on load and written as the current one
        data = data[:2] + bytes([STATE_SCHEMA]) + data[3:]
    assert session.to_bytes() == data, "accepted state does not re-serialize to its bytes"
    repr(session)
    try:
        frame = session.encrypt(b"fuzz")
        assert type(frame) is bytes
    except E2EError:
        assert session.to_bytes() == data, "a refused encrypt changed the state"
    for frame in _FRAMES:
        s = Session.from_bytes(data)
        try:
            s.decrypt(frame)
        except E2EError:
            assert s.to_bytes() == data, "a rejected frame changed the session state"


if __name__ == "__main__":
    main(test_one_input, "state")
