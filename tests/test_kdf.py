"""KDF steps and the AEADs, against an independent recomputation written here: SHAKE256 from
the standard library's hashlib (not the cryptography objects the package uses), HMAC and AES
from cryptography's primitives (HKDF is re-implemented from RFC 5869, not imported from the
module under test), and the committing AEAD's commitment-first check."""

from __future__ import annotations

import hashlib
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
from e2e.chain_key import chain_step, kdf_ck
from e2e.errors import AuthenticationFailed
from e2e.frame import SEALED_HEADER_LEN, K
from e2e.keys import KemKeyPair, KeyPair
from e2e.libsignal import kdf as libsignal_kdf
from e2e.message_key import HEADER_LABEL, open_, open_header, seal, seal_header
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


# --- KDF_RK, KDF_CK (SPEC.md §4.1, §4.2) ---------------------------------------------------


def ref_shake(data: bytes, length: int) -> bytes:
    return hashlib.shake_256(data).digest(length)


@given(rk=keys32, dh=keys32)
def test_root_step(suite: Suite, rk: bytes, dh: bytes) -> None:
    new_rk, ck, nhk = root_step(suite, rk, dh)
    out = ref_shake(b"E2E_RootStep" + rk + dh, 96)
    assert suite.root_info == b"E2E_RootStep"
    assert (new_rk, ck, nhk) == (out[:32], out[32:64], out[64:96])


def test_root_step_labels() -> None:
    """Suite 3's root label is its own: never libsignal's "WhisperRatchet" (e2e.libsignal)."""
    assert PQ.root_info == b"E2E_RootStep" and libsignal_kdf.ROOT_INFO == b"WhisperRatchet"
    rk, dh = os.urandom(32), os.urandom(32)
    assert root_step(PQ, rk, dh)[0] != libsignal_kdf.root_step(rk, dh)[0]


@given(ck=keys32)
def test_kdf_ck(suite: Suite, ck: bytes) -> None:
    next_ck, mk = kdf_ck(suite, ck)
    out = ref_shake(b"E2E_ChainStep" + ck, 96)
    assert suite.chain_info == b"E2E_ChainStep"
    assert (next_ck, mk) == (out[:32], out[32:])
    assert len(mk) == 64


def test_kdf_steps_are_domain_separated(suite: Suite) -> None:
    """The chain and root inputs differ in their labels and lengths: the same 32 secret bytes
    give unrelated outputs."""
    k = os.urandom(32)
    assert kdf_ck(suite, k)[0] not in root_step(suite, k, k)


@given(ck=keys32)
def test_libsignal_chain_step(ck: bytes) -> None:
    """e2e.libsignal's KDF_CK (SPEC.md §15.3), kept in e2e.chain_key: two HMAC-SHA256."""
    next_ck, seed = chain_step(ck)
    assert seed == _hmac(hashes.SHA256(), ck, b"\x01")
    assert next_ck == _hmac(hashes.SHA256(), ck, b"\x02")


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


# --- the AEADs, recomputed (SPEC.md §4.3, §4.4) ---------------------------------------------


def ref_header_key(hk: bytes) -> bytes:
    return _hmac(hashes.SHA256(), b"E2E_HeaderKey", hk + b"\x01")


def ref_header_commitment(hk: bytes, nonce: bytes) -> bytes:
    return _hmac(hashes.SHA256(), b"E2E_HeaderKey", hk + b"\x02" + nonce)


keys64 = st.binary(min_size=64, max_size=64)
nonces = st.binary(min_size=12, max_size=12)


@given(mk=keys64, nonce=nonces, ad=st.binary(max_size=80), pt=st.binary(max_size=70))
def test_seal_and_open(mk: bytes, nonce: bytes, ad: bytes, pt: bytes) -> None:
    sealed = seal(mk, nonce, ad, pt)
    assert sealed == AESGCM(mk[:32]).encrypt(nonce, pt, ad)
    assert len(sealed) == len(pt) + 16
    assert open_(mk, mk[32:], nonce, ad, sealed) == pt


def test_seal_requires_a_12_byte_nonce() -> None:
    for bad in (b"", bytes(11), bytes(16)):
        with pytest.raises(ValueError):
            seal(bytes(64), bad, b"", b"x")


@given(key=keys32, nonce=nonces, ad=st.binary(max_size=70))
def test_header_seal_and_open(key: bytes, nonce: bytes, ad: bytes) -> None:
    header = os.urandom(72)
    sealed = seal_header(key, nonce, ad, header)
    assert HEADER_LABEL == b"E2E_HeaderKey"
    commitment = ref_header_commitment(key, nonce)  # per header, over its nonce
    assert sealed == nonce + commitment + AESGCM(ref_header_key(key)).encrypt(nonce, header, ad)
    assert len(sealed) == SEALED_HEADER_LEN == 132
    assert open_header(key, ad, sealed) == header
    assert open_header(os.urandom(32), ad, sealed) is None
    assert open_header(key, ad + b"x", sealed) is None


def test_session_message_recomputed_from_chain_key(suite: Suite) -> None:
    """A real frame: MK = SHAKE256(label | CKs); the header (under HKs) carries DH, PN, N and
    MC; the body is AES-256-GCM(EK, the header's nonce, pt, AD = Encode(IK_A) | Encode(IK_B) |
    the prefix with the header blanked)."""
    pair = handshake(suite)
    alice = pair.alice
    ck, hk = alice.ratchet.cks, alice.ratchet.hks
    assert ck is not None and hk is not None
    ns, pn, dh = alice.ratchet.ns, alice.ratchet.pn, alice.ratchet.dhs.public
    frame = alice.encrypt(b"recompute me")
    out = ref_shake(b"E2E_ChainStep" + ck, 96)
    assert alice.ratchet.cks == out[:32]
    ek, mc = out[32:64], out[64:96]
    fields = frame_fields(frame)
    body, header = fields[K.BODY], fields[K.HEADER]
    prefix = frame[: len(frame) - len(body)]
    blank = reencode({**fields, K.HEADER: bytes(SEALED_HEADER_LEN)})[: len(prefix)]
    ad0 = _ec(pair.alice_id.public) + _ec(pair.bob_id.public) + blank
    nonce = header[:12]
    assert AESGCM(ek).decrypt(nonce, body, ad0) == b"recompute me"
    # The header authenticates AD | blanked prefix | body and carries the key's MC.
    plain = AESGCM(ref_header_key(hk)).decrypt(nonce, header[44:], ad0 + body)
    assert plain == dh + pn.to_bytes(4, "big") + ns.to_bytes(4, "big") + mc
    assert header[12:44] == ref_header_commitment(hk, nonce)
    assert open_header(hk, ad0 + body[:-1] + bytes([body[-1] ^ 1]), header) is None


# --- the committing AEAD checks the commitment first --------------------------------------


def test_commitment_mismatch_is_rejected() -> None:
    mk, nonce, ad = os.urandom(64), os.urandom(12), b"ad"
    sealed = seal(mk, nonce, ad, b"payload")
    # The GCM part alone verifies...
    assert AESGCM(mk[:32]).decrypt(nonce, sealed, ad) == b"payload"
    # ...but with any byte of the header's commitment changed the body does not open.
    for i in (0, 13, 31):
        bad = mk[32:][:i] + bytes([mk[32 + i] ^ 0x20]) + mk[32 + i + 1 :]
        with pytest.raises(AuthenticationFailed):
            open_(mk, bad, nonce, ad, sealed)
    with pytest.raises(AuthenticationFailed):
        open_(mk, b"", nonce, ad, sealed)


def test_header_commitment_only_corruption_is_rejected() -> None:
    key, nonce, ad = os.urandom(32), os.urandom(12), b"ad"
    sealed = seal_header(key, nonce, ad, bytes(72))
    assert AESGCM(ref_header_key(key)).decrypt(nonce, sealed[44:], ad) == bytes(72)
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
    a second key: it must reject, before GCM is even asked. A body opens only under the
    message key whose MC its header carries; a header only under the header key its
    commitment names."""
    mk, other, ad, nonce = os.urandom(64), os.urandom(64), b"ad", os.urandom(12)
    sealed = seal(mk, nonce, ad, b"real")
    header = seal_header(mk[:32], nonce, ad, bytes(72))
    monkeypatch.setattr(message_key, "AESGCM", _ForgingGCM)
    _ForgingGCM.calls.clear()
    assert open_(mk, mk[32:], nonce, ad, sealed) == b"forged"  # the stand-in is really in use
    assert _ForgingGCM.calls == ["decrypt"]
    _ForgingGCM.calls.clear()
    with pytest.raises(AuthenticationFailed):
        open_(other, mk[32:], nonce, ad, sealed)  # another key, the header's MC
    with pytest.raises(AuthenticationFailed):
        open_(mk[:32] + other[32:], mk[32:], nonce, ad, sealed)  # the same EK, another MC
    assert open_header(other[:32], ad, header) is None
    assert _ForgingGCM.calls == []  # the commitment was checked first, every time


@pytest.mark.parametrize(
    "step",
    [
        lambda s: root_step(PQ, s, s),
        lambda s: (lambda o: (o[0], o[1][:32], o[1][32:]))(kdf_ck(PQ, s)),
    ],
    ids=["root", "chain"],
)
def test_kdf_outputs_are_distinct_parts(step: Callable[[bytes], tuple[object, ...]]) -> None:
    out = step(os.urandom(32))
    parts = [p for p in out if isinstance(p, bytes)]
    assert len(set(parts)) == len(parts) == 3 and all(len(p) == 32 for p in parts)
