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
from e2e.varint import encode_varint, read_varint

__all__ = ["UINT32", "BYTES", "Kind", "Value", "encode", "decode", "encode_varint"]

UINT32: Final = "uint32"
BYTES: Final = "bytes"
Kind = Literal["uint32", "bytes"]
Value = int | bytes
_WIRE: Final = {UINT32: 0, BYTES: 2}
_MAX_U32: Final = 2**32 - 1


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


def decode(data: bytes, schema: Sequence[tuple[int, Kind]]) -> dict[int, Value]:
    """Decode ``data`` strictly against ``schema``: {field number: value} of those present."""
    kinds = dict(schema)
    out: dict[int, Value] = {}
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = read_varint(data, pos, 5, _MAX_U32, True, "protobuf")
        number, wire = key >> 3, key & 7
        kind = kinds.get(number)
        if kind is None or _WIRE[kind] != wire:
            raise DecodeError("unknown protobuf field or wrong wire type")
        if number in out:
            raise DecodeError("protobuf field repeated")
        if kind == UINT32:
            out[number], pos = read_varint(data, pos, 5, _MAX_U32, True, "protobuf")
        else:
            length, pos = read_varint(data, pos, 5, _MAX_U32, True, "protobuf")
            if length > end - pos:
                raise DecodeError("protobuf length runs past the end")
            out[number] = data[pos : pos + length]
            pos += length
    return out
