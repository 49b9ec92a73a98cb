"""Which library runs each primitive: the faster one, where both offer it.

For every operation e2e makes that both cryptography and PyNaCl (libsodium) provide, a case
times e2e's choice ("chosen") next to the other library's way of doing the same thing
("other"), on the same inputs, both as a caller holding raw bytes would use them (e2e keeps
keys as bytes). ``benches/check_ratios.py`` bounds chosen / other in ``bounds.json``
("providers"), so a library release that flips the order fails CI instead of going unnoticed.
An operation where the two libraries are a near tie (their order set by the CPU and the load,
not by either library) has the bound ``null`` there: it is measured and printed, never a
pass/fail row.
HMAC, HKDF and ML-KEM are not here: only cryptography offers them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import nacl.bindings as _nacl
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

Call = Callable[[], object]


@dataclass(frozen=True)
class Choice:
    """One operation: the provider e2e uses (and where), and the two calls to time."""

    name: str
    chosen: str
    #: The module of e2e that makes this call, and the call as it appears there.
    used_in: str
    call: str
    make: Callable[[], tuple[Call, Call]]


def _x25519_dh() -> tuple[Call, Call]:
    secret = os.urandom(32)
    public = _nacl.crypto_scalarmult_base(os.urandom(32))
    # As e2e would have to call it: e2e holds private keys as their 32 bytes (a session's
    # ratchet key is loaded from its stored state for every message), and cryptography's
    # X25519PrivateKey.from_private_bytes derives the public key, one more scalar
    # multiplication per DH. With the key object built once and reused, the two libraries are
    # a near tie whose order depends on the CPU and the load (0.94-1.27 on one Intel machine,
    # 1.14 on an AMD EPYC one), which is no choice to gate on.
    return (
        lambda: _nacl.crypto_scalarmult(secret, public),
        lambda: X25519PrivateKey.from_private_bytes(secret).exchange(
            X25519PublicKey.from_public_bytes(public)
        ),
    )


def _x25519_keygen() -> tuple[Call, Call]:
    def other() -> tuple[bytes, bytes]:
        key = X25519PrivateKey.generate()
        return key.private_bytes_raw(), key.public_key().public_bytes_raw()

    return lambda: _nacl.crypto_scalarmult_base(os.urandom(32)), other


def _aead(open_: bool) -> tuple[Call, Call]:
    # A fresh key per call, as every message key is used once.
    key, nonce, ad, pt = os.urandom(32), bytes(12), os.urandom(180), os.urandom(256)
    sealed = AESGCM(key).encrypt(nonce, pt, ad)
    if open_:
        return (
            lambda: AESGCM(key).decrypt(nonce, sealed, ad),
            lambda: _nacl.crypto_aead_aes256gcm_decrypt(sealed, ad, nonce, key),
        )
    return (
        lambda: AESGCM(key).encrypt(nonce, pt, ad),
        lambda: _nacl.crypto_aead_aes256gcm_encrypt(pt, ad, nonce, key),
    )


def _ed25519_verify() -> tuple[Call, Call]:
    public, secret = _nacl.crypto_sign_keypair()
    message = os.urandom(46)  # a signed-prekey signature's message
    signed = _nacl.crypto_sign(message, secret)
    return (
        lambda: _nacl.crypto_sign_open(signed, public),
        lambda: Ed25519PublicKey.from_public_bytes(public).verify(signed[:64], message),
    )


def _sha512() -> tuple[Call, Call]:
    data = os.urandom(140)  # XEdDSA's nonce hash input: prefix, key, message, randomness

    def other() -> bytes:
        h = hashes.Hash(hashes.SHA512())
        h.update(data)
        return h.finalize()

    return lambda: _nacl.crypto_hash_sha512(data), other


CHOICES: dict[str, Choice] = {  # fmt: skip
    c.name: c
    for c in (
        Choice("x25519_dh", "PyNaCl", "e2e/keys.py", "_nacl.crypto_scalarmult(", _x25519_dh),
        Choice(
            "x25519_keygen",
            "PyNaCl",
            "e2e/keys.py",
            "_nacl.crypto_scalarmult_base(",
            _x25519_keygen,
        ),
        Choice(
            "aes256gcm_seal",
            "cryptography",
            "e2e/message_key.py",
            ").encrypt(",
            lambda: _aead(False),
        ),
        Choice(
            "aes256gcm_open",
            "cryptography",
            "e2e/message_key.py",
            ").decrypt(",
            lambda: _aead(True),
        ),
        Choice(
            "ed25519_verify",
            "PyNaCl",
            "e2e/xeddsa.py",
            "_nacl.crypto_sign_open(",
            _ed25519_verify,
        ),
        Choice("sha512", "PyNaCl", "e2e/xeddsa.py", "_nacl.crypto_hash_sha512(", _sha512),
    )
}


def case_name(name: str) -> str:
    return f"provider-{name}"


def available(choice: Choice) -> bool:
    """False where the other library cannot run the operation here (e.g. no AES-NI)."""
    try:
        for call in choice.make():
            call()
    except Exception:  # noqa: BLE001 - any failure means "not comparable on this machine"
        return False
    return True
