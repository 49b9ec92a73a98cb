"""Fuzz target: attachment pointers and blobs (SPEC.md §16).

The bytes are decoded as a pointer (``Pointer.from_bytes``), hashed as a blob without the key
(``BlobDigest``) and decrypted as the blob of a fixed attachment (``Decryptor`` with its
pointer's key, digest and size), fed in pieces whose size the first byte picks.

Invariants: only E2EError on bad input; an accepted pointer re-encodes to its exact bytes and
its file name passes the file-name rule; every plaintext byte the decryptor releases is the
fixed attachment's own, in order (nobody without the key can forge a chunk); the decryption
succeeds exactly when the bytes are the fixed blob; the key-less digest equals the pointer's
exactly then too.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__file__)))

from e2e import E2EError
from e2e.attachment import BlobDigest, Decryptor, Encryptor, Pointer
from e2e.attachment.pointer import check_file_name
from e2e.errors import DecodeError
from fuzz._harness import DetRng, main

#: The fixed attachment: 1,000 bytes (one chunk, padded to 1,024) under a fixed key.
PLAIN = DetRng(b"attachment-plaintext")(1000)


def _seal() -> tuple[bytes, bytes, bytes]:
    enc = Encryptor(rng=DetRng(b"attachment-key"))
    blob = enc.header + enc.update(PLAIN) + b"".join(enc.finish())
    return blob, enc.key, enc.digest


BLOB, KEY, DIGEST = _seal()


def test_one_input(data: bytes) -> None:
    try:
        pointer = Pointer.from_bytes(data)
    except DecodeError:
        pointer = None
    if pointer is not None:
        assert pointer.to_bytes() == data, "accepted pointer does not re-encode to its bytes"
        check_file_name(pointer.file_name)

    hasher = BlobDigest()
    hasher.update(data)
    try:
        digest, size = hasher.finish()
    except E2EError:
        digest, size = b"", 0
    assert size in (0, len(data))
    assert (digest == DIGEST) == (data == BLOB), "the key-less digest names another blob"

    step = 1 + (data[0] if data else 0) * 7
    dec = Decryptor(KEY, DIGEST, len(PLAIN))
    released = bytearray()
    try:
        for at in range(0, len(data), step):
            released += dec.update(data[at : at + step])
        released += dec.finish()
    except E2EError:
        ok = False
    else:
        ok = True
    assert PLAIN.startswith(released), "released plaintext that is not the attachment's"
    assert ok == (data == BLOB), "opened bytes that are not the blob"
    assert not ok or bytes(released) == PLAIN


if __name__ == "__main__":
    main(test_one_input, "attachment")
