"""Wire bodies of the blob store (SPEC.md §10.7, §10.12): opening an upload, asking its
offset, and the description a device signs for an upload request's raw bytes.

The bytes themselves travel raw (``application/offset+octet-stream`` up, ``application/
octet-stream`` down) on ``/v1/blobs/<blob id in hex>``: ``PATCH`` appends at the offset given
in ``upload-offset`` (tus's model), ``GET`` reads, from the offset of a ``range:
bytes=N-`` header if any. Their signature covers :func:`patch_descriptor` (for ``PATCH``: the blob,
the offset, the byte count and, with the last bytes of an upload opened without a length, the
length) or an empty body (for ``GET``), not the bytes, which the relay writes as they arrive
and the recipient authenticates end to end (SPEC §16).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from e2e.attachment.pointer import BLOB_ID_LEN
from e2e.errors import DecodeError
from e2e.platform.wire.codec import Body, F, encode_body, key

__all__ = [
    "BLOB_PATH",
    "MAX_PATCH_BYTES",
    "OFFSET_CONTENT_TYPE",
    "BLOB_CONTENT_TYPE",
    "CreateBlob",
    "BlobCreated",
    "BlobStatusQuery",
    "BlobState",
    "patch_descriptor",
    "blob_path",
    "parse_blob_path",
    "parse_range",
]

#: Where a blob's bytes are: ``/v1/blobs/<32 lowercase hex digits>``.
BLOB_PATH: Final = "/v1/blobs/"
#: Most bytes one upload request carries (413 beyond); the client sends 4 MiB.
MAX_PATCH_BYTES: Final = 64 << 20
OFFSET_CONTENT_TYPE: Final = "application/offset+octet-stream"
BLOB_CONTENT_TYPE: Final = "application/octet-stream"
_BLOB_ID: Final = F(bytes, BLOB_ID_LEN, BLOB_ID_LEN)
_HEX: Final = re.compile(r"[0-9a-f]{32}")
_RANGE: Final = re.compile(r"bytes=(\d{1,19})-(\d{1,19})?")


def blob_path(blob_id: bytes) -> str:
    return BLOB_PATH + blob_id.hex()


def parse_blob_path(path: str) -> bytes:
    """The blob id of a blob path; :class:`DecodeError` for anything else."""
    name = path[len(BLOB_PATH) :] if path.startswith(BLOB_PATH) else ""
    if not _HEX.fullmatch(name):
        raise DecodeError("not a blob path")
    return bytes.fromhex(name)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of one ``bytes=N-`` or ``bytes=N-M`` range within ``size`` bytes
    (None: no header, the whole blob); :class:`DecodeError` (416) for any other form or a
    start past the end."""
    if header is None:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None:
        raise DecodeError("only one range of the form bytes=N- or bytes=N-M")
    start = int(m.group(1))
    end = size if m.group(2) is None else min(size, int(m.group(2)) + 1)
    if start >= size or end <= start:
        raise DecodeError("range not satisfiable")
    return start, end


@dataclass(frozen=True, slots=True)
class CreateBlob(Body):
    """``{1?: length}``: open an upload of a blob of ``length`` bytes, owned by the caller's
    account (absent: the length comes with the last bytes)."""

    length: int = key(1, F(int, required=False, min_int=1), 0)


@dataclass(frozen=True, slots=True)
class BlobCreated(Body):
    """``{1: blob id, 2: the store's cap on one blob}``."""

    blob_id: bytes = key(1, _BLOB_ID)
    max_bytes: int = key(2, F(int))


@dataclass(frozen=True, slots=True)
class BlobStatusQuery(Body):
    """``{1: blob id}``: how far the caller's upload is."""

    blob_id: bytes = key(1, _BLOB_ID)


@dataclass(frozen=True, slots=True)
class BlobState(Body):
    """``{1: durable offset, 2: complete (0/1), 3?: length (absent: not told yet)}``: the
    answer to a status query and to an upload request."""

    offset: int = key(1, F(int))
    complete: bool = key(2, F(int, max_int=1))
    length: int = key(3, F(int, required=False), 0)


def patch_descriptor(blob_id: bytes, offset: int, count: int, length: int = 0) -> bytes:
    """What a device signs for one upload request instead of its bytes: ``{0: 1, 1: blob
    id, 2: offset, 3: bytes in this request, 4?: the blob's length}`` (its ``upload-offset``,
    ``content-length`` and ``upload-length`` headers). The relay rebuilds it from the headers
    and checks the signature before it reads a byte."""
    fields: dict[int, int | bytes] = {0: 1, 1: blob_id, 2: offset, 3: count}
    if length:
        fields[4] = length
    return encode_body(fields)
