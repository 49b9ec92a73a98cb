"""Verifiers for the primitive vectors copied from Wycheproof and NIST CAVP (see each file's
"source").

Each verifier checks one case against the libraries e2e builds on (``cryptography`` and,
for X25519, also libsodium through PyNaCl). A case whose ``result`` is ``"invalid"`` must be
rejected; ``"valid"`` and ``"acceptable"`` cases must reproduce the expected output exactly.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric.mlkem import (
    MLKEM1024PrivateKey,
    MLKEM1024PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.bindings import crypto_scalarmult

from e2e.chain_key import labelled_shake256
from e2e.vectors.registry import verifier

__all__: list[str] = []

_ZERO32 = bytes(32)


def _h(case: dict[str, Any], field: str) -> bytes:
    return bytes.fromhex(str(case[field]))


def _result(case: dict[str, Any]) -> str:
    result = str(case["result"])
    if result not in ("valid", "invalid", "acceptable"):
        raise ValueError(f"unknown result {result!r}")
    return result


def _x25519_cryptography(private: bytes, public: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private)
    return key.exchange(X25519PublicKey.from_public_bytes(public))


def _x25519_nacl(private: bytes, public: bytes) -> bytes:
    return bytes(crypto_scalarmult(private, public))


def _x25519_or_none(
    compute: Callable[[bytes, bytes], bytes], private: bytes, public: bytes
) -> bytes | None:
    """The library's output, or None when it refuses (an all-zero result, for both)."""
    try:
        return compute(private, public)
    except (ValueError, RuntimeError):  # cryptography: ValueError; PyNaCl: RuntimeError
        return None


@verifier("x25519")
def verify_x25519(case: dict[str, Any]) -> None:
    private, public, shared = _h(case, "private"), _h(case, "public"), _h(case, "shared")
    result = _result(case)
    protocol = str(case["protocol"])
    if protocol == "reject_non_contributory":
        # Low-order / non-contributory public key: e2e rejects the all-zero DH output, so a
        # library must either return exactly zeros (and e2e refuses them) or raise itself.
        assert shared == _ZERO32, "non-contributory case must expect an all-zero secret"
        for compute in (_x25519_cryptography, _x25519_nacl):
            out = _x25519_or_none(compute, private, public)
            # None: the library refused, which is what e2e does too.
            assert out is None or out == _ZERO32, f"{compute.__name__}: non-zero output"
        return
    assert protocol == "accept", f"unknown protocol expectation {protocol!r}"
    assert shared != _ZERO32
    if result == "invalid":
        for compute in (_x25519_cryptography, _x25519_nacl):
            out = _x25519_or_none(compute, private, public)
            assert out != shared, f"{compute.__name__} accepted an invalid case"
        return
    got_c = _x25519_cryptography(private, public)
    got_n = _x25519_nacl(private, public)
    assert got_c == shared, f"cryptography X25519: {got_c.hex()} != {shared.hex()}"
    assert got_n == shared, f"libsodium crypto_scalarmult: {got_n.hex()} != {shared.hex()}"


@verifier("hkdf_sha256")
def verify_hkdf_sha256(case: dict[str, Any]) -> None:
    ikm, salt, info, okm = _h(case, "ikm"), _h(case, "salt"), _h(case, "info"), _h(case, "okm")
    size = int(case["size"])
    result = _result(case)
    try:
        # An empty salt is HKDF's default: HashLen zero bytes (RFC 5869 §2.2).
        out = HKDF(hashes.SHA256(), size, salt or None, info).derive(ikm)
    except ValueError:
        assert result == "invalid", "HKDF refused a valid case"
        return
    assert result != "invalid", "HKDF accepted an invalid case (output too long)"
    assert out == okm, f"okm {out.hex()} != {okm.hex()}"


@verifier("hmac_sha256")
def verify_hmac_sha256(case: dict[str, Any]) -> None:
    key, msg, tag = _h(case, "key"), _h(case, "msg"), _h(case, "tag")
    tag_bytes = int(case["tagSize"]) // 8
    result = _result(case)
    assert len(tag) == tag_bytes, "tag length differs from tagSize"
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    mac.update(msg)
    full = mac.finalize()
    matches = hmac.compare_digest(full[:tag_bytes], tag)
    if tag_bytes == len(full):
        # Full-length tags also go through cryptography's own constant-time verify().
        check = crypto_hmac.HMAC(key, hashes.SHA256())
        check.update(msg)
        try:
            check.verify(tag)
            verified = True
        except InvalidSignature:
            verified = False
        assert verified == matches
    if result == "invalid":
        assert not matches, "modified tag verified"
    else:
        assert matches, f"tag {full[:tag_bytes].hex()} != {tag.hex()}"


@verifier("shake256")
def verify_shake256(case: dict[str, Any]) -> None:
    """SHAKE256 as cryptography computes it in one pass, and as e2e's KDFs do (a copy of a
    hash object that has already absorbed the first bytes, e2e.chain_key.labelled_shake256)."""
    msg, want = _h(case, "msg"), _h(case, "output")
    bits = int(case["outputlen_bits"])
    assert bits % 8 == 0 and len(want) * 8 == bits, "output length differs from outputlen"
    assert len(msg) * 8 == int(case["len_bits"]), "message length differs from len"
    h = hashes.Hash(hashes.SHAKE256(len(want)))
    h.update(msg)
    assert h.finalize() == want, "SHAKE256 output differs"
    for split in {0, len(msg) // 2, len(msg)}:
        labelled = labelled_shake256(msg[:split], len(want))
        copy = labelled.copy()
        copy.update(msg[split:])
        assert copy.finalize() == want, f"SHAKE256 absorbed in two parts ({split}) differs"


@verifier("aes_gcm")
def verify_aes_gcm(case: dict[str, Any]) -> None:
    key, iv, aad = _h(case, "key"), _h(case, "iv"), _h(case, "aad")
    msg, ct, tag = _h(case, "msg"), _h(case, "ct"), _h(case, "tag")
    result = _result(case)
    assert len(key) == 32 and len(iv) == 12 and len(tag) == 16, "parameters outside our profile"
    aead = AESGCM(key)
    if result == "invalid":
        try:
            aead.decrypt(iv, ct + tag, aad)
        except InvalidTag:
            return
        raise AssertionError("AES-GCM accepted an invalid ciphertext/tag")
    sealed = aead.encrypt(iv, msg, aad)
    assert sealed == ct + tag, f"ct||tag {sealed.hex()} != {(ct + tag).hex()}"
    assert aead.decrypt(iv, ct + tag, aad) == msg


@verifier("aes_cbc_pkcs5")
def verify_aes_cbc_pkcs5(case: dict[str, Any]) -> None:
    key, iv, msg, ct = _h(case, "key"), _h(case, "iv"), _h(case, "msg"), _h(case, "ct")
    result = _result(case)
    assert len(key) == 32, "parameters outside our profile"
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))

    def decrypt() -> bytes:
        dec = cipher.decryptor()
        padded = dec.update(ct) + dec.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()

    if result == "invalid":
        try:
            decrypt()
        except ValueError:
            return
        raise AssertionError("AES-CBC accepted bad padding")
    padder = padding.PKCS7(128).padder()
    enc = cipher.encryptor()
    out = enc.update(padder.update(msg) + padder.finalize()) + enc.finalize()
    assert out == ct, f"ct {out.hex()} != {ct.hex()}"
    assert decrypt() == msg


@verifier("mlkem1024")
def verify_mlkem1024(case: dict[str, Any]) -> None:
    kind = str(case["kind"])
    result = _result(case)
    if kind == "keygen":
        assert result == "valid"
        ek = MLKEM1024PrivateKey.from_seed_bytes(_h(case, "seed")).public_key().public_bytes_raw()
        assert ek == _h(case, "ek"), "encapsulation key from seed differs"
    elif kind == "decaps":
        if result == "invalid":
            # Wrong-length seed or ciphertext: refused at import or at decapsulation.
            try:
                key = MLKEM1024PrivateKey.from_seed_bytes(_h(case, "seed"))
                key.decapsulate(_h(case, "c"))
            except ValueError:
                return
            raise AssertionError("ML-KEM-1024 accepted an invalid decapsulation input")
        key = MLKEM1024PrivateKey.from_seed_bytes(_h(case, "seed"))
        shared = key.decapsulate(_h(case, "c"))
        assert shared == _h(case, "K"), f"K {shared.hex()} != {case['K']}"
    elif kind == "encaps_key_check":
        assert result == "invalid", "only invalid encapsulation keys are checked"
        try:
            MLKEM1024PublicKey.from_public_bytes(_h(case, "ek"))
        except ValueError:
            return
        raise AssertionError("ML-KEM-1024 accepted an invalid encapsulation key")
    else:
        raise ValueError(f"unknown mlkem1024 case kind {kind!r}")
