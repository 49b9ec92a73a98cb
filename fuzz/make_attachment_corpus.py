"""Write the seed corpus of fuzz_attachment: ``python fuzz/make_attachment_corpus.py``.

The fixed blob and every tamper class of it (bit flips in the header, body and tag;
truncated; extended; a blob of another key), valid pointers and a few refused ones; written as
``tests/corpus/attachment/seed-<sha1>``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cbor2

from e2e.attachment import Encryptor, Pointer
from fuzz._harness import CORPUS, DetRng
from fuzz.fuzz_attachment import BLOB, DIGEST, KEY, PLAIN


def _flip(b: bytes, at: int) -> bytes:
    x = bytearray(b)
    x[at] ^= 0x10
    return bytes(x)


def seeds() -> list[bytes]:
    other = Encryptor(rng=DetRng(b"attachment-other"))
    other_blob = other.header + other.update(PLAIN) + b"".join(other.finish())
    blob_id = DetRng(b"attachment-blob-id")(16)
    pointer = Pointer(blob_id, KEY, DIGEST, len(PLAIN), "image/jpeg", "parcel.jpg")
    full = Pointer(
        blob_id, KEY, DIGEST, len(PLAIN), "application/pdf", "Rechnung №7.pdf",
        thumbnail=b"\xff\xd8\xff\xe0thumb", caption="Invoice\nas discussed",
    )  # fmt: skip
    fields = {0: 1, 1: blob_id, 2: KEY, 3: DIGEST, 4: 1000, 5: b"image/jpeg", 6: b"x.jpg"}
    return [
        BLOB,
        _flip(BLOB, 0),
        _flip(BLOB, 5),
        _flip(BLOB, 30),
        _flip(BLOB, 60),
        _flip(BLOB, len(BLOB) - 3),
        BLOB[:49],
        BLOB[:-1],
        BLOB + b"\x00",
        other_blob,
        pointer.to_bytes(),
        full.to_bytes(),
        cbor2.dumps({**fields, 6: b"../../etc/passwd"}),
        cbor2.dumps({**fields, 6: "a\u202egpj.exe".encode()}),
        cbor2.dumps({**fields, 5: b"text/plain; charset=utf-8"}),
        cbor2.dumps({**fields, 0: 2}),
    ]


def main() -> None:
    out = CORPUS / "attachment"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("seed-*"):
        old.unlink()
    for seed in seeds():
        (out / f"seed-{hashlib.sha1(seed).hexdigest()}").write_bytes(seed)  # noqa: S324
    print(f"{len(seeds())} seeds in {out}")


if __name__ == "__main__":
    main()
