"""Safety numbers, byte-compatible with libsignal's numeric fingerprints (SPEC.md §13.1).

Two parties compare one 60-digit number (read aloud or side by side) or scan each other's
code; both are derived from the two account identity keys and stable identifiers (here the
account names), so a relay that substitutes a key changes the number.

Per party, with ``key`` the 33-byte libsignal serialisation ``0x05 | X25519 public key``::

    h = SHA-512(0x00 0x00 | key | identifier | key)
    repeat ITERATIONS - 1 times:  h = SHA-512(h | key)

The displayable half is the first 30 bytes of ``h`` as six 5-byte big-endian integers, each
mod 100000 as five decimal digits; the full number is the two halves concatenated, the
lexicographically smaller string first (so both sides show the same number). The scannable
form is the protobuf ``CombinedFingerprints {1: version, 2: {1: local h[:32]}, 3: {1: remote
h[:32]}}``; ``compare`` accepts a scanned code when its version equals ours and its local
and remote halves are our remote and local halves.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from e2e.errors import DecodeError, FingerprintVersionMismatch, InvalidKey
from e2e.varint import encode_varint, read_varint

__all__ = [
    "DJB_TYPE",
    "ITERATIONS",
    "SCANNABLE_VERSION",
    "serialize_identity",
    "logical_fingerprint",
    "displayable",
    "ScannableFingerprint",
    "SafetyNumber",
    "safety_number",
    "compare",
]

#: libsignal's key-type byte of a Curve25519 public key.
DJB_TYPE: Final = 0x05
#: Iterations of SHA-512 libsignal clients use for safety numbers.
ITERATIONS: Final = 5200
#: The scannable version current Signal clients use (the displayable number is the same in 1).
SCANNABLE_VERSION: Final = 2
_HASH_VERSION: Final = b"\x00\x00"
_MAX_ITERATIONS: Final = 1_000_000
_SCAN_LEN: Final = 32
_MAX_IDENTIFIER: Final = 1024
_MAX_SCANNED: Final = 256


def serialize_identity(key: bytes) -> bytes:
    """libsignal's serialised identity key: ``0x05 | key`` for a 32-byte X25519 public key
    (a 33-byte key already carrying the type byte is returned as is)."""
    if len(key) == 32:
        return bytes([DJB_TYPE]) + key
    if len(key) == 33 and key[0] == DJB_TYPE:
        return bytes(key)
    raise InvalidKey("identity key must be 32 bytes, or 33 starting with 0x05")


def logical_fingerprint(identifier: bytes, key: bytes, iterations: int = ITERATIONS) -> bytes:
    """The 64-byte iterated hash of one party (identifier: its stable id, e.g. account name)."""
    if not 1 < iterations <= _MAX_ITERATIONS:
        raise DecodeError("fingerprint iterations must be 2..1000000")
    if len(identifier) > _MAX_IDENTIFIER:
        raise DecodeError("fingerprint identifier too long")
    k = serialize_identity(key)
    h = hashlib.sha512(_HASH_VERSION + k + identifier + k).digest()
    sha512 = hashlib.sha512
    for _ in range(iterations - 1):
        h = sha512(h + k).digest()
    return h


def _digits(fp: bytes) -> str:
    return "".join(f"{int.from_bytes(fp[i : i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5))


def displayable(local: bytes, remote: bytes) -> str:
    """The 60-digit safety number of two logical fingerprints (order-independent)."""
    if len(local) < 30 or len(remote) < 30:
        raise DecodeError("logical fingerprint shorter than 30 bytes")
    a, b = _digits(local), _digits(remote)
    return a + b if a < b else b + a


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    # As libsignal reads it: up to 6 bytes, padded encodings accepted (the whole code is
    # compared with the one computed here anyway).
    return read_varint(buf, pos, 6, 2**42, False, "scanned code")


def _logical(content: bytes) -> bytes:
    return b"\x0a" + encode_varint(len(content)) + content


@dataclass(frozen=True, slots=True)
class ScannableFingerprint:
    """The QR-code form: a version and the first 32 bytes of both logical fingerprints."""

    version: int
    local: bytes
    remote: bytes

    def to_bytes(self) -> bytes:
        """The protobuf ``CombinedFingerprints`` serialisation libsignal produces."""
        lo, re_ = _logical(self.local), _logical(self.remote)
        return (
            b"\x08" + encode_varint(self.version)
            + b"\x12" + encode_varint(len(lo)) + lo
            + b"\x1a" + encode_varint(len(re_)) + re_
        )  # fmt: skip

    @classmethod
    def from_bytes(cls, raw: bytes) -> ScannableFingerprint:
        """Parse a scanned code. Only the canonical serialisation (the one libsignal and
        :meth:`to_bytes` write) is accepted; anything else is a :class:`DecodeError`."""
        if not isinstance(raw, bytes | bytearray) or len(raw) > _MAX_SCANNED:
            raise DecodeError("scanned code is not bytes of a plausible size")
        raw = bytes(raw)
        version: int | None = None
        halves: dict[int, bytes] = {}
        pos = 0
        while pos < len(raw):
            tag, pos = _read_varint(raw, pos)
            number, wire = tag >> 3, tag & 7
            if number == 1 and wire == 0 and version is None:
                version, pos = _read_varint(raw, pos)
            elif number in (2, 3) and wire == 2 and number not in halves:
                n, pos = _read_varint(raw, pos)
                if pos + n > len(raw):
                    raise DecodeError("truncated field in scanned code")
                inner = raw[pos : pos + n]
                pos += n
                if len(inner) != 2 + _SCAN_LEN or inner[:2] != bytes([0x0A, _SCAN_LEN]):
                    raise DecodeError("scanned fingerprint is not 32 bytes of content")
                halves[number] = inner[2:]
            else:
                raise DecodeError("unknown, repeated or mistyped field in scanned code")
        if version is None or len(halves) != 2:
            raise DecodeError("scanned code misses a field")
        local, remote = halves[2], halves[3]
        out = cls(version, local, remote)
        if out.to_bytes() != raw:
            raise DecodeError("scanned code is not canonically encoded")
        return out

    def compare(self, scanned: bytes) -> bool:
        """True iff ``scanned`` is the other party's code for the same two identities.

        Raises :class:`FingerprintVersionMismatch` for another version and
        :class:`DecodeError` for a malformed code."""
        theirs = ScannableFingerprint.from_bytes(scanned)
        if theirs.version != self.version:
            raise FingerprintVersionMismatch(
                f"scanned fingerprint version {theirs.version}, ours {self.version}"
            )
        same1 = hmac.compare_digest(theirs.local, self.remote)
        same2 = hmac.compare_digest(theirs.remote, self.local)
        return same1 and same2


@dataclass(frozen=True, slots=True)
class SafetyNumber:
    """What a user compares: the 60-digit number and the code to scan."""

    display: str
    scannable: ScannableFingerprint

    def grouped(self) -> str:
        """The number in twelve groups of five digits, as Signal shows it."""
        return " ".join(self.display[i : i + 5] for i in range(0, 60, 5))


def safety_number(
    local_id: bytes,
    local_key: bytes,
    remote_id: bytes,
    remote_key: bytes,
    *,
    version: int = SCANNABLE_VERSION,
    iterations: int = ITERATIONS,
) -> SafetyNumber:
    """libsignal's ``Fingerprint::new(version, iterations, local_id, local_key, remote_id,
    remote_key)``: our view of the safety number between us and a peer."""
    if not 0 <= version < 2**32:
        raise DecodeError("fingerprint version must be a uint32")
    local = logical_fingerprint(local_id, local_key, iterations)
    remote = logical_fingerprint(remote_id, remote_key, iterations)
    return SafetyNumber(
        displayable(local, remote),
        ScannableFingerprint(version, local[:_SCAN_LEN], remote[:_SCAN_LEN]),
    )


def compare(mine: SafetyNumber, scanned: bytes) -> bool:
    """True iff the code scanned from the peer's screen matches ours (see
    :meth:`ScannableFingerprint.compare`)."""
    return mine.scannable.compare(scanned)
