"""Verifier for SPQR as recorded from the official libsignal client (concept "libsignal_spqr").

Recorded by vectors/record_libsignal_spqr.py from two libsignal parties (0.92.2, 0.103.0):

* ``messages``: pq_ratchet fields with their epoch, index, type and chunk index as the
  recorder read them: :func:`e2e.libsignal.spqr.message.parse` must read the same and
  :func:`~e2e.libsignal.spqr.message.encode` give the field back byte for byte;
* ``erasure``: every chunk libsignal sent of one stream: the message interpolated from the
  first chunks (systematic where delivered in order) and from the last ones (parity) must
  agree, and e2e's encoder must produce every recorded chunk from it.
"""

from __future__ import annotations

from typing import Any

from e2e.libsignal.spqr.erasure import CHUNK_BYTES, Decoder, chunk
from e2e.libsignal.spqr.message import Message, encode, parse
from e2e.vectors import verifier

__all__: list[str] = []


def _decode(size: int, chunks: list[tuple[int, bytes]]) -> bytes:
    dec = Decoder(size)
    for index, data in chunks:
        dec = dec.add(index, data)
    return dec.message()


def _messages(case: dict[str, Any]) -> None:
    for m in case["messages"]:
        field = bytes.fromhex(m["field"])
        msg = parse(field)
        if not isinstance(msg, Message):
            raise AssertionError("a recorded version-1 field did not parse as one")
        got = (msg.epoch, msg.index, int(msg.type), None if msg.chunk is None else msg.chunk[0])
        want = (m["epoch"], m["index"], m["type"], m.get("chunk_index"))
        if got != want:
            raise AssertionError(f"field {m['field'][:20]}...: parsed {got}, recorded {want}")
        if msg.chunk is not None and msg.chunk[1] != field[-CHUNK_BYTES:]:
            raise AssertionError("chunk data differs")
        if encode(msg) != field:
            raise AssertionError("re-encoding a recorded field changed it")


def _erasure(case: dict[str, Any]) -> None:
    size = case["size"]
    n = size // CHUNK_BYTES
    chunks = [(i, bytes.fromhex(c)) for i, c in case["chunks"]]
    if len(chunks) < n:
        raise AssertionError("stream has fewer chunks than its message")
    message = _decode(size, chunks[:n])
    if _decode(size, chunks[-n:]) != message:
        raise AssertionError("first and last chunks interpolate different messages")
    for index, data in chunks:
        if chunk(message, index) != data:
            raise AssertionError(f"chunk {index} differs from libsignal's")


@verifier("libsignal_spqr")
def verify_libsignal_spqr(case: dict[str, Any]) -> None:
    kind = case["kind"]
    if kind == "messages":
        _messages(case)
    elif kind == "erasure":
        _erasure(case)
    else:
        raise LookupError(f"unknown libsignal_spqr case kind {kind!r}")
