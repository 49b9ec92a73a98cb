"""Fuzz target: message frame decoding (``e2e.frame.decode_message``).

Invariants: only E2EError (DecodeError subclasses) on bad input; every accepted frame
re-encodes, through ``encode_message``, to exactly the bytes received.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__file__)))

from e2e.errors import DecodeError
from e2e.frame import decode_message, encode_message
from fuzz._harness import main


def test_one_input(data: bytes) -> None:
    try:
        frame = decode_message(data)
    except DecodeError:
        return
    body = frame.body
    again = encode_message(frame.suite, frame.header, frame.prekey, len(body), lambda _p: body)
    assert again == data, "accepted frame does not re-encode to its bytes"
    assert frame.ad_prefix + body == data


if __name__ == "__main__":
    main(test_one_input, "frame")
