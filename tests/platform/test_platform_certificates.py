"""Verified business identity and key-change events (e2e.platform.certificates)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2e.errors import CertificateError, DecodeError, E2EError
from e2e.keys import KeyPair
from e2e.platform.certificates import (
    BusinessCertificate,
    PlatformSigner,
    verify_business,
)

NOW = 1_767_225_600
ACME = KeyPair.generate().public
EVE = KeyPair.generate().public
PLATFORM = PlatformSigner()


def _cert(**kw: object) -> bytes:
    args: dict[str, object] = {
        "account": b"acme",
        "display_name": "Acme Bank",
        "identity": ACME,
        "now": NOW,
        "valid_for": 86400,
    }
    args.update(kw)
    return PLATFORM.certify(**args).to_bytes()  # type: ignore[arg-type]


def test_verified_business() -> None:
    ident = verify_business(_cert(), PLATFORM.public, b"acme", ACME, NOW + 10)
    assert ident.verified and ident.display_name == "Acme Bank"
    assert not verify_business(None, PLATFORM.public, b"acme", ACME, NOW).verified
    assert BusinessCertificate.from_bytes(_cert()).to_bytes() == _cert()


def test_fake_business_name_by_the_relay_is_refused() -> None:
    # The relay signs its own certificate for a name it likes.
    relay_key = PlatformSigner()
    fake = relay_key.certify(b"evil", "Acme Bank", EVE, NOW, 86400).to_bytes()
    with pytest.raises(CertificateError):
        verify_business(fake, PLATFORM.public, b"evil", EVE, NOW)
    # A genuine certificate moved to another account or another key.
    with pytest.raises(CertificateError):
        verify_business(_cert(), PLATFORM.public, b"evil", ACME, NOW)
    with pytest.raises(CertificateError):
        verify_business(_cert(), PLATFORM.public, b"acme", EVE, NOW)
    # A display name edited after signing.
    cert = BusinessCertificate.from_bytes(_cert())
    edited = BusinessCertificate(
        cert.account,
        "Acme Bank Support",
        cert.identity,
        cert.not_before,
        cert.not_after,
        cert.signature,
    ).to_bytes()
    with pytest.raises(CertificateError):
        verify_business(edited, PLATFORM.public, b"acme", ACME, NOW)
    # Expired, not yet valid, malformed.
    with pytest.raises(CertificateError):
        verify_business(_cert(), PLATFORM.public, b"acme", ACME, NOW + 86400)
    with pytest.raises(CertificateError):
        verify_business(_cert(), PLATFORM.public, b"acme", ACME, NOW - 1)
    with pytest.raises(CertificateError):
        verify_business(_cert()[:-1], PLATFORM.public, b"acme", ACME, NOW)


@pytest.mark.parametrize("name", ["", "x" * 129, "Acme\nBank", "\u202eknaB"])
def test_display_names_are_checked(name: str) -> None:
    with pytest.raises(DecodeError):
        PLATFORM.certify(b"acme", name, ACME, NOW, 10)


@given(st.binary(max_size=300))
def test_decoder_raises_only_e2e_errors(raw: bytes) -> None:
    try:
        verify_business(raw, PLATFORM.public, b"acme", ACME, NOW)
    except E2EError:
        pass
