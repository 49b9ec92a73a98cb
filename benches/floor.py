"""The floor: only the primitive calls each workload must make.

Every function here builds one workload of :mod:`benches.workloads` out of nothing but the
cryptography / PyNaCl calls that e2e makes for it, with the same providers and the same
input sizes: no framing, no header encoding, no state object, no error mapping. A
workload's ratio to its floor is therefore e2e's own overhead (Python, CBOR, state).

Per message, e2e makes these calls (read from e2e/ratchet.py, e2e/chain_key.py,
e2e/root_key.py and e2e/message_key.py; SPEC.md §4):

PQ suite (suite 3), sender (``Ratchet.encrypt``):
  KDF_CK: one SHAKE256 (96 B) - a copy of a hash that has absorbed the chain label, one
  update (CK), one finalize - giving the next chain key and the message key (EK | MC);
  os.urandom(12): the frame's nonce (GCM nonce of both the body and the header);
  body: AESGCM(EK).encrypt(nonce, plaintext, AD 66 B + frame prefix);
  header (40 B + MC 32 B): its commitment HMAC-SHA256("E2E_HeaderKey", hk | 0x02 | nonce),
  a ``copy()`` of one HMAC object shared by all header keys (update, finalize), then the
  cached AEAD of hks encrypts it with AD = that body AD | the sealed body (one concatenation).
  A header key's AEAD (its key one more copy of that HMAC, over hk | 0x01) is made once per
  chain, when the key is first used.
PQ suite, receiver in its current chain (``Ratchet.decrypt``):
  header: the commitment HMAC as above, compare_digest, the cached AEAD decrypts with
  AD = body AD | body; KDF_CK as above; compare_digest(MC of the key, MC of the header);
  AESGCM(EK).decrypt(nonce, body, body AD).
PQ receiver of a new ratchet key (ping-pong): it has sent since it last received, so the header
  is tried under nhkr first and opens there, under nhkr's AEAD made now (the sender made its
  new hks AEAD too); then X25519(dhs, remote), KDF_RK (one SHAKE256 copy, 96 B),
  os.urandom(32) + X25519 base (new dhs), X25519(new dhs, remote), KDF_RK, KDF_CK and the
  body as above.
(libsignal's own schedule and wire format are e2e.libsignal, measured against libsignal
itself in benches/libsignal_peer.py, not against a floor here.)
"""

from __future__ import annotations

import hmac as _hmac
import os
from collections.abc import Callable
from typing import Any

import cbor2
import nacl.bindings as _nacl
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

Setup = Callable[[], tuple[Any, ...]]
Target = Callable[..., object]

_SHA256 = hashes.SHA256()
_HEADER_LABEL = b"E2E_HeaderKey"
_ROOT_LABEL = b"E2E_RootStep"
_CHAIN_LABEL = b"E2E_ChainStep"
_SALT = bytes(32)
_F = b"\xff" * 32


def _labelled(label: bytes) -> hashes.Hash:
    h = hashes.Hash(hashes.SHAKE256(96))
    h.update(label)
    return h


#: SHAKE256 (96 B) with the suite's labels absorbed, as e2e keeps them (made once).
_ROOT = _labelled(_ROOT_LABEL)
_CHAIN = _labelled(_CHAIN_LABEL)

#: Associated data sizes e2e authenticates: AD = Encode_EC(IK_A) | Encode_EC(IK_B) (66 B),
#: and for a body also the frame prefix before the body (its length depends on the sizes).
_AD = os.urandom(66)
_HEADER = os.urandom(40)


def _no_setup() -> tuple[()]:
    return ()


def _body_ad(suite: int, size: int) -> bytes:
    """AD | frame prefix of a normal message, the same length as e2e's."""
    header_head = 2 + 132
    if size + 16 < 24:
        body_head = 1
    elif size < 256 - 16:
        body_head = 2
    elif size < 65536 - 16:
        body_head = 3
    else:
        body_head = 5
    prefix_len = 1 + 2 + 2 + 2 + 1 + header_head + 1 + body_head
    return _AD + os.urandom(prefix_len)


# -- the PQ suite's per-message pieces -----------------------------------------------------


def _pq_keys() -> dict[str, Any]:
    hk, other_hk = os.urandom(32), os.urandom(32)
    return {
        "ck": os.urandom(32),
        "hk": hk,
        "other_hk": other_hk,
        "hc": _pq_header_cipher(hk),
        "other_hc": _pq_header_cipher(other_hk),
    }


#: HMAC-SHA256 keyed with the public header label, shared by all header keys (as in e2e).
_HEADER_MAC = hmac.HMAC(_HEADER_LABEL, _SHA256)


def _pq_header_cipher(hk: bytes) -> tuple[AESGCM, bytes]:
    """A header key's AEAD and its commitment prefix hk | 0x02: made once per chain (e2e
    caches them likewise)."""
    h = _HEADER_MAC.copy()
    h.update(hk + b"\x01")
    return AESGCM(h.finalize()), hk + b"\x02"


def _pq_commit(hc: tuple[AESGCM, bytes], nonce: bytes) -> bytes:
    h = _HEADER_MAC.copy()
    h.update(hc[1] + nonce)
    return h.finalize()


def _kdf(labelled: hashes.Hash, secret: bytes) -> bytes:
    h = labelled.copy()
    h.update(secret)
    return h.finalize()


def _pq_seal(ck: bytes, hc: tuple[AESGCM, bytes], body_ad: bytes, pt: bytes) -> tuple[bytes, bytes]:
    """Sender: KDF_CK, sealed body, then the header (with MC) sealed over AD | prefix | body.
    Returns (sealed header, sealed body)."""
    out = _kdf(_CHAIN, ck)
    nonce = os.urandom(12)
    body = AESGCM(out[32:64]).encrypt(nonce, pt, body_ad)
    commitment = _pq_commit(hc, nonce)
    header = _HEADER + out[64:]
    return nonce + commitment + hc[0].encrypt(nonce, header, body_ad + body), body


def _pq_open_header(hc: tuple[AESGCM, bytes], ad: bytes, sealed: bytes) -> bytes | None:
    nonce = sealed[:12]
    if not _hmac.compare_digest(_pq_commit(hc, nonce), sealed[12:44]):
        return None
    return hc[0].decrypt(nonce, sealed[44:], ad)


def _pq_open_sealed(mk: bytes, header: bytes, nonce: bytes, body_ad: bytes, body: bytes) -> bytes:
    """Open a body under a message key: compare MC with the header's, then AESGCM."""
    if not _hmac.compare_digest(mk[32:], header[40:]):
        raise AssertionError("floor: commitment mismatch")
    return AESGCM(mk[:32]).decrypt(nonce, body, body_ad)


def _pq_open_body(ck: bytes, header: bytes, nonce: bytes, body_ad: bytes, body: bytes) -> bytes:
    return _pq_open_sealed(_kdf(_CHAIN, ck)[32:], header, nonce, body_ad, body)


def _pq_receive(
    hc: tuple[AESGCM, bytes], ck: bytes, body_ad: bytes, hdr: bytes, body: bytes
) -> bytes:
    """Receiver in the current chain: the header, then KDF_CK and the body."""
    header = _pq_open_header(hc, body_ad + body, hdr)
    assert header is not None
    return _pq_open_body(ck, header, hdr[:12], body_ad, body)


# -- workloads -------------------------------------------------------------------------------


def encrypt(suite: int, size: int) -> tuple[Setup, Target]:
    """Sender only: one message of ``size`` bytes."""
    pt = os.urandom(size)
    body_ad = _body_ad(suite, size)
    k = _pq_keys()
    return _no_setup, lambda: _pq_seal(k["ck"], k["hc"], body_ad, pt)


def decrypt(suite: int, size: int) -> tuple[Setup, Target]:
    """Receiver only, in order: one message of ``size`` bytes in the current chain."""
    pt = os.urandom(size)
    body_ad = _body_ad(suite, size)
    k = _pq_keys()
    hdr, body = _pq_seal(k["ck"], k["hc"], body_ad, pt)

    return _no_setup, lambda: _pq_receive(k["hc"], k["ck"], body_ad, hdr, body)


def oneway(suite: int, size: int) -> tuple[Setup, Target]:
    """Encrypt one message and decrypt it at the peer."""
    pt = os.urandom(size)
    body_ad = _body_ad(suite, size)
    k = _pq_keys()
    ck, hc = k["ck"], k["hc"]

    def pq_target() -> None:
        hdr, body = _pq_seal(ck, hc, body_ad, pt)
        _pq_receive(hc, ck, body_ad, hdr, body)

    return _no_setup, pq_target


def out_of_order(suite: int, size: int) -> tuple[Setup, Target]:
    """Receive messages N+1 then N: the first skips one key (two KDF_CK, one message key
    stored), the second opens with the stored message key (no KDF_CK)."""
    pt = os.urandom(size)
    body_ad = _body_ad(suite, size)
    k = _pq_keys()
    ck, hc = k["ck"], k["hc"]
    # Every body is sealed under KDF_CK(ck)'s message key, so the stored key opens it too.
    hdr, body = _pq_seal(ck, hc, body_ad, pt)
    nonce = hdr[:12]

    def pq_target() -> None:
        header = _pq_open_header(hc, body_ad + body, hdr)
        assert header is not None
        mk = _kdf(_CHAIN, ck)[32:]  # the skipped message's key, stored
        _pq_open_body(ck, header, nonce, body_ad, body)
        header = _pq_open_header(hc, body_ad + body, hdr)
        assert header is not None
        _pq_open_sealed(mk, header, nonce, body_ad, body)

    return _no_setup, pq_target


def _dh_step(suite: int, rk: bytes, dhs_secret: bytes, remote: bytes) -> tuple[bytes, bytes, bytes]:
    """A receiver's DH ratchet step: two root-key steps and a new ratchet key pair."""
    out = _kdf(_ROOT, rk + _nacl.crypto_scalarmult(dhs_secret, remote))
    secret = os.urandom(32)
    _nacl.crypto_scalarmult_base(secret)
    out = _kdf(_ROOT, out[:32] + _nacl.crypto_scalarmult(secret, remote))
    return out[:32], out[32:64], secret


def ping_pong(suite: int, size: int) -> tuple[Setup, Target]:
    """One message whose receiver makes a DH ratchet step (the parties alternate)."""
    pt = os.urandom(size)
    body_ad = _body_ad(suite, size)
    k = _pq_keys()
    ck, hk, rk = k["ck"], k["hk"], os.urandom(32)
    secret = os.urandom(32)
    remote = _nacl.crypto_scalarmult_base(os.urandom(32))

    def pq_target() -> None:
        # Every message starts a chain: its sender derives the new header key's AEAD once,
        # and so does the receiver, who has sent since it last received and so tries its next
        # header key first (SPEC.md §4.5): the header opens at the first trial.
        hdr, body = _pq_seal(ck, _pq_header_cipher(hk), body_ad, pt)
        header = _pq_open_header(_pq_header_cipher(hk), body_ad + body, hdr)
        assert header is not None
        _dh_step(suite, rk, secret, remote)
        _pq_open_body(ck, header, hdr[:12], body_ad, body)

    return _no_setup, pq_target


_ED_PUBLIC, _ED_SECRET = _nacl.crypto_sign_keypair()


def _ed25519_signed(message: bytes) -> tuple[bytes, bytes]:
    """A signed message of the same size as a bundle signature's, and its public key."""
    return _ED_PUBLIC, _nacl.crypto_sign(message, _ED_SECRET)


def session_setup(suite: int, size: int) -> tuple[Setup, Target]:
    """PQXDH (suite 3) with a one-time prekey, the first message of
    ``size`` bytes, and the responder's acceptance of it (which is one DH ratchet step)."""
    pt = os.urandom(size)
    body_ad = _prekey_body_ad(suite, size)
    k = _pq_keys()
    ck, hk = k["ck"], k["hk"]
    ik_a, ik_b, spk, opk = (os.urandom(32) for _ in range(4))
    ik_b_pub, spk_pub, opk_pub = (_nacl.crypto_scalarmult_base(x) for x in (ik_b, spk, opk))
    ed_public, signed_spk = _ed25519_signed(os.urandom(46))
    _, signed_kem = _ed25519_signed(os.urandom(13 + 1569))
    kem = mlkem.MLKEM1024PrivateKey.generate()
    kem_pk = kem.public_key().public_bytes_raw()
    info = b"E2E_PQXDH_X25519_SHA-256_ML-KEM-1024" + os.urandom(3 * 33 + 1569 + 1568)
    scalarmult = _nacl.crypto_scalarmult

    def target() -> None:
        # initiator: check the bundle, agree, make the first ratchet key, seal message 1
        _nacl.crypto_sign_open(signed_spk, ed_public)
        _nacl.crypto_sign_open(signed_kem, ed_public)
        ek = os.urandom(32)
        ek_pub = _nacl.crypto_scalarmult_base(ek)
        dhs = (
            scalarmult(ik_a, spk_pub)
            + scalarmult(ek, ik_b_pub)
            + scalarmult(ek, spk_pub)
            + scalarmult(ek, opk_pub)
        )
        ss, ct = mlkem.MLKEM1024PublicKey.from_public_bytes(kem_pk).encapsulate()
        HKDF(_SHA256, 96, _SALT, info).derive(_F + dhs + ss)
        dhs_a = os.urandom(32)
        _nacl.crypto_scalarmult_base(dhs_a)
        _kdf(_ROOT, ck + scalarmult(dhs_a, spk_pub))
        hdr, body = _pq_seal(ck, _pq_header_cipher(hk), body_ad, pt)
        # responder: agree, open the first message (one DH ratchet step)
        dhs = (
            scalarmult(spk, ik_a)
            + scalarmult(ik_b, ek_pub)
            + scalarmult(spk, ek_pub)
            + scalarmult(opk, ek_pub)
        )
        ss = kem.decapsulate(ct)
        HKDF(_SHA256, 96, _SALT, info).derive(_F + dhs + ss)
        header = _pq_open_header(_pq_header_cipher(hk), body_ad + body, hdr)
        assert header is not None
        _dh_step(suite, ck, spk, ek_pub)
        _pq_open_body(ck, header, hdr[:12], body_ad, body)

    return _no_setup, target


def _prekey_body_ad(suite: int, size: int) -> bytes:
    """AD | frame prefix of a prekey message (identity, base key, ids, KEM ciphertext)."""
    extra = 1 + 34 + 1 + 34 + 1 + 5 + 1 + 5 + (1 + 5 + 1 + 3 + 1568)
    return _body_ad(suite, size) + os.urandom(extra)


def frame_encode(suite: int, size: int) -> tuple[Setup, Target]:
    """cbor2.dumps of a message frame's map."""
    fields = {0: 1, 1: suite, 2: 1, 9: os.urandom(132)}
    fields[10] = os.urandom(size + 16)
    return _no_setup, lambda: cbor2.dumps(fields)


def frame_decode(suite: int, size: int) -> tuple[Setup, Target]:
    """cbor2.loads of a message frame."""
    fields = {0: 1, 1: suite, 2: 1, 9: os.urandom(132)}
    fields[10] = os.urandom(size + 16)
    raw = cbor2.dumps(fields)
    return _no_setup, lambda: cbor2.loads(raw)
