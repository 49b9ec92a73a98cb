"""Ad entry points (SPEC.md §17.4): the entry token an ad service issues when a customer taps
an ad, and the conversion record the relay reports back. Formats and pure checks only: the
ad service (:class:`~e2e.platform.adservice.AdService`) issues tokens, the relay
(:mod:`e2e.relay.service`) checks them.

An entry token is ``{0: 1, 1: ad id, 2: business, 3: expires (Unix s), 4: token id (16
random bytes), 5: Ed25519 signature}`` (canonical CBOR, SPEC §5.1); the signature is the ad
service's, over :data:`TOKEN_LABEL` followed by the map without key 5. It names no customer:
whoever holds it may present it once, to that business, before it expires. The customer's
device presents it beside its first message to the business (the submission's key 2,
:class:`~e2e.platform.wire.Submit`), never inside the ciphertext and never delivered.

A conversion is ``{0: 1, 1: ad id, 2: business, 3: time bucket start}``: which ad led to a
chat with which business, in which bucket of ``ads.bucket_seconds`` - no customer, no time
finer than the bucket, nothing of what was said.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from e2e.errors import DecodeError, EntryRefused, InvalidKey
from e2e.frame import Field, decode_map, encode_map
from e2e.platform.envelope import check_account
from e2e.platform.wire.codec import Body, F, key

__all__ = [
    "TOKEN_LABEL",
    "MAX_AD_ID",
    "TOKEN_ID_LEN",
    "MAX_TOKEN_BYTES",
    "EntryToken",
    "EntryKey",
    "entry_verifier",
    "Conversion",
    "Conversions",
    "bucket_of",
]

#: What an entry token's signature is over, before the token's fields.
TOKEN_LABEL: Final = b"e2e ad entry token v1\x00"
#: Longest ad id, in bytes.
MAX_AD_ID: Final = 32
TOKEN_ID_LEN: Final = 16
SIGNATURE_LEN: Final = 64
#: Largest encoded token (its fields at their longest, with CBOR heads).
MAX_TOKEN_BYTES: Final = 256
_MAX_TIME: Final = 2**40

_TOKEN: Final = {
    0: Field(int),
    1: Field(bytes),
    2: Field(bytes),
    3: Field(int, max_int=_MAX_TIME),
    4: Field(bytes, TOKEN_ID_LEN),
    5: Field(bytes, SIGNATURE_LEN),
}
_CONVERSION: Final = {
    0: Field(int),
    1: Field(bytes),
    2: Field(bytes),
    3: Field(int, max_int=_MAX_TIME),
}


def _ad_id(value: Any) -> bytes:
    if type(value) is not bytes or not 1 <= len(value) <= MAX_AD_ID:
        raise DecodeError(f"an ad id is 1 to {MAX_AD_ID} bytes")
    return value


@dataclass(frozen=True, slots=True)
class EntryToken:
    """One entry token, as issued (see the module's format)."""

    ad_id: bytes
    business: bytes
    expires: int
    token_id: bytes
    signature: bytes

    def signed_part(self) -> bytes:
        """What the signature is over (the label, then the map without the signature)."""
        return TOKEN_LABEL + encode_map({0: 1, 1: self.ad_id, 2: self.business,
                                         3: self.expires, 4: self.token_id})  # fmt: skip

    def to_bytes(self) -> bytes:
        return encode_map({0: 1, 1: self.ad_id, 2: self.business, 3: self.expires,
                           4: self.token_id, 5: self.signature})  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes) -> EntryToken:
        """Strictly decode a token (:class:`~e2e.errors.DecodeError`); not yet checked."""
        obj = decode_map(data, _TOKEN, "entry token", MAX_TOKEN_BYTES, 1)
        return cls(_ad_id(obj[1]), check_account(obj[2]), obj[3], obj[4], obj[5])

    def check(self, verify: Callable[[bytes, bytes], bool], business: bytes, now: int,
              max_seconds: int) -> None:  # fmt: skip
        """Raise :class:`~e2e.errors.EntryRefused` unless the token is the ad service's
        (``verify(signature, message)``), for ``business``, unexpired at ``now`` and expiring
        within ``max_seconds`` of it (so the relay remembers used tokens for a bounded time)."""
        if not verify(self.signature, self.signed_part()):
            raise EntryRefused("the entry token is not the ad service's")
        if not hmac.compare_digest(self.business, business):
            raise EntryRefused("the entry token is for another business")
        if self.expires <= now:
            raise EntryRefused("the entry token expired")
        if self.expires - now > max_seconds:
            raise EntryRefused("the entry token lives longer than the relay accepts")


@dataclass(frozen=True, slots=True)
class EntryKey:
    """The ad service's token signing key (Ed25519, from a 32-byte seed). Never logged."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if type(self.seed) is not bytes or len(self.seed) != 32:
            raise InvalidKey("an entry signing key is a 32-byte seed")

    @classmethod
    def generate(cls) -> EntryKey:
        return cls(os.urandom(32))

    @property
    def public(self) -> bytes:
        """The 32-byte public key the relay is configured with (``ads.entry_key``, hex)."""
        return Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes_raw()

    def issue(self, ad_id: bytes, business: bytes, expires: int,
              token_id: bytes | None = None) -> EntryToken:  # fmt: skip
        """A token for ``ad_id`` of ``business``, valid until ``expires``."""
        unsigned = EntryToken(_ad_id(ad_id), check_account(business), expires,
                              token_id or os.urandom(TOKEN_ID_LEN), b"")  # fmt: skip
        sig = Ed25519PrivateKey.from_private_bytes(self.seed).sign(unsigned.signed_part())
        return EntryToken(unsigned.ad_id, unsigned.business, expires, unsigned.token_id, sig)


def entry_verifier(public: bytes) -> Callable[[bytes, bytes], bool]:
    """``verify(signature, message)`` under the ad service's 32-byte public key
    (:class:`~e2e.errors.InvalidKey` if it is not one)."""
    try:
        key_ = Ed25519PublicKey.from_public_bytes(public)
    except ValueError:
        raise InvalidKey("not an Ed25519 public key") from None

    def verify(signature: bytes, message: bytes) -> bool:
        try:
            key_.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    return verify


def bucket_of(at: int, seconds: int) -> int:
    """The start of the time bucket of ``seconds`` that ``at`` falls in."""
    return at - at % seconds


@dataclass(frozen=True, slots=True)
class Conversion:
    """One conversion: a customer answered ``ad_id`` of ``business`` in the bucket starting
    at ``bucket``."""

    ad_id: bytes
    business: bytes
    bucket: int

    def to_bytes(self) -> bytes:
        return encode_map({0: 1, 1: self.ad_id, 2: self.business, 3: self.bucket})

    @classmethod
    def from_bytes(cls, data: bytes) -> Conversion:
        obj = decode_map(data, _CONVERSION, "conversion", 256, 1)
        return cls(_ad_id(obj[1]), check_account(obj[2]), obj[3])


@dataclass(frozen=True, slots=True)
class Conversions(Body):
    """``{1: [conversion records], 2: cursor}``: the relay's answer to the ad service's
    ``GET /v1/ads/conversions?after=<cursor>``, oldest first, only of time buckets that have
    ended; ask again with ``after`` = the answer's cursor."""

    records: tuple[bytes, ...] = key(1, F(bytes, 1, 256, array=True, count=1000))
    cursor: int = key(2, F(int))
