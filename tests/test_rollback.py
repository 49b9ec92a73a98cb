"""State rollback and header linkage: the attacks of issue 11, run against the protocol.

A session state restored from an older copy (backup, a database row put back, a crash
between ``encrypt`` and persisting) encrypts a second, different message under a message
key it already used. With an early body (AES-256-GCM under a key derived from the message
key alone, fixed zero nonce) the relay, which sees both frames, got the XOR of the two
plaintexts and, from the two tags, the GHASH key H, hence forgeries. Suite 3 seals each body
under the frame's fresh random nonce (and carries the key's commitment inside the sealed
header). Each test below runs that attack on two frames made by a really rolled-back session
and checks it now fails; a control runs the same attacker code on the fixed-nonce
construction and checks it succeeds there, so the attack code itself is known to work.

SPEC.md §4.3, §4.4, §5.2, §6.5, §12.
"""

from __future__ import annotations

import hmac as _hmac
import os

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from helpers import frame_fields, handshake, reencode

from e2e import (
    PQ,
    AuthenticationFailed,
    DuplicateMessage,
    RatchetStepRequired,
    Session,
)
from e2e.chain_key import kdf_ck
from e2e.frame import SEALED_HEADER_LEN, K

# -- GF(2^128) as GCM uses it (NIST SP 800-38D §6.3), for the attacker ------------------------

_R = 0xE1 << 120


def _gf_mul(x: int, y: int) -> int:
    z, v = 0, x
    for i in range(127, -1, -1):
        if (y >> i) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


def _gf_pow(x: int, e: int) -> int:
    out = 1 << 127  # the field's 1 in GCM's bit order
    while e:
        if e & 1:
            out = _gf_mul(out, x)
        x = _gf_mul(x, x)
        e >>= 1
    return out


def _int(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def recover_h(ct1: bytes, tag1: bytes, ct2: bytes, tag2: bytes) -> int:
    """The nonce-reuse attack on GCM: two ciphertexts of equal length under one key, nonce
    and AD that differ only in their last 16-byte block give T1 ^ T2 = dC * H^2 (the last
    ciphertext block is multiplied by H twice: once more for the length block), so
    H = sqrt((T1 ^ T2) / dC), and square roots in GF(2^128) are x^(2^127)."""
    d_c = _int(_xor(ct1[-16:], ct2[-16:]))
    d_t = _int(_xor(tag1, tag2))
    h_squared = _gf_mul(d_t, _gf_pow(d_c, 2**128 - 2))
    return _gf_pow(h_squared, 2**127)


def forge(ct: bytes, tag: bytes, h: int, delta: bytes) -> tuple[bytes, bytes]:
    """Flip the last block of ``ct`` by ``delta`` and fix the tag with the recovered H."""
    forged = ct[:-16] + _xor(ct[-16:], delta)
    fixed = _int(tag) ^ _gf_mul(_int(delta), _gf_mul(h, h))
    return forged, fixed.to_bytes(16, "big")


def _hmac512(key: bytes, msg: bytes) -> bytes:
    h = hmac.HMAC(key, hashes.SHA512())
    h.update(msg)
    return h.finalize()


def _ghash_key(gcm_key: bytes) -> int:
    enc = Cipher(algorithms.AES(gcm_key), modes.ECB()).encryptor()
    return _int(enc.update(bytes(16)) + enc.finalize())


# Equal except in the last 16-byte block (what recover_h needs).
_COMMON = b"transfer 100 EUR to account 1234, reference: inv"
P1 = _COMMON + b"oice 2026-001 ok"
P2 = _COMMON + b"oice WRONG, drop"
TARGET = _COMMON + b"; +9999 EUR to 6"
assert len(P1) == len(P2) == len(TARGET) == 64


def _rolled_back_pair(suite=PQ):  # type: ignore[no-untyped-def]
    """Alice's state is saved, she sends P1, then the saved state is restored (a rollback)
    and sends P2: two frames under the same (ratchet key, N) and the same message key, which
    is returned too (EK | MC)."""
    pair = handshake(suite)
    saved = pair.alice.to_bytes()
    cks = pair.alice.ratchet.cks
    assert cks is not None
    f1 = pair.alice.encrypt(P1)
    restored = Session.from_bytes(saved)  # the loader did not know: fresh=True
    f2 = restored.encrypt(P2)
    return pair, f1, f2, kdf_ck(suite, cks)[1]


# -- the control: the attacker code breaks the former construction ----------------------------


def test_control_attack_works_on_the_former_fixed_nonce_body() -> None:
    """An early body: EK from the message key alone, zero nonce; the same AD for both (in
    that frame the AD differed only in the header bytes, which the attacker knows)."""
    seed, ad = os.urandom(32), os.urandom(130)
    ek = _hmac512(seed, b"E2E_MessageKeys\x01")[:32]
    s1 = AESGCM(ek).encrypt(bytes(12), P1, ad)
    s2 = AESGCM(ek).encrypt(bytes(12), P2, ad)
    assert _xor(s1[:-16], s2[:-16]) == _xor(P1, P2)  # the two-time pad
    h = recover_h(s1[:-16], s1[-16:], s2[:-16], s2[-16:])
    assert h == _ghash_key(ek)  # the GHASH key
    ct, tag = forge(s1[:-16], s1[-16:], h, _xor(P1[-16:], TARGET[-16:]))
    assert AESGCM(ek).decrypt(bytes(12), ct + tag, ad) == TARGET  # a forgery that verifies


# -- the same attacks on a rolled-back session now fail ----------------------------------------


def test_rollback_gives_no_plaintext_xor() -> None:
    _, f1, f2, mk = _rolled_back_pair()
    b1, b2 = frame_fields(f1)[K.BODY], frame_fields(f2)[K.BODY]
    ct1, ct2 = b1[:-16], b2[:-16]
    assert len(ct1) == len(ct2) == 64
    leak = _xor(ct1, ct2)
    assert leak != _xor(P1, P2)
    # Not even in part: the first 48 bytes of P1 and P2 are equal, yet the ciphertexts agree
    # in no more bytes than chance (about 64/256) would give.
    assert sum(x == 0 for x in leak) < 8
    h1, h2 = frame_fields(f1)[K.HEADER], frame_fields(f2)[K.HEADER]
    assert h1[:12] != h2[:12]  # a fresh nonce for each frame, under the one message key
    # The key's commitment MC travels inside the sealed header: neither frame shows it.
    assert mk[32:] not in f1 and mk[32:] not in f2


def test_rolled_back_frames_share_nothing_but_the_format() -> None:
    """Two frames under one message key are no more alike than two frames of two keys: only
    the format's constant bytes (map head, version, suite, type, the header's key and length,
    the body's key and length head) coincide, and otherwise only by chance."""
    _, f1, f2, _ = _rolled_back_pair()
    assert len(f1) == len(f2)
    head_end, body_key = 10, 10 + SEALED_HEADER_LEN
    fixed = {*range(head_end), body_key, body_key + 1, body_key + 2}
    same = [i for i in range(len(f1)) if f1[i] == f2[i] and i not in fixed]
    assert len(same) < 8  # chance: about (len(f1) - 13) / 256, here under 1


def test_rollback_gives_no_ghash_key_and_the_forgery_is_rejected() -> None:
    pair, f1, f2, mk = _rolled_back_pair()
    bob = pair.bob
    assert bob is not None
    fields1 = frame_fields(f1)
    b1, b2 = fields1[K.BODY], frame_fields(f2)[K.BODY]
    n1 = fields1[K.HEADER][:12]
    # Both bodies are under the one GCM key EK, but under different nonces: the nonce-reuse
    # attack's algebra gives a value that is not the GHASH key.
    ek = mk[:32]
    h = recover_h(b1[:-16], b1[-16:], b2[:-16], b2[-16:])
    assert h != _ghash_key(ek)
    ct, tag = forge(b1[:-16], b1[-16:], h, _xor(P1[-16:], TARGET[-16:]))
    forged = reencode({**fields1, K.BODY: ct + tag})  # behind frame 1's header
    before = bob.to_bytes()
    with pytest.raises(AuthenticationFailed):
        bob.decrypt(forged)
    assert bob.to_bytes() == before
    # Even past the header (which authenticates the body, SPEC §5.2), GCM refuses it.
    blank = reencode({**fields1, K.HEADER: bytes(SEALED_HEADER_LEN)})[: len(f1) - len(b1)]
    ad0 = pair.alice.ratchet.ad + blank
    assert AESGCM(ek).decrypt(n1, b1, ad0) == P1  # the key, nonce and AD are right
    with pytest.raises(Exception):  # noqa: B017 - InvalidTag
        AESGCM(ek).decrypt(n1, ct + tag, ad0)
    # The receiver takes whichever genuine frame arrives first, and refuses the other.
    assert bob.decrypt(f1) == P1
    with pytest.raises(DuplicateMessage):
        bob.decrypt(f2)


# -- unlinkable headers ------------------------------------------------------------------------


def test_headers_of_one_chain_share_no_bytes_at_fixed_positions() -> None:
    """Nothing in a frame after the format's constant prefix (map head, version, suite,
    type, the header's key and length) is constant across the messages of a chain: not the
    132-byte sealed header (nonce, commitment, ciphertext of DH, PN, N and the body key's
    commitment) nor the body."""
    pair = handshake(PQ)
    frames = [pair.alice.encrypt(b"same text every time") for _ in range(40)]
    assert len({len(f) for f in frames}) == 1
    assert len({pair.alice.ratchet.dhs.public}) == 1  # one sending chain throughout
    constant = [i for i in range(len(frames[0])) if len({f[i] for f in frames}) == 1]
    # Only the format: the 10-byte head, the body key and the body's 2-byte length head.
    head_end, body_key = 10, 10 + SEALED_HEADER_LEN
    assert constant == [*range(head_end), body_key, body_key + 1, body_key + 2]
    headers = [frame_fields(f)[K.HEADER] for f in frames]
    for i, a in enumerate(headers):
        for b in headers[i + 1 :]:
            assert sum(x == y for x, y in zip(a, b, strict=True)) < 10  # chance: ~0.4


def test_header_commitment_is_per_header() -> None:
    pair = handshake(PQ)
    h1 = frame_fields(pair.alice.encrypt(b"a"))[K.HEADER]
    h2 = frame_fields(pair.alice.encrypt(b"a"))[K.HEADER]
    assert h1[12:44] != h2[12:44]
    assert not _hmac.compare_digest(h1[:12], h2[:12])


# -- a restored session sends only after a fresh ratchet step (SPEC §6.5) ----------------------


def test_session_loaded_as_not_fresh_sends_only_after_a_dh_step() -> None:
    for suite in (PQ,):
        pair = handshake(suite)
        bob = pair.bob
        assert bob is not None
        a1 = pair.alice.encrypt(b"a1")
        saved = pair.alice.to_bytes()  # persisted after a1
        a2 = pair.alice.encrypt(b"a2")  # state after a2 lost: the device restores `saved`
        alice = Session.from_bytes(saved, fresh=False)
        assert alice.needs_ratchet_step
        with pytest.raises(RatchetStepRequired):
            alice.encrypt(b"would reuse a2's key")
        assert alice.to_bytes() == Session.from_bytes(alice.to_bytes()).to_bytes()
        again = Session.from_bytes(alice.to_bytes())  # the flag is saved with the state
        assert again.needs_ratchet_step
        assert bob.decrypt(a1) == b"a1" and bob.decrypt(a2) == b"a2"
        assert alice.decrypt(bob.encrypt(b"b1")) == b"b1"  # Bob's new chain: a DH step
        assert not alice.needs_ratchet_step
        assert bob.decrypt(alice.encrypt(b"a3")) == b"a3"


def test_require_ratchet_step_after_loading() -> None:
    pair = handshake(PQ)
    pair.alice.require_ratchet_step()
    with pytest.raises(RatchetStepRequired):
        pair.alice.encrypt(b"x")
    state = pair.alice.to_bytes()
    assert Session.from_bytes(state).needs_ratchet_step
    assert not Session.from_bytes(handshake(PQ).alice.to_bytes()).needs_ratchet_step


# -- randomness comes from os.urandom unless a test allows another source ----------------------


def test_injected_random_source_refused_outside_tests() -> None:
    """The public API refuses a caller's own (possibly non-cryptographic) generator; only
    the private hook e2e._testing, used by tests and the vector verifier, allows it."""
    import random

    from e2e import KeyPair, LocalPrekeys, RandomSourceRefused, _testing
    from e2e.keys import KemKeyPair

    weak = random.Random(1).randbytes
    pair = handshake(PQ)
    bundle = LocalPrekeys.generate(pair.bob_id, PQ, one_time=1).bundle().to_bytes()
    state = pair.alice.to_bytes()
    with _testing.injected_rng(False):
        for call in (
            lambda: KeyPair.generate(weak),
            lambda: KemKeyPair.generate(weak),
            lambda: LocalPrekeys.generate(pair.bob_id, PQ, one_time=1, rng=weak),
            lambda: Session.initiate(pair.alice_id, bundle, rng=weak),
            lambda: Session.initiate(pair.alice_id, bundle, encapsulate=lambda pk: (b"", b"")),
            lambda: Session.from_bytes(state, rng=weak),
        ):
            with pytest.raises(RandomSourceRefused):
                call()
        assert Session.from_bytes(state, rng=os.urandom).encrypt(b"ok")  # the default is fine
        KeyPair.generate()
    with _testing.injected_rng():
        assert len(KeyPair.generate(weak).public) == 32
