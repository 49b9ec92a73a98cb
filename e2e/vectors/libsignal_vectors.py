"""Verifier for libsignal's own known answers (vectors/libsignal_kdf.json, concept "libsignal_kdf").

Standard (v3) cases run through the pure KDF functions e2e.libsignal uses (``chain_step``,
``e2e.libsignal.kdf.expand_message_key`` and ``root_step``, ``derive_initial_keys``) and
``KeyPair.exchange``; only the
legacy v2 HKDF and the second half of libsignal's agreement output (a chain key e2e does not
use) are recomputed here with ``cryptography``.

The exact rules that reproduce libsignal's values (e2e.libsignal, SPEC.md §15):

Keys
    A public key is serialised as 33 bytes: type byte 0x05 || 32-byte X25519 u-coordinate. The
    type byte is stripped before DH; a 32-byte value is taken as the bare u-coordinate.
    A private key is 32 bytes, clamped per RFC 7748 before use (libsignal's Rust
    ``PrivateKey::deserialize`` clamps; so does every X25519 here). DH(a, B) = X25519(a, B),
    32 bytes.

Chain step (``chain_step``)
    message_key_seed = HMAC-SHA256(key=ck, msg=0x01)
    next_ck          = HMAC-SHA256(key=ck, msg=0x02)

Message keys (``message_keys``)
    okm = HKDF-SHA256(ikm=message_key_seed, salt=none (32 zero bytes), info="WhisperMessageKeys",
    L=80); cipher_key = okm[0:32], mac_key = okm[32:64], iv = okm[64:80].

Root step (``root_step``)
    okm = HKDF-SHA256(ikm=DH(our_private, their_public), salt=root_key, info="WhisperRatchet",
    L=64); next_root_key = okm[0:32], next_chain_key = okm[32:64].

X3DH / ratcheting session (``ratcheting_session``), no one-time prekey in these vectors
    secret = 0xFF * 32 || DH1 || DH2 || DH3 [|| DH4], with, from Alice's side,
    DH1 = DH(alice_identity, bob_signed_prekey), DH2 = DH(alice_base, bob_identity),
    DH3 = DH(alice_base, bob_signed_prekey), DH4 = DH(alice_base, bob_one_time_prekey);
    Bob computes the same values with the roles of private and public swapped.
    okm = HKDF-SHA256(ikm=secret, salt=none, info="WhisperText", L=64);
    root_key = okm[0:32], chain_key = okm[32:64]. Bob's sender chain key and Alice's receiver
    chain key (for Bob's ratchet key) are that chain_key itself.

Curve25519 agreement (``agreement``)
    public = X25519(private, 9); DH(alice_private, bob_public) = DH(bob_private, alice_public).

HKDF versions
    ``"hkdf": "v3"`` (and the default) is RFC 5869 HKDF. ``"hkdf": "v2"`` is libsignal's legacy
    session-version-2 HKDF: the same extract, but the expand counter byte starts at 0x00
    instead of 0x01 (T(i) = HMAC(PRK, T(i-1) || info || byte(i-1))). Only libsignal's v2 test
    vectors use it; e2e never does.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from e2e.chain_key import chain_step
from e2e.keys import KeyPair
from e2e.libsignal.kdf import expand_message_key, root_step
from e2e.libsignal.session import derive_initial_keys
from e2e.libsignal.wire import VERSION_X3DH
from e2e.vectors.registry import verifier

__all__: list[str] = []

_DJB_TYPE = 0x05
_X3DH_PREFIX = b"\xff" * 32


def _h(case: dict[str, Any], field: str) -> bytes:
    return bytes.fromhex(str(case[field]))


def _public(serialised: bytes) -> X25519PublicKey:
    if len(serialised) == 33:
        if serialised[0] != _DJB_TYPE:
            raise ValueError("bad public key type byte")
        serialised = serialised[1:]
    if len(serialised) != 32:
        raise ValueError("bad public key length")
    return X25519PublicKey.from_public_bytes(serialised)


def _dh(private: bytes, public: bytes) -> bytes:
    return KeyPair.from_private_bytes(private).exchange(_public(public).public_bytes_raw())


def _hkdf(version: str, ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    if version == "v3":
        return HKDF(hashes.SHA256(), length, salt, info).derive(ikm)
    if version != "v2":
        raise ValueError(f"unknown HKDF version {version!r}")
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 0
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _eq(name: str, got: bytes, case: dict[str, Any], field: str) -> None:
    want = _h(case, field)
    assert got == want, f"{name}: got {got.hex()}, libsignal expects {want.hex()}"


@verifier("libsignal_kdf")
def verify_libsignal_kdf(case: dict[str, Any]) -> None:
    kind = str(case["kind"])
    version = str(case.get("hkdf", "v3"))
    if kind == "chain_step":
        _eq("next chain key", chain_step(_h(case, "chain_key"))[0], case, "next_chain_key")
    elif kind == "message_keys":
        seed = chain_step(_h(case, "chain_key"))[1]
        if version == "v3":
            okm = expand_message_key(seed)
        else:
            okm = _hkdf(version, seed, None, b"WhisperMessageKeys", 80)
        _eq("cipher key", okm[:32], case, "cipher_key")
        _eq("mac key", okm[32:64], case, "mac_key")
        if "iv" in case:
            _eq("iv", okm[64:80], case, "iv")
    elif kind == "root_step":
        dh = _dh(_h(case, "our_private"), _h(case, "their_public"))
        if version == "v3":
            rk, ck = root_step(_h(case, "root_key"), dh)
            okm = rk + ck
        else:
            okm = _hkdf(version, dh, _h(case, "root_key"), b"WhisperRatchet", 64)
        _eq("next root key", okm[:32], case, "next_root_key")
        _eq("next chain key", okm[32:], case, "next_chain_key")
    elif kind == "ratcheting_session":
        role = str(case["role"])
        if role == "alice":
            ik, ek = _h(case, "alice_identity_private"), _h(case, "alice_base_private")
            dhs = [
                _dh(ik, _h(case, "bob_signed_prekey_public")),
                _dh(ek, _h(case, "bob_identity_public")),
                _dh(ek, _h(case, "bob_signed_prekey_public")),
            ]
            if "bob_one_time_prekey_public" in case:
                dhs.append(_dh(ek, _h(case, "bob_one_time_prekey_public")))
        elif role == "bob":
            ik, spk = _h(case, "bob_identity_private"), _h(case, "bob_signed_prekey_private")
            dhs = [
                _dh(spk, _h(case, "alice_identity_public")),
                _dh(ik, _h(case, "alice_base_public")),
                _dh(spk, _h(case, "alice_base_public")),
            ]
            if "bob_one_time_prekey_private" in case:
                dhs.append(
                    _dh(_h(case, "bob_one_time_prekey_private"), _h(case, "alice_base_public"))
                )
        else:
            raise ValueError(f"unknown role {role!r}")
        okm = _hkdf(version, _X3DH_PREFIX + b"".join(dhs), None, b"WhisperText", 64)
        if "expected_root_key" in case:
            root = okm[:32]
            if version == "v3":
                root = derive_initial_keys(VERSION_X3DH, b"".join(dhs))[0]
            _eq("root key", root, case, "expected_root_key")
        _eq("chain key", okm[32:], case, "expected_chain_key")
    elif kind == "agreement":
        for who in ("alice", "bob"):
            pub = X25519PrivateKey.from_private_bytes(_h(case, f"{who}_private")).public_key()
            want = _public(_h(case, f"{who}_public")).public_bytes_raw()
            assert pub.public_bytes_raw() == want, f"{who}'s public key differs"
        _eq(
            "alice's agreement",
            _dh(_h(case, "alice_private"), _h(case, "bob_public")),
            case,
            "shared",
        )
        _eq(
            "bob's agreement",
            _dh(_h(case, "bob_private"), _h(case, "alice_public")),
            case,
            "shared",
        )
    else:
        raise ValueError(f"unknown libsignal_kdf case kind {kind!r}")
