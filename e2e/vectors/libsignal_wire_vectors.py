"""Verifier for messages recorded from the official libsignal client (concept "libsignal_wire").

Each case is a conversation recorded by vectors/record_libsignal_wire.py between libsignal
(a pinned ``@signalapp/libsignal-client`` under node) as the initiator and e2e as the
responder, whose keys are given in the case:

* ``bob``: identity private key, registration id, signed prekey (id, private key, signature),
  one-time prekey (id, private key) and, for version 4, a Kyber-1024 prekey (id, its
  64-byte ML-KEM seed, signature); ``bundle``: the public bundle e2e published from them;
* ``rng``: the seed of e2e's randomness (its new ratchet key pairs, SPQR key pairs and
  encapsulations) as a SHAKE-256 stream;
* ``spqr_min_version``: e2e's SPQR minimum version (1 where libsignal speaks SPQR, 0 for
  0.72.1, which does not; absent means 1);
* ``kind`` "bundle" cases instead hold a prekey bundle libsignal generated and signed, which
  must parse and verify;
* ``steps``: in order, ``{"from": "libsignal", "type", "message", "plaintext"}`` (produced by
  libsignal: e2e must decrypt it to ``plaintext``) and ``{"from": "e2e", ...}`` (produced by
  e2e at recording time and accepted by libsignal: e2e must reproduce ``message`` byte for
  byte).
"""

from __future__ import annotations

import hashlib
from typing import Any

from e2e.keys import KemKeyPair, KeyPair
from e2e.libsignal import LibsignalBundle, LibsignalPrekeys, SessionRecord
from e2e.libsignal.wire import parse_prekey_message
from e2e.prekeys import KemPrekey, OneTimePrekey, SignedPrekey
from e2e.vectors.registry import verifier

__all__ = ["ShakeRng", "bob_prekeys"]


class ShakeRng:
    """A deterministic byte stream: SHAKE-256(seed), read front to back."""

    def __init__(self, seed: bytes) -> None:
        self._stream = hashlib.shake_256(seed).digest(64 * 1024)
        self._pos = 0

    def __call__(self, n: int) -> bytes:
        out = self._stream[self._pos : self._pos + n]
        if len(out) != n:
            raise ValueError("vector rng stream exhausted")
        self._pos += n
        return out


def bob_prekeys(bob: dict[str, Any]) -> LibsignalPrekeys:
    """The responder's prekeys from a case's ``bob`` object."""
    identity = KeyPair.from_private_bytes(bytes.fromhex(bob["identity_private"]))
    keys = LibsignalPrekeys(identity, bob["registration_id"])
    spk = bob["signed_prekey"]
    keys.signed[spk["id"]] = SignedPrekey(
        spk["id"],
        KeyPair.from_private_bytes(bytes.fromhex(spk["private"])),
        bytes.fromhex(spk["signature"]),
    )
    opk = bob.get("prekey")
    if opk is not None:
        keys.one_time[opk["id"]] = OneTimePrekey(
            opk["id"], KeyPair.from_private_bytes(bytes.fromhex(opk["private"]))
        )
    kyber = bob.get("kyber_prekey")
    if kyber is not None:
        keys.kem[kyber["id"]] = KemPrekey(
            kyber["id"],
            KemKeyPair.from_seed(bytes.fromhex(kyber["mlkem_seed"])),
            bytes.fromhex(kyber["signature"]),
            False,
        )
    return keys


@verifier("libsignal_wire")
def verify_libsignal_wire(case: dict[str, Any]) -> None:
    if case.get("kind") == "bundle":
        # A bundle libsignal generated: our parser and XEdDSA accept its keys and signatures.
        bundle = LibsignalBundle.from_json(case["bundle"])
        bundle.verify()
        if bundle.kyber_prekey is None or (bundle.prekey is None) != (bundle.prekey_id is None):
            raise AssertionError("libsignal bundle lacks a Kyber prekey or has half a prekey")
        return
    keys = bob_prekeys(case["bob"])
    version = case["session_version"]
    bundle = LibsignalBundle.from_json(case["bundle"])
    if keys.bundle(kyber=version == 4) != bundle:
        raise AssertionError("bundle does not match bob's keys")
    bundle.verify()
    rng = ShakeRng(bytes.fromhex(case["rng"]))
    record = SessionRecord()
    alice = bytes.fromhex(case["alice_identity"])
    for i, step in enumerate(case["steps"]):
        kind, message = step["type"], bytes.fromhex(step["message"])
        plaintext = bytes.fromhex(step["plaintext"])
        if step["from"] == "libsignal":
            if i == 0 and parse_prekey_message(message).identity_key != alice[1:]:
                raise AssertionError("first message is not from alice's identity")
            out = record.decrypt(
                kind,
                message,
                prekeys=keys,
                local_identity=keys.identity,
                local_registration_id=keys.registration_id,
                rng=rng,
                allowed_versions=(version,),
                spqr_min_version=case.get("spqr_min_version", 1),
            )
            if out.plaintext != plaintext:
                raise AssertionError(f"step {i}: plaintext differs")
            if out.prekeys_used is not None:
                u = out.prekeys_used
                keys.mark_used(u.prekey_id, u.kyber_prekey_id, u.base_key)
        else:
            if record.encrypt(plaintext, rng) != (kind, message):
                raise AssertionError(f"step {i}: e2e's message differs from the recorded one")
