"""The Double Ratchet message header (SPEC.md §4.4)."""

from __future__ import annotations

import struct
from typing import NamedTuple

from e2e.errors import AuthenticationFailed

__all__ = ["Header", "encode_header", "decode_header", "HEADER_STRUCT"]

#: dh (32) | PN (u32 big-endian) | N (u32 big-endian) | MC, the body key's commitment (32).
HEADER_STRUCT = _PACK = struct.Struct(">32sII32s")


class Header(NamedTuple):
    """Sender's current ratchet public key, previous chain length PN, message number N and the
    commitment MC of the message key that sealed the body.

    An immutable named tuple: decoded on every received message, so it is cheap to build.
    """

    dh: bytes
    pn: int
    n: int
    commitment: bytes

    def encode(self) -> bytes:
        """dh (32) | PN (u32 big-endian) | N (u32 big-endian) | MC (32): 72 bytes."""
        return _PACK.pack(self.dh, self.pn, self.n, self.commitment)

    @classmethod
    def decode(cls, data: bytes) -> Header:
        return cls._make(decode_header(data))


def encode_header(dh: bytes, pn: int, n: int, commitment: bytes) -> bytes:
    """``Header(dh, pn, n, commitment).encode()`` without building the object (the sending
    hot path)."""
    return _PACK.pack(dh, pn, n, commitment)


def decode_header(data: bytes) -> tuple[bytes, int, int, bytes]:
    """(dh, PN, N, MC) of an encoded header, without building a :class:`Header` (the
    receiving hot path). Only ever called on authenticated or length-checked bytes."""
    if len(data) != _SIZE:
        raise AuthenticationFailed("header has the wrong length")
    return _unpack(data)


_SIZE = _PACK.size
_unpack = _PACK.unpack
