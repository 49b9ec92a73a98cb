"""PQXDH key agreement (SPEC.md §3).

Both parties compute DH1 = DH(IK_A, SPK_B), DH2 = DH(EK_A, IK_B), DH3 = DH(EK_A, SPK_B) and,
when a one-time prekey was used, DH4 = DH(EK_A, OPK_B), plus the ML-KEM-1024 shared secret SS
encapsulated to the bundle's KEM prekey. :func:`agreement_kdf` turns them into the initial
root key and the two initial header keys. (libsignal's X3DH and PQXDH are e2e.libsignal.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from e2e.errors import InvalidKey, SuiteMismatch
from e2e.frame import PrekeyFields
from e2e.keys import (
    KEM_PUBLIC_LEN,
    KeyPair,
    Rng,
    check_x25519_public,
    encode_ec,
    encode_kem,
    kem_encapsulate,
    require_injection_allowed,
)
from e2e.prekeys import PrekeyBundle, PrekeySource
from e2e.suite import DEFAULT, Suite

__all__ = [
    "Agreement",
    "agreement_kdf",
    "associated_data",
    "initiate",
    "respond",
    "KemEncapsulate",
]

#: ``encapsulate(public) -> (shared secret, ciphertext)``; injectable for vectors only.
KemEncapsulate = Callable[[bytes], tuple[bytes, bytes]]
_F = b"\xff" * 32
_SALT = bytes(32)


@dataclass(frozen=True, slots=True)
class Agreement:
    """The outcome of PQXDH: secrets for the Double Ratchet plus what goes on the wire."""

    suite: Suite
    root_key: bytes = field(repr=False)
    #: The initiator's first sending header key and the responder's first
    #: next-sending header key (the Double Ratchet spec's shared_hka and shared_nhkb).
    header_key_a: bytes | None = field(repr=False)
    header_key_b: bytes | None = field(repr=False)
    ad: bytes
    prekey: PrekeyFields
    remote_identity: bytes


def associated_data(initiator_identity: bytes, responder_identity: bytes) -> bytes:
    """AD = Encode_EC(IK_A) | Encode_EC(IK_B)."""
    return encode_ec(initiator_identity) + encode_ec(responder_identity)


def agreement_kdf(
    suite: Suite,
    dh_outputs: bytes,
    kem_secret: bytes,
    binding: bytes,
) -> tuple[bytes, bytes, bytes]:
    """HKDF-SHA256(salt = 32 zero bytes, IKM = 0xFF*32 | DH1 | DH2 | DH3 [| DH4] | SS,
    info = suite label | binding, L = 96) -> (root key, header key A, header key B).

    ``binding`` binds both identity keys, the signed prekey, the KEM prekey and the KEM
    ciphertext.
    """
    ikm = _F + dh_outputs + kem_secret
    out = HKDF(hashes.SHA256(), 96, _SALT, suite.agreement_info + binding).derive(ikm)
    return out[:32], out[32:64], out[64:]


def _binding(ik_a: bytes, ik_b: bytes, spk: bytes, kem_pk: bytes, kem_ct: bytes) -> bytes:
    return encode_ec(ik_a) + encode_ec(ik_b) + encode_ec(spk) + encode_kem(kem_pk) + kem_ct


def _check_suite(suite: Suite, allowed: Collection[Suite]) -> None:
    if suite not in allowed:
        raise SuiteMismatch(f"suite {suite.id} is not allowed here")


def initiate(
    identity: KeyPair,
    bundle: PrekeyBundle,
    *,
    allowed_suites: Collection[Suite] = (DEFAULT,),
    rng: Rng = os.urandom,
    encapsulate: KemEncapsulate = kem_encapsulate,
) -> tuple[Agreement, KeyPair]:
    """Run the initiator's side against ``bundle``; returns the agreement and EK_A.

    Raises SuiteMismatch (suite not allowed: the PQ-to-classical downgrade guard),
    InvalidSignature, InvalidKey or NonContributory.
    """
    suite = bundle.suite
    _check_suite(suite, allowed_suites)
    ik_b = check_x25519_public(bundle.identity_key)
    spk = check_x25519_public(bundle.spk)
    if bundle.opk is not None:
        check_x25519_public(bundle.opk)
    kem_pk = bundle.kem_pk
    if kem_pk is None or bundle.kem_id is None:
        raise InvalidKey("PQXDH bundle has no KEM prekey")
    if type(kem_pk) is not bytes or len(kem_pk) != KEM_PUBLIC_LEN:
        # Only the shape here: encapsulate parses it (FIPS 203 checks) once, after the
        # signatures have verified.
        raise InvalidKey("ML-KEM-1024 public key must be 1568 bytes")
    bundle.verify()
    if encapsulate is not kem_encapsulate:  # fixed KEM randomness: vectors and tests only
        require_injection_allowed()
    ek = KeyPair.generate(rng)
    dhs = identity.exchange(spk) + ek.exchange(ik_b) + ek.exchange(spk)
    if bundle.opk is not None:
        dhs += ek.exchange(bundle.opk)
    kem_ss, kem_ct = encapsulate(kem_pk)
    rk, hka, nhkb = agreement_kdf(
        suite, dhs, kem_ss, _binding(identity.public, ik_b, spk, kem_pk, kem_ct)
    )
    fields = PrekeyFields(
        identity.public, ek.public, bundle.spk_id, bundle.opk_id, bundle.kem_id, kem_ct
    )
    ad = associated_data(identity.public, ik_b)
    return Agreement(suite, rk, hka, nhkb, ad, fields, ik_b), ek


def respond(
    identity: KeyPair,
    prekeys: PrekeySource,
    suite: Suite,
    fields: PrekeyFields,
    *,
    allowed_suites: Collection[Suite] = (DEFAULT,),
) -> tuple[Agreement, KeyPair]:
    """Run the responder's side for an initial message's ``fields``; nothing is consumed.

    Returns the agreement and the signed prekey pair (the responder's first ratchet key).
    The caller marks the prekeys used only after the first message decrypts.
    """
    _check_suite(suite, allowed_suites)
    spk = prekeys.signed_prekey(fields.spk_id)
    opk = prekeys.one_time_prekey(fields.opk_id) if fields.opk_id is not None else None
    kem_ct = fields.kem_ciphertext
    if fields.kem_id is None or kem_ct is None:
        raise InvalidKey("PQXDH message has no KEM ciphertext")
    kem = prekeys.kem_prekey(fields.kem_id, fields.base_key)
    ik_a, ek = fields.identity_key, fields.base_key
    dhs = spk.exchange(ik_a) + identity.exchange(ek) + spk.exchange(ek)
    if opk is not None:
        dhs += opk.exchange(ek)
    kem_ss = kem.decapsulate(kem_ct)
    rk, hka, nhkb = agreement_kdf(
        suite, dhs, kem_ss, _binding(ik_a, identity.public, spk.public, kem.public, kem_ct)
    )
    ad = associated_data(ik_a, identity.public)
    return Agreement(suite, rk, hka, nhkb, ad, fields, ik_a), spk
