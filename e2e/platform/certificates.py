"""Verified business identity (SPEC.md §13.3).

The platform (not the relay's routing role: a separate Ed25519 *platform key* that clients
pin) certifies that a business account's name, display name and account identity key
belong together::

    signed = "E2E_BUSINESS_v1" | CBOR {0: 1, 1: account, 2: display name (UTF-8),
                                       3: account identity key, 4: not before, 5: not after}
    certificate = CBOR {0: 1, 1: account, 2: display name, 3: identity key,
                        4: not before, 5: not after, 6: Ed25519 signature}

A client shows a business as verified (with the certified display name) only when a
certificate verifies under the pinned platform key, names that account and the identity key
the key directory proved, and is valid at the current time; otherwise as unverified (the
application decides what to show). A certificate that does not verify is a
:class:`~e2e.errors.CertificateError`, never a quiet "unverified".
(Key changes -- an account's identity key other than the one trusted before -- are a client
device's to record and the application's to accept: :mod:`e2e.client.trust`.)
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final, Literal

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PublicKey,
)

from e2e.errors import CertificateError, DecodeError, InvalidKey
from e2e.frame import Field, decode_map, encode_map
from e2e.keys import X25519_LEN
from e2e.platform.envelope import check_account
from e2e.platform.merkle import Ed25519Signer
from e2e.platform.names import check_display_name

__all__ = [
    "BUSINESS_LABEL",
    "MAX_DISPLAY_NAME",
    "BusinessCertificate",
    "PlatformSigner",
    "BusinessIdentity",
    "verify_business",
]

BUSINESS_LABEL: Final = b"E2E_BUSINESS_v1"
CERT_VERSION: Final = 1
MAX_DISPLAY_NAME: Final = 128

_SCHEMA: Final = {
    0: Field(int),
    1: Field(bytes),
    2: Field(bytes),
    3: Field(bytes, X25519_LEN),
    4: Field(int, max_int=2**63 - 1),
    5: Field(int, max_int=2**63 - 1),
    6: Field(bytes, 64),
}


def _check_display(name: bytes) -> str:
    if not 1 <= len(name) <= MAX_DISPLAY_NAME:
        raise DecodeError("display name must be 1 to 128 bytes")
    return check_display_name(name)


@dataclass(frozen=True, slots=True)
class BusinessCertificate:
    account: bytes
    display_name: str
    identity: bytes
    not_before: int
    not_after: int
    signature: bytes

    def _fields(self) -> dict[int, int | bytes]:
        return {
            0: CERT_VERSION,
            1: self.account,
            2: self.display_name.encode("utf-8"),
            3: self.identity,
            4: self.not_before,
            5: self.not_after,
        }

    def signed_bytes(self) -> bytes:
        return BUSINESS_LABEL + encode_map(self._fields())

    def to_bytes(self) -> bytes:
        return encode_map({**self._fields(), 6: self.signature})

    @classmethod
    def from_bytes(cls, raw: object) -> BusinessCertificate:
        obj = decode_map(raw, _SCHEMA, "business certificate", 512, CERT_VERSION)
        return cls(check_account(obj[1]), _check_display(obj[2]), obj[3], obj[4], obj[5], obj[6])


class PlatformSigner(Ed25519Signer):
    """The platform's certifying key (Ed25519). Its ``repr`` shows no key material."""

    _what = "platform key"

    def certify(
        self, account: bytes, display_name: str, identity: bytes, now: int, valid_for: int
    ) -> BusinessCertificate:
        """Certify (after the platform's own vetting) that ``account`` with identity key
        ``identity`` is the business called ``display_name``, from ``now`` for
        ``valid_for`` seconds."""
        check_account(account)
        _check_display(display_name.encode("utf-8"))
        if len(identity) != X25519_LEN:
            raise InvalidKey("identity key must be 32 bytes")
        unsigned = BusinessCertificate(
            account, display_name, identity, now, now + valid_for, b"\x00" * 64
        )
        sig = self._key.sign(unsigned.signed_bytes())
        return BusinessCertificate(account, display_name, identity, now, now + valid_for, sig)


@dataclass(frozen=True, slots=True)
class BusinessIdentity:
    """What the application shows for a business: verified with its certified name, or
    unverified (no certificate was offered)."""

    account: bytes
    status: Literal["verified", "unverified"]
    display_name: str | None = None

    @property
    def verified(self) -> bool:
        return self.status == "verified"


def verify_business(
    raw: bytes | None,
    platform_key: bytes,
    account: bytes,
    identity: bytes,
    now: int,
) -> BusinessIdentity:
    """Check a business certificate against the pinned ``platform_key``, the account it was
    offered for and the identity key the key directory proved for it.

    ``None`` (no certificate) gives an unverified identity. A certificate that is malformed,
    not signed by the platform key, for another account or key, or outside its validity
    raises :class:`CertificateError`."""
    if raw is None:
        return BusinessIdentity(account, "unverified")
    try:
        cert = BusinessCertificate.from_bytes(raw)
    except DecodeError as exc:
        raise CertificateError(f"malformed business certificate: {exc}") from None
    try:
        Ed25519PublicKey.from_public_bytes(platform_key).verify(cert.signature, cert.signed_bytes())
    except (_CryptoInvalidSignature, ValueError):
        raise CertificateError("business certificate not signed by the platform key") from None
    if cert.account != account:
        raise CertificateError("business certificate of another account")
    if not hmac.compare_digest(cert.identity, identity):
        raise CertificateError("business certificate of another account key")
    if not cert.not_before <= now < cert.not_after:
        raise CertificateError("business certificate outside its validity")
    return BusinessIdentity(account, "verified", cert.display_name)
