"""KDF steps and the AEADs, against an independent recomputation written here with
cryptography's HMAC / AES primitives (HKDF is re-implemented from RFC 5869, not imported from
the module under test), and the committing AEAD's commitment-first check."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from helpers import frame_fields, handshake, reencode
from hypothesis import given
from hypothesis import strategies as st

from e2e import message_key, x3dh
from e2e.chain_key import chain_step
from e2e.errors import AuthenticationFailed
from e2e.frame import K
from e2e.keys import KemKeyPair, KeyPair
from e2e.libsignal import kdf as libsignal_kdf
from e2e.message_key import (
    HEADER_LABEL,
    committing_keys,
    expand_message_key,
    open_,
    open_header,
    seal,
    seal_header,
)
from e2e.prekeys import LocalPrekeys
from e2e.root_key import root_step
from e2e.suite import PQ, Suite

# --- the independent reference -----------------------------------------------------------


def _hmac(algorithm: hashes.HashAlgorithm, key: bytes, data: bytes) -> bytes:
    h = hmac.HMAC(key, algorithm)
    h.update(data)
    return h.finalize()


def ref_hkdf(
    ikm: bytes, salt: bytes | None, info: bytes, length: int, alg: type = hashes.SHA256
) -> bytes:
    """RFC 5869 with HMAC only: PRK = HMAC(salt or zeros, IKM); T(i) = HMAC(PRK, T(i-1)|info|i)."""
    h = alg()
    prk = _hmac(h, salt if salt else bytes(h.digest_size), ikm)
    return ref_hkdf_expand(prk, info, length, alg)


def ref_hkdf_expand(prk: bytes, info: bytes, length: int, alg: type = hashes.SHA256) -> bytes:
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = _hmac(alg(), prk, block + info + bytes([i]))
        out += block
        i += 1
    return out[:length]


def test_reference_hkdf_matches_cryptography() -> None:
    """The reference itself, checked once against cryptography's HKDF and RFC 5869 case 1."""
    ikm, salt, info = bytes([0x0B] * 22), bytes(range(13)), bytes(range(0xF0, 0xFA))
    okm = bytes.fromhex(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    assert ref_hkdf(ikm, salt, info, 42) == okm
    assert HKDF(hashes.SHA256(), 42, salt, info).derive(ikm) == okm
    k = os.urandom(32)
    assert ref_hkdf_expand(k, b"x", 64, hashes.SHA512) == HKDFExpand(
        hashes.SHA512(), 64, b"x"
    ).derive(k)


keys32 = st.binary(min_size=32, max_size=32)


# --- KDF_RK, KDF_CK, message keys, committing keys ---------------------------------------


@given(rk=keys32, dh=keys32)
def test_root_step(suite: Suite, rk: bytes, dh: bytes) -> None:
    new_rk, ck, nhk = root_step(suite, rk, dh)
    out = ref_hkdf(dh, rk, suite.root_info, 96)
    assert (new_rk, ck, nhk) == (out[:32], out[32:64], out[64:96])


def test_root_step_labels() -> None:
    """Suite 2's root label is its own: never libsignal's "WhisperRatchet" (e2e.libsignal)."""
    assert PQ.root_info == b"E2E_Ratchet_HE" and libsignal_kdf.ROOT_INFO == b"WhisperRatchet"
    rk, dh = os.urandom(32), os.urandom(32)
    assert root_step(PQ, rk, dh)[0] != libsignal_kdf.root_step(rk, dh)[0]


@given(ck=keys32)
def test_chain_step(ck: bytes) -> None:
    next_ck, seed = chain_step(ck)
    assert seed == _hmac(hashes.SHA256(), ck, b"\x01")
    assert next_ck == _hmac(hashes.SHA256(), ck, b"\x02")


@given(seed=keys32, r=st.binary(min_size=16, max_size=16))
def test_expand_message_key(suite: Suite, seed: bytes, r: bytes) -> None:
    out = expand_message_key(suite, seed, r)
    # the body's random value R is part of the HKDF info
    assert out == ref_hkdf_expand(seed, b"E2E_MessageKeys" + r, 64, hashes.SHA512)


@given(key=keys32, label=st.binary(max_size=40))
def test_committing_keys(key: bytes, label: bytes) -> None:
    enc, commit = committing_keys(key, label)
    out = _hmac(hashes.SHA512(), key, label + b"\x01")
    assert (enc, commit) == (out[:32], out[32:])
    assert out == ref_hkdf_expand(key, label, 64, hashes.SHA512)


@pytest.mark.parametrize("n_dh", [3, 4])
def test_agreement_kdf(suite: Suite, n_dh: int) -> None:
    dhs = os.urandom(32 * n_dh)
    ss = os.urandom(32)
    binding = os.urandom(50)
    rk, hka, hkb = x3dh.agreement_kdf(suite, dhs, ss, binding)
    out = ref_hkdf(b"\xff" * 32 + dhs + ss, bytes(32), suite.agreement_info + binding, 96)
    assert (rk, hka, hkb) == (out[:32], out[32:64], out[64:96])


# --- the whole X3DH / PQXDH computation, from private keys ----------------------------------


def _x25519(private: bytes, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(public)
    )


def _ec(public: bytes) -> bytes:
    return b"\x05" + public


def test_x3dh_root_key_recomputed(suite: Suite) -> None:
    bob_id, alice_id = KeyPair.generate(), KeyPair.generate()
    keys = LocalPrekeys.generate(bob_id, suite)
    bundle = keys.bundle()
    ek_secret = os.urandom(32)
    ss, ct = os.urandom(32), os.urandom(1568)
    agreement, ek = x3dh.initiate(
        alice_id,
        bundle,
        allowed_suites=(suite,),
        rng=lambda n: ek_secret if n == 32 else os.urandom(n),
        encapsulate=lambda pk: (ss, ct),
    )
    assert (
        ek.public == X25519PrivateKey.from_private_bytes(ek_secret).public_key().public_bytes_raw()
    )
    ik_a = alice_id.private_bytes()
    dhs = (
        _x25519(ik_a, bundle.spk)
        + _x25519(ek_secret, bundle.identity_key)
        + _x25519(ek_secret, bundle.spk)
    )
    assert bundle.opk is not None
    dhs += _x25519(ek_secret, bundle.opk)
    assert bundle.kem_pk is not None
    binding = (
        _ec(alice_id.public) + _ec(bob_id.public) + _ec(bundle.spk)
        + b"\x0a" + bundle.kem_pk + ct
    )  # fmt: skip
    out = ref_hkdf(b"\xff" * 32 + dhs + ss, bytes(32), suite.agreement_info + binding, 96)
    assert agreement.root_key == out[:32]
    assert agreement.header_key_a == out[32:64] and agreement.header_key_b == out[64:96]
    assert agreement.ad == _ec(alice_id.public) + _ec(bob_id.public)


def test_pqxdh_kem_secret_is_the_decapsulated_one() -> None:
    """The responder's root key uses ML-KEM decapsulation of the wire ciphertext."""
    bob_id, alice_id = KeyPair.generate(), KeyPair.generate()
    keys = LocalPrekeys.generate(bob_id, PQ)
    agreement, _ = x3dh.initiate(alice_id, keys.bundle(), allowed_suites=(PQ,))
    fields = agreement.prekey
    assert fields.kem_id is not None and fields.kem_ciphertext is not None
    kem: KemKeyPair = keys.kem[fields.kem_id].pair
    ss = kem.decapsulate(fields.kem_ciphertext)
    b, _ = x3dh.respond(bob_id, keys, PQ, fields, allowed_suites=(PQ,))
    assert b.root_key == agreement.root_key
    # With another KEM secret, the same DH outputs give a different root key.
    spk = keys.signed[fields.spk_id].pair
    assert fields.opk_id is not None
    opk = keys.one_time[fields.opk_id].pair
    dhs = (
        spk.exchange(alice_id.public) + bob_id.exchange(fields.base_key)
        + spk.exchange(fields.base_key) + opk.exchange(fields.base_key)
    )  # fmt: skip
    binding = (
        _ec(alice_id.public) + _ec(bob_id.public) + _ec(spk.public)
        + b"\x0a" + kem.public + fields.kem_ciphertext
    )  # fmt: skip
    out = ref_hkdf(b"\xff" * 32 + dhs + ss, bytes(32), PQ.agreement_info + binding, 96)
    assert out[:32] == agreement.root_key
    out2 = ref_hkdf(b"\xff" * 32 + dhs + os.urandom(32), bytes(32), PQ.agreement_info + binding, 96)
    assert out2[:32] != agreement.root_key


# --- the AEADs, recomputed ----------------------------------------------------------------


def ref_seal(suite: Suite, seed: bytes, ad: bytes, pt: bytes, r: bytes) -> bytes:
    out = _hmac(hashes.SHA512(), seed, suite.message_info + r + b"\x01")
    return r + out[32:] + AESGCM(out[:32]).encrypt(bytes(12), pt, ad)


@given(
    seed=keys32,
    ad=st.binary(max_size=80),
    pt=st.binary(max_size=70),
    r=st.binary(min_size=16, max_size=16),
)
def test_seal_and_open(suite: Suite, seed: bytes, ad: bytes, pt: bytes, r: bytes) -> None:
    sealed = seal(suite, seed, ad, pt, r)
    assert sealed == ref_seal(suite, seed, ad, pt, r)
    assert open_(suite, seed, ad, sealed) == pt


def test_pq_seal_requires_a_16_byte_random_value() -> None:
    for bad in (b"", bytes(12), bytes(17)):
        with pytest.raises(ValueError):
            seal(PQ, bytes(32), b"", b"x", bad)


@given(key=keys32, nonce=st.binary(min_size=12, max_size=12), ad=st.binary(max_size=70))
def test_header_seal_and_open(key: bytes, nonce: bytes, ad: bytes) -> None:
    header = os.urandom(40)
    sealed = seal_header(key, nonce, ad, header)
    out = _hmac(hashes.SHA512(), key, HEADER_LABEL + b"\x01")
    assert HEADER_LABEL == b"E2E_HeaderKeys"
    commitment = _hmac(hashes.SHA256(), out[32:], nonce)  # per header, over its nonce
    assert sealed == nonce + commitment + AESGCM(out[:32]).encrypt(nonce, header, ad)
    assert len(sealed) == 100
    assert open_header(key, ad, sealed) == header
    assert open_header(os.urandom(32), ad, sealed) is None
    assert open_header(key, ad + b"x", sealed) is None


def test_session_message_recomputed_from_chain_key(suite: Suite) -> None:
    """A real frame: body = AEAD(chain_step(CKs) seed, AD = Encode(IK_A)|Encode(IK_B)|prefix)."""
    pair = handshake(suite)
    alice = pair.alice
    ck = alice.ratchet.cks
    assert ck is not None
    frame = alice.encrypt(b"recompute me")
    seed = _hmac(hashes.SHA256(), ck, b"\x01")
    body = frame_fields(frame)[K.BODY]
    prefix = frame[: len(frame) - len(body)]
    ad = _ec(pair.alice_id.public) + _ec(pair.bob_id.public) + prefix
    assert alice.ratchet.cks == _hmac(hashes.SHA256(), ck, b"\x02")
    # The body is sealed with the header's 100 bytes blanked (SPEC.md §5.2)...
    fields = frame_fields(frame)
    header = fields[K.HEADER]
    blank = reencode({**fields, K.HEADER: bytes(100)})[: len(prefix)]
    ad0 = ad[:66] + blank
    r = body[:16]
    out = _hmac(hashes.SHA512(), seed, b"E2E_MessageKeys" + r + b"\x01")
    assert body[16:48] == out[32:]
    assert AESGCM(out[:32]).decrypt(bytes(12), body[48:], ad0) == b"recompute me"
    # ...and the header authenticates AD | blanked prefix | body.
    hk = pair.alice.ratchet.hks
    assert hk is not None
    assert open_header(hk, ad0 + body, header) is not None
    assert open_header(hk, ad0 + body[:-1] + bytes([body[-1] ^ 1]), header) is None


# --- the committing AEAD checks the commitment first --------------------------------------


def test_commitment_only_corruption_is_rejected() -> None:
    seed, ad, r = os.urandom(32), b"ad", os.urandom(16)
    sealed = seal(PQ, seed, ad, b"payload", r)
    enc, _ = committing_keys(seed, PQ.message_info + r)
    # The GCM part alone verifies...
    assert AESGCM(enc).decrypt(bytes(12), sealed[48:], ad) == b"payload"
    # ...but with any commitment byte changed the whole thing does not open.
    for i in (16, 29, 47):
        bad = sealed[:i] + bytes([sealed[i] ^ 0x20]) + sealed[i + 1 :]
        with pytest.raises(AuthenticationFailed):
            open_(PQ, seed, ad, bad)
    for short in (b"", sealed[:63]):
        with pytest.raises(AuthenticationFailed):
            open_(PQ, seed, ad, short)


def test_header_commitment_only_corruption_is_rejected() -> None:
    key, nonce, ad = os.urandom(32), os.urandom(12), b"ad"
    sealed = seal_header(key, nonce, ad, bytes(40))
    enc, _ = committing_keys(key, HEADER_LABEL)
    assert AESGCM(enc).decrypt(nonce, sealed[44:], ad) == bytes(40)
    bad = sealed[:20] + bytes([sealed[20] ^ 1]) + sealed[21:]
    assert open_header(key, ad, bad) is None


class _ForgingGCM:
    """An AESGCM stand-in whose decrypt always 'verifies': what if GCM were to accept?"""

    calls: list[str] = []

    def __init__(self, key: bytes) -> None:
        self.key = key

    def encrypt(self, nonce: bytes, data: bytes, ad: bytes | None) -> bytes:
        return AESGCM(self.key).encrypt(nonce, data, ad)

    def decrypt(self, nonce: bytes, data: bytes, ad: bytes | None) -> bytes:
        _ForgingGCM.calls.append("decrypt")
        return b"forged"


def test_wrong_key_rejected_even_if_gcm_would_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a GCM that accepts anything, only the commitment stands between a ciphertext and
    a second key: it must reject, before GCM is even asked."""
    seed, other, ad = os.urandom(32), os.urandom(32), b"ad"
    sealed = seal(PQ, seed, ad, b"real", os.urandom(16))
    header = seal_header(seed, os.urandom(12), ad, bytes(40))
    monkeypatch.setattr(message_key, "AESGCM", _ForgingGCM)
    _ForgingGCM.calls.clear()
    assert open_(PQ, seed, ad, sealed) == b"forged"  # the stand-in is really in use
    assert _ForgingGCM.calls == ["decrypt"]
    _ForgingGCM.calls.clear()
    with pytest.raises(AuthenticationFailed):
        open_(PQ, other, ad, sealed)
    assert open_header(other, ad, header) is None
    for i in (0, 16):  # R (changes the derived key) or the commitment
        bad = sealed[:i] + bytes([sealed[i] ^ 1]) + sealed[i + 1 :]
        with pytest.raises(AuthenticationFailed):
            open_(PQ, seed, ad, bad)
    assert _ForgingGCM.calls == []  # the commitment was checked first, every time


@pytest.mark.parametrize(
    "step",
    [
        lambda s: root_step(PQ, s, s),
        lambda s: chain_step(s),
        lambda s: committing_keys(s, b"l"),
    ],
    ids=["root", "chain", "commit"],
)
def test_kdf_outputs_are_distinct_halves(step: Callable[[bytes], tuple[object, ...]]) -> None:
    out = step(os.urandom(32))
    parts = [p for p in out if isinstance(p, bytes)]
    assert len(set(parts)) == len(parts) and all(len(p) == 32 for p in parts)
