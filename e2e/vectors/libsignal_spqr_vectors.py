"""Verifier for SPQR as recorded from the official libsignal client (concept "libsignal_spqr").

Recorded by vectors/record_libsignal_spqr.py from two libsignal parties (0.92.2, 0.103.0):

* ``messages``: pq_ratchet fields with their epoch, index, type and chunk index as the
  recorder read them: :func:`e2e.libsignal.spqr.message.parse` must read the same and
  :func:`~e2e.libsignal.spqr.message.encode` give the field back byte for byte;
* ``erasure``: every chunk libsignal sent of one stream: the message interpolated from the
  first chunks (systematic where delivered in order) and from the last ones (parity) must
  agree, and e2e's encoder must produce every recorded chunk from it;
* ``split_encaps``: one epoch's ML-KEM-768 exchange between two libsignal parties: e2e's
  two-part encapsulation of libsignal's header and key vector with libsignal's ``m`` must
  give libsignal's ct1 and ct2, the key vector must match the header, and the shared secret
  must give libsignal's SPQR chain root after the epoch (recomputed here with HKDF from the
  labels of SPEC.md §15.7, not with e2e's KDF code).

Concept "mlkem768": NIST's ACVP ML-KEM-768 encapsulation vectors (vectors/mlkem768.json):
the split encapsulation must give each vector's ciphertext and shared secret.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from e2e.libsignal.spqr import mlkem768
from e2e.libsignal.spqr.erasure import CHUNK_BYTES, Decoder, chunk
from e2e.libsignal.spqr.message import Message, encode, parse
from e2e.vectors.registry import verifier

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


def _split(header: bytes, m: bytes, ek_vector: bytes) -> tuple[bytes, bytes, bytes]:
    """(ct1, ct2, K) of e2e's two-part encapsulation."""
    ct1, shared = mlkem768.encaps1(header, m)
    return ct1, mlkem768.encaps2(header, m, ek_vector), shared


def _split_encaps(case: dict[str, Any]) -> None:
    h = {k: bytes.fromhex(case[k]) for k in ("header", "ek_vector", "m", "ct1", "ct2")}
    if not mlkem768.ek_matches_header(h["header"], h["ek_vector"]):
        raise AssertionError("libsignal's key vector does not match its header")
    ct1, ct2, shared = _split(h["header"], h["m"], h["ek_vector"])
    if ct1 != h["ct1"] or ct2 != h["ct2"]:
        raise AssertionError("split encapsulation differs from libsignal's ct1 / ct2")
    info = b"Signal_PQCKA_V1_MLKEM768:SCKA Key" + case["epoch"].to_bytes(8, "big")
    secret = HKDF(hashes.SHA256(), 32, bytes(32), info).derive(shared)
    root = bytes.fromhex(case["next_root_before"])
    after = HKDF(hashes.SHA256(), 96, root, b"Signal PQ Ratchet V1 Chain Add Epoch").derive(secret)
    if after[:32] != bytes.fromhex(case["next_root_after"]):
        raise AssertionError("shared secret does not give libsignal's chain root")


@verifier("libsignal_spqr")
def verify_libsignal_spqr(case: dict[str, Any]) -> None:
    kind = case["kind"]
    if kind == "messages":
        _messages(case)
    elif kind == "erasure":
        _erasure(case)
    elif kind == "split_encaps":
        _split_encaps(case)
    else:
        raise LookupError(f"unknown libsignal_spqr case kind {kind!r}")


@verifier("mlkem768")
def verify_mlkem768(case: dict[str, Any]) -> None:
    if case["kind"] != "encaps":
        raise LookupError(f"unknown mlkem768 case kind {case['kind']!r}")
    ek, c = bytes.fromhex(case["ek"]), bytes.fromhex(case["c"])
    header, vector = mlkem768.header_of(ek), ek[: mlkem768.EK_VECTOR_LEN]
    if not mlkem768.ek_matches_header(header, vector):
        raise AssertionError("a valid encapsulation key fails the header check")
    ct1, ct2, shared = _split(header, bytes.fromhex(case["m"]), vector)
    if ct1 + ct2 != c:
        raise AssertionError("ciphertext differs")
    if shared != bytes.fromhex(case["k"]):
        raise AssertionError("shared secret differs")
