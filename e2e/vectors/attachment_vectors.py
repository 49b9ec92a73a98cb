"""Verifier of vectors/attachment.json (SPEC.md §16), made by vectors/generate.py from the
independent reference.

``padding``: the bucket and blob length of each size. ``seal``: the package's
:class:`Encryptor`, with the case's deterministic RNG, must produce the recorded key, salt,
blob and digest (fed in uneven pieces), and open it again. ``open``: a blob changed as the case
says (its SHA-256 checks the change was made alike), read in order by :class:`Decryptor` one
header and one chunk at a time, must release exactly the recorded plaintext and then fail with
the named class (or succeed). ``pointer``: accepted encodings decode to the recorded fields and
re-encode byte for byte; rejected ones raise the named class.
"""

from __future__ import annotations

import hashlib
from typing import Any

from e2e import errors
from e2e.attachment import BlobDigest, Decryptor, Encryptor, Layout, Pointer, padded_size
from e2e.attachment.stream import HEADER_LEN, SEALED_CHUNK, TAG_LEN
from e2e.vectors.protocol import DRng
from e2e.vectors.registry import verifier

__all__: list[str] = []


def _b(value: Any) -> bytes:
    return bytes.fromhex(str(value))


def _seal(seed: bytes, size: int, key: bytes | None = None) -> tuple[Encryptor, bytes, bytes]:
    """(encryptor, plaintext, blob): key and salt from DRng(seed) (the salt only when ``key``
    is given, then the plaintext from the same source), else the plaintext from
    DRng(seed | "/plaintext"). Fed in pieces of 100,003 bytes."""
    rng = DRng(seed)
    enc = Encryptor(key, rng=rng)
    plain = rng(size) if key is not None else DRng(seed + b"/plaintext")(size)
    parts: list[bytes | bytearray] = [enc.header]
    for at in range(0, size, 100_003):
        parts.append(enc.update(plain[at : at + 100_003]))
    parts += enc.finish()
    return enc, plain, b"".join(parts)


def _read(key: bytes, digest: bytes, size: int, blob: bytes) -> tuple[bytes, str | None]:
    """Read ``blob`` in order, header then one chunk per call (§16.6): (released, error)."""
    released: list[bytes | bytearray] = []
    layout = Layout.of(size)
    cuts = [HEADER_LEN] + [layout.plain_len(i) + TAG_LEN for i in range(layout.chunks)]
    try:
        dec = Decryptor(key, digest, size)
        at = 0
        for n in cuts:
            released.append(dec.update(blob[at : at + n]))
            at += n
        if at < len(blob):
            released.append(dec.update(blob[at:]))
        released.append(dec.finish())
    except errors.E2EError as exc:
        return b"".join(released), type(exc).__name__
    return b"".join(released), None


def _apply(blob: bytes, ops: list[dict[str, Any]], size: int) -> bytes:
    b = bytearray(blob)

    def chunk(i: int) -> bytes:
        return bytes(b[HEADER_LEN + i * SEALED_CHUNK : HEADER_LEN + (i + 1) * SEALED_CHUNK])

    for op in ops:
        kind = op["op"]
        if kind == "flip":
            b[op["at"]] ^= 0x04
        elif kind == "set":
            b[op["at"]] = op["value"]
        elif kind == "truncate":
            del b[op["to"] :]
        elif kind == "append":
            b += _b(op["bytes"])
        elif kind == "swap":
            ca, cb = chunk(op["a"]), chunk(op["b"])
            lo, hi = sorted((op["a"], op["b"]))
            start = HEADER_LEN + lo * SEALED_CHUNK
            b[start : start + 2 * SEALED_CHUNK] = cb + ca if lo == op["a"] else ca + cb
            assert hi == lo + 1, "only neighbours are swapped"
        elif kind == "dup":
            c = chunk(op["chunk"])
            at = HEADER_LEN + op["chunk"] * SEALED_CHUNK + len(c)
            b[at:at] = c
        elif kind == "replace":
            start = HEADER_LEN + op["chunk"] * SEALED_CHUNK
            b[start : start + SEALED_CHUNK] = chunk(op["with"])
        elif kind == "swap_blob":
            b = bytearray(_seal(str(op["seed"]).encode(), size)[2])
        else:
            raise ValueError(f"unknown op {kind!r}")
    return bytes(b)


def _hash(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@verifier("attachment")
def verify_attachment(case: dict[str, Any]) -> None:
    kind = case["kind"]
    if kind == "padding":
        for size, padded, blob_size in case["pairs"]:
            assert padded_size(size) == padded, f"padded_size({size})"
            assert Layout.of(size).blob_size == blob_size, f"blob_size({size})"
    elif kind == "seal":
        size = int(case["size"])
        enc, plain, blob = _seal(str(case["seed"]).encode(), size)
        assert enc.key == _b(case["key"]), "key differs"
        assert enc.header[1:17] == _b(case["salt"]), "salt differs"
        layout = Layout.of(size)
        assert (layout.padded, layout.blob_size) == (case["padded"], case["blob_size"])
        assert _hash(blob) == case["blob_sha256"], "blob differs"
        if "blob" in case:
            assert blob == _b(case["blob"]) and plain == _b(case["plaintext"])
        assert enc.digest == _b(case["digest"]), "digest differs"
        whole = BlobDigest()
        whole.update(blob)
        assert whole.finish() == (enc.digest, len(blob)), "digest without the key differs"
        assert _read(enc.key, enc.digest, size, blob) == (plain, None), "does not open"
    elif kind == "open":
        if case.get("blob") is not None:
            blob = _b(case["blob"])
        elif case.get("blob_from") == "other-same-key":
            blob = _seal(b"attachment/other-same-key", int(case["size"]), _b(case["key"]))[2]
        else:
            intact = _seal(str(case["seed"]).encode(), int(case["size"]))[2]
            blob = _apply(intact, case["ops"], int(case["size"]))
        if "blob_sha256" in case:
            assert _hash(blob) == case["blob_sha256"], "the changed blob differs"
        released, error = _read(_b(case["key"]), _b(case["digest"]), case["open_size"], blob)
        assert error == case["error"], f"{error} raised, {case['error']} expected"
        assert len(released) == case["released_len"], "released another length"
        assert _hash(released) == case["released_sha256"], "released other bytes"
    elif kind == "pointer":
        raw = _b(case["encoding"]) + bytes(int(case.get("zero_pad", 0)))
        if case["result"] == "valid":
            try:
                p = Pointer.from_bytes(raw)
            except errors.E2EError as exc:
                raise AssertionError(f"refused: {type(exc).__name__}") from None
            f = case["fields"]
            got = {
                "blob_id": p.blob_id.hex(), "key": p.key.hex(), "digest": p.digest.hex(),
                "size": p.size, "content_type": p.content_type, "file_name": p.file_name,
                "thumbnail": None if p.thumbnail is None else p.thumbnail.hex(),
                "caption": p.caption,
            }  # fmt: skip
            assert got == {**{"thumbnail": None, "caption": None}, **f}, "fields differ"
            assert p.to_bytes() == raw, "re-encoding differs"
        else:
            try:
                Pointer.from_bytes(raw)
            except errors.E2EError as exc:
                assert type(exc).__name__ == case["error"], f"{type(exc).__name__} raised"
            else:
                raise AssertionError("accepted")
    else:
        raise ValueError(f"unknown kind {kind!r}")
