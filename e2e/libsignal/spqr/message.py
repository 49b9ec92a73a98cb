"""SPQR's message codec: the ``pq_ratchet`` field of a SignalMessage (SPEC.md §15.7.1).

Version 1::

    0x01 | varint epoch (>= 1) | varint index (< 2^32) | type (1 byte)
         [| varint chunk index (< 2^16) | 32 bytes of chunk data]   for types 1, 2, 3, 5, 6
         [| anything]                                               (ignored, as libsignal does)

Varints are LEB128 (little-endian base 128), at most 10 bytes, minimal. An empty field is
version 0 (no SPQR). A first byte above 1 is a later version: :func:`parse` reads only its
epoch and index, which libsignal 0.103 takes from a later version's message the same way,
and reports it as :class:`Unknown`. Everything else malformed is a
:class:`~e2e.errors.DecodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from e2e.errors import DecodeError
from e2e.varint import encode_varint, read_varint

__all__ = ["V0", "V1", "MsgType", "CHUNK_TYPES", "Message", "Unknown", "encode", "parse"]

V0: Final = 0
V1: Final = 1
_MAX_EPOCH: Final = 2**64 - 1
_MAX_INDEX: Final = 2**32 - 1
_MAX_CHUNK: Final = 2**16 - 1
_CHUNK_BYTES: Final = 32


class MsgType(IntEnum):
    """What a message carries; the chunk types name the stream the chunk belongs to."""

    NONE = 0
    HDR = 1
    EK = 2
    EK_CT1_ACK = 3
    CT1_ACK = 4
    CT1 = 5
    CT2 = 6


CHUNK_TYPES: Final = frozenset(
    {MsgType.HDR, MsgType.EK, MsgType.EK_CT1_ACK, MsgType.CT1, MsgType.CT2}
)


@dataclass(frozen=True, slots=True)
class Message:
    """One version-1 SPQR message; ``chunk`` is (index, 32 bytes) for the chunk types."""

    epoch: int
    index: int
    type: MsgType
    chunk: tuple[int, bytes] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.epoch <= _MAX_EPOCH or not 0 <= self.index <= _MAX_INDEX:
            raise ValueError("SPQR epoch or index out of range")
        if (self.chunk is not None) != (self.type in CHUNK_TYPES):
            raise ValueError("SPQR chunk present exactly for the chunk types")
        if self.chunk is not None and (
            not 0 <= self.chunk[0] <= _MAX_CHUNK or len(self.chunk[1]) != _CHUNK_BYTES
        ):
            raise ValueError("SPQR chunk malformed")


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message of a later SPQR version (first byte above 1): its epoch and index only."""

    version: int
    epoch: int
    index: int


def encode(msg: Message) -> bytes:
    """The version-1 encoding of ``msg``."""
    out = bytes((V1,)) + encode_varint(msg.epoch) + encode_varint(msg.index) + bytes((msg.type,))
    if msg.chunk is not None:
        out += encode_varint(msg.chunk[0]) + msg.chunk[1]
    return out


def _read(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    return read_varint(data, pos, 10, limit, True, "SPQR")


def parse(data: bytes) -> Message | Unknown | None:
    """The SPQR message in ``data``: None for version 0 (empty), :class:`Unknown` for a
    later version, else the :class:`Message`; :class:`DecodeError` if malformed."""
    if not data:
        return None
    if data[0] == V0:
        raise DecodeError("SPQR message version 0 must be empty")
    epoch, pos = _read(data, 1, _MAX_EPOCH)
    index, pos = _read(data, pos, _MAX_INDEX)
    if epoch == 0:
        raise DecodeError("SPQR epoch 0")
    if data[0] > V1:
        return Unknown(data[0], epoch, index)
    if pos >= len(data) or data[pos] > MsgType.CT2:
        raise DecodeError("SPQR message type missing or unknown")
    kind = MsgType(data[pos])
    pos += 1
    chunk = None
    if kind in CHUNK_TYPES:
        at, pos = _read(data, pos, _MAX_CHUNK)
        if len(data) - pos < _CHUNK_BYTES:
            raise DecodeError("SPQR chunk truncated")
        chunk = (at, data[pos : pos + _CHUNK_BYTES])
    return Message(epoch, index, kind, chunk)
