"""SPQR's erasure code: systematic Reed-Solomon by polynomial evaluation over GF(2^16)
(SPEC.md §15.7.2).

A message of ``n`` 32-byte chunks is read as 16n big-endian 16-bit values; value ``j`` is the
value at ``x = j // 16`` of polynomial ``j % 16``. Each of the 16 polynomials is the one of
degree below ``n`` through its ``n`` points at ``x = 0 .. n-1``. Chunk ``k`` is the 16 values
``(f_0(k), ..., f_15(k))``, big-endian: chunks ``0 .. n-1`` are the message itself, every
later one is parity, and any ``n`` chunks with distinct indices give the message back.
Indices travel as 16 bits (a sender's chunk counter is taken modulo 65536).

Interpolation uses the barycentric form: for nodes ``x_s`` with weights
``w_s = 1 / prod_{r != s} (x_s - x_r)``, ``f(t) = L(t) * sum_s w_s y_s / (t - x_s)`` with
``L(t) = prod_s (t - x_s)`` (subtraction is XOR in this field).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from e2e.errors import DecodeError
from e2e.libsignal.spqr.gf16 import EXP, LOG, ORDER

__all__ = ["CHUNK_BYTES", "MAX_INDEX", "chunk", "Encoder", "Decoder"]

CHUNK_BYTES: Final = 32
_VALUES: Final = CHUNK_BYTES // 2
#: Largest chunk index on the wire.
MAX_INDEX: Final = 0xFFFF


def _log_weights(nodes: tuple[int, ...]) -> list[int]:
    """log w_s for each node (the nodes are distinct field elements)."""
    out = []
    for s in nodes:
        total = 0
        for r in nodes:
            if r != s:
                total += LOG[s ^ r]
        out.append((ORDER - total % ORDER) % ORDER)
    return out


@lru_cache(maxsize=8)
def _systematic_weights(n: int) -> tuple[int, ...]:
    return tuple(_log_weights(tuple(range(n))))


_CHUNK: Final = struct.Struct(">16H")


def _log_rows(data: bytes) -> list[list[int]]:
    """Per 32-byte chunk of ``data``, the logs of its 16 values (-1 for a zero value)."""
    return [
        [LOG[v] if v else -1 for v in _CHUNK.unpack_from(data, k)]
        for k in range(0, len(data), CHUNK_BYTES)
    ]


@lru_cache(maxsize=16)
def _message_rows(message: bytes) -> list[list[int]]:
    # An encoder's message is one bytes object (its hash is computed once): a sender's
    # parity chunks share this work.
    return _log_rows(message)


def _evaluate(nodes: tuple[int, ...], log_w: list[int], rows: list[list[int]], t: int) -> bytes:
    """The chunk at ``t`` (not a node) of the polynomials through ``rows`` (as
    :func:`_log_rows`) at ``nodes``."""
    log_l = 0
    for s in nodes:
        log_l += LOG[t ^ s]
    acc = [0] * _VALUES
    for s, lw, row in zip(nodes, log_w, rows, strict=True):
        log_c = (log_l + lw - LOG[t ^ s]) % ORDER
        acc = [a ^ EXP[log_c + ly] if ly >= 0 else a for a, ly in zip(acc, row, strict=True)]
    return _CHUNK.pack(*acc)


def chunk(message: bytes, index: int) -> bytes:
    """Chunk ``index`` (0..65535) of ``message`` (a non-empty multiple of 32 bytes)."""
    n = len(message) // CHUNK_BYTES
    if index < n:
        return message[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]
    return _evaluate(tuple(range(n)), list(_systematic_weights(n)), _message_rows(message), index)


def _check_message(message: bytes) -> None:
    if not message or len(message) % CHUNK_BYTES or len(message) // CHUNK_BYTES > MAX_INDEX:
        raise ValueError("an erasure-coded message is a non-empty multiple of 32 bytes")


@dataclass(frozen=True, slots=True)
class Encoder:
    """The chunks of one message, in order: 0, 1, 2, ... (then again from 0 after 65535).

    ``sent`` counts the chunks taken so far; the next one has index ``sent % 65536``.
    """

    message: bytes
    sent: int = 0

    def __post_init__(self) -> None:
        _check_message(self.message)

    def next_chunk(self) -> tuple[Encoder, int, bytes]:
        """(the encoder after this chunk, its index, its 32 bytes)."""
        index = self.sent & MAX_INDEX
        return Encoder(self.message, self.sent + 1), index, chunk(self.message, index)


@dataclass(frozen=True, slots=True)
class Decoder:
    """Chunks of a ``size``-byte message received so far (at most ``size / 32``, first come).

    A chunk whose index is already held is ignored. Once ``size / 32`` distinct chunks are
    held, :meth:`message` interpolates the message from them.
    """

    size: int
    chunks: tuple[tuple[int, bytes], ...] = ()

    def __post_init__(self) -> None:
        _check_message(bytes(self.size))
        if len(self.chunks) > self.size // CHUNK_BYTES:
            raise DecodeError("erasure decoder holds more chunks than its message has")
        seen = set()
        for index, data in self.chunks:
            if not 0 <= index <= MAX_INDEX or len(data) != CHUNK_BYTES or index in seen:
                raise DecodeError("erasure decoder holds a malformed chunk")
            seen.add(index)

    @property
    def complete(self) -> bool:
        return len(self.chunks) == self.size // CHUNK_BYTES

    def add(self, index: int, data: bytes) -> Decoder:
        """This decoder with chunk ``index`` added (unchanged if complete or already held)."""
        if self.complete or any(i == index for i, _ in self.chunks):
            return self
        return Decoder(self.size, (*self.chunks, (index, data)))

    def message(self) -> bytes:
        """The message; only once :attr:`complete`."""
        if not self.complete:
            raise ValueError("erasure decoder is not complete")
        n = self.size // CHUNK_BYTES
        held = dict(self.chunks)
        if all(k in held for k in range(n)):
            return b"".join(held[k] for k in range(n))
        nodes = tuple(i for i, _ in self.chunks)
        log_w = _log_weights(nodes)
        rows = _log_rows(b"".join(d for _, d in self.chunks))
        return b"".join(
            held[k] if k in held else _evaluate(nodes, log_w, rows, k) for k in range(n)
        )
