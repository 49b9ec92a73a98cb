"""A small strict protobuf codec for libsignal's two wire messages (SPEC.md §Libsignal wire).

libsignal's ``wire.proto`` messages use only two field kinds: ``uint32`` (wire type 0, varint)
and ``bytes`` (wire type 2, length-delimited). This module encodes and decodes exactly those,
for a schema given as ``{field number: kind}``, and nothing else. It is stricter than a
general protobuf parser, which is why it exists instead of a protobuf library dependency:

* an unknown field number, or a known one with the wrong wire type, is rejected (a general
  parser keeps unknown fields and would let them ride along under the MAC);
* a field present twice is rejected (a general parser merges: "last one wins");
* a varint must be minimal (no redundant ``0x80`` continuation bytes) and fit in 32 bits;
* a length must not run past the end, and the input must end exactly after the last field.

Encoding writes fields in the order the schema lists them (libsignal's order, so our bytes
equal libsignal's byte for byte) and skips absent (``None``) fields. Every failure raises
:class:`~e2e.errors.DecodeError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Literal

from e2e.errors import DecodeError

__all__ = ["UINT32", "BYTES", "Kind", "Value", "encode", "decode", "encode_varint"]

UINT32: Final = "uint32"
BYTES: Final = "bytes"
Kind = Literal["uint32", "bytes"]
Value = int | bytes
_WIRE: Final = {UINT32: 0, BYTES: 2}
_MAX_U32: Final = 2**32 - 1


def encode_varint(value: int) -> bytes:
    """The minimal base-128 varint of a non-negative ``value``."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode(schema: Sequence[tuple[int, Kind]], values: Mapping[int, Value | None]) -> bytes:
    """Encode ``values`` (field number -> value or None) in ``schema`` order."""
    out = bytearray()
    for number, kind in schema:
        value = values.get(number)
        if value is None:
            continue
        out += encode_varint(number << 3 | _WIRE[kind])
        if kind == UINT32:
            assert type(value) is int and 0 <= value <= _MAX_U32
            out += encode_varint(value)
        else:
            assert type(value) is bytes
            out += encode_varint(len(value))
            out += value
    return bytes(out)


def _varint(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 28:
            raise DecodeError("protobuf varint is truncated or longer than 32 bits")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and shift:
                raise DecodeError("protobuf varint is not minimal")
            if value > limit:
                raise DecodeError("protobuf varint out of range")
            return value, pos
        shift += 7


def decode(data: bytes, schema: Sequence[tuple[int, Kind]]) -> dict[int, Value]:
    """Decode ``data`` strictly against ``schema``: {field number: value} of those present."""
    kinds = dict(schema)
    out: dict[int, Value] = {}
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = _varint(data, pos, _MAX_U32)
        number, wire = key >> 3, key & 7
        kind = kinds.get(number)
        if kind is None or _WIRE[kind] != wire:
            raise DecodeError("unknown protobuf field or wrong wire type")
        if number in out:
            raise DecodeError("protobuf field repeated")
        if kind == UINT32:
            out[number], pos = _varint(data, pos, _MAX_U32)
        else:
            length, pos = _varint(data, pos, _MAX_U32)
            if length > end - pos:
                raise DecodeError("protobuf length runs past the end")
            out[number] = data[pos : pos + length]
            pos += length
    return out
