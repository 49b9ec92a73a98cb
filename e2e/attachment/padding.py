"""Size buckets for attachments: Padmé padding (SPEC.md §16.2).

An attachment's plaintext is padded with zero bytes to ``padded_size(len)`` before it is
encrypted, so the blob store and the network see only the bucket, not the exact size.
Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and Communication
with PURBs", PETS 2019) rounds a length L up so that only its top ``floor(log2 E) + 1`` bits
(E = floor(log2 L)) may be non-zero: it leaks O(log log L) bits of the size, and adds less
than L / 2^S with S = floor(log2 E) + 1: under 6.25 % from 512 bytes, under 3.125 % from
64 KiB. Sizes below :data:`MIN_PADDED` are padded to it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MIN_PADDED", "padded_size"]

#: Every attachment is padded to at least this many bytes.
MIN_PADDED: Final = 512


def padded_size(size: int) -> int:
    """Padmé(max(size, MIN_PADDED)): the bucket an attachment of ``size`` bytes is padded to."""
    if size < 0:
        raise ValueError("a size is not negative")
    length = max(size, MIN_PADDED)
    e = length.bit_length() - 1  # floor(log2 L)
    s = e.bit_length()  # floor(log2 E) + 1
    mask = (1 << (e - s)) - 1
    return (length + mask) & ~mask
