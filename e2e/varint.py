"""Base-128 varints (LEB128, protobuf's integer encoding): the protobuf fields of libsignal's
messages (SPEC.md §15.4), the SPQR message header (§15.7.1) and the scannable safety-number
code (§13.1).

Each format bounds a varint differently, so the reader takes its bounds: how many bytes a
varint may take, the largest value, and whether a padded (non-minimal) encoding is refused.
"""

from __future__ import annotations

from e2e.errors import DecodeError

__all__ = ["encode_varint", "read_varint"]


def encode_varint(value: int) -> bytes:
    """The minimal base-128 varint of a non-negative ``value``."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(
    data: bytes, pos: int, max_bytes: int, limit: int, minimal: bool, what: str
) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos`` of ``data``: at most
    ``max_bytes`` long, at most ``limit``, and (``minimal``) without a padding byte of zero;
    :class:`DecodeError` naming ``what`` otherwise, or where ``data`` ends inside it."""
    end = pos + max_bytes
    if end > len(data):
        end = len(data)
    value = shift = 0
    while pos < end:
        byte = data[pos]
        pos += 1
        if byte < 0x80:
            if minimal and byte == 0 and shift:
                raise DecodeError(f"{what} varint is not minimal")
            value |= byte << shift
            if value > limit:
                raise DecodeError(f"{what} varint out of range")
            return value, pos
        value |= (byte & 0x7F) << shift
        shift += 7
    raise DecodeError(f"{what} varint is truncated or too long")
