"""libsignal-compatible sessions: PQXDH/X3DH set-up and the Double Ratchet with SPQR
(SPEC.md §15.3-15.5, §15.7).

Key schedule (libsignal's):

* agreement: HKDF-SHA256(salt = none, IKM = 0xFF*32 || DH1 || DH2 || DH3 [|| DH4] [|| SS],
  info = "WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024" (version 4) or "WhisperText"
  (version 3)) -> root key (32) || chain key (32) [|| SPQR key (32), version 4]; SS is the
  Kyber-1024 secret;
* root step: :func:`e2e.libsignal.kdf.root_step` ("WhisperRatchet"); chain step:
  :func:`e2e.chain_key.chain_step`; message keys: :func:`e2e.libsignal.kdf.expand_message_key`
  ("WhisperMessageKeys", 80 bytes: AES-256 key, HMAC key, CBC IV) salted with the message's
  SPQR key (:mod:`e2e.libsignal.spqr`), if it has one;
* the responder's first sending chain is the agreement's chain key under its signed prekey;
  the initiator receives on that chain and ratchets once before its first message.

A decryption computes everything on the side and changes the state only after the MAC
verified, the body decrypted and SPQR accepted its part: a rejected message leaves the
session exactly as it was. SPQR's own work (chunk decoding, ML-KEM) runs only for a message
whose MAC verified; before the MAC only its key is derived.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import cbor2
from cryptography.hazmat.primitives import hashes, hmac, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from e2e.chain_key import chain_step
from e2e.constants import MAX_PLAINTEXT_BYTES, MAX_STATE_BYTES
from e2e.errors import (
    AuthenticationFailed,
    DecodeError,
    DecryptError,
    DuplicateMessage,
    KeyAgreementError,
    PeerRequiresSpqr,
    PqRatchetError,
    RatchetStepRequired,
    StateError,
    TooManySkipped,
    UnsupportedVersion,
)
from e2e.keys import KeyPair, Rng
from e2e.libsignal import kyber, spqr
from e2e.libsignal.bundle import LibsignalBundle, check_uint32
from e2e.libsignal.kdf import expand_message_key, root_step
from e2e.libsignal.spqr import message as spqr_message
from e2e.libsignal.wire import (
    PREKEY_TYPE,
    VERSION_PQXDH,
    VERSION_X3DH,
    WHISPER_TYPE,
    PreKeySignalMessage,
    SignalMessage,
    encode_prekey_message,
    encode_signal_message,
    parse_ec,
    parse_prekey_message,
    parse_signal_message,
)
from e2e.prekeys import PrekeySource

__all__ = [
    "MAX_JUMP",
    "MAX_ARCHIVED_JUMP",
    "MAX_SKIPPED_KEYS",
    "MAX_RECEIVER_CHAINS",
    "MAX_PREVIOUS_STATES",
    "SPQR_MAX_JUMP",
    "SPQR_MAX_ARCHIVED_JUMP",
    "SPQR_RESTORE_SKIP",
    "PQXDH_INFO",
    "X3DH_INFO",
    "SessionState",
    "SessionRecord",
    "PrekeysUsed",
    "Decrypted",
    "initiate",
    "derive_initial_keys",
]

#: Most messages one received message may skip ahead in a chain of the current state. The
#: counter is only authenticated by the MAC, which needs the skipped chain walked first, so
#: this bounds the work a forged message can cause (libsignal allows 25 000).
MAX_JUMP: Final = 64
#: The same bound for an archived state (tried after the current one failed).
MAX_ARCHIVED_JUMP: Final = 8
#: Most skipped message keys kept per session state (oldest evicted first; libsignal: 2000
#: per chain).
MAX_SKIPPED_KEYS: Final = 2000
#: Receiving chains kept per state (libsignal's value).
MAX_RECEIVER_CHAINS: Final = 5
#: Archived states kept and tried per record (libsignal keeps 40; each costs a trial). One
#: is what simultaneous initiation needs.
MAX_PREVIOUS_STATES: Final = 1
#: Most SPQR keys a received message may skip ahead in its SPQR epoch (SPEC.md §15.7.8):
#: one HKDF each before the MAC can be checked (libsignal allows 25 000).
SPQR_MAX_JUMP: Final = spqr.MAX_JUMP
#: The same bound for an archived state.
SPQR_MAX_ARCHIVED_JUMP: Final = MAX_ARCHIVED_JUMP
#: SPQR sending keys a restored state passes over when its DH ratchet step unblocks it
#: (SPEC.md §15.6): up to this many indices an older copy of it may have used are not used
#: again (a peer refuses a used index); half the peer's jump bound, so it stays acceptable.
SPQR_RESTORE_SKIP: Final = 32
PQXDH_INFO: Final = b"WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024"
X3DH_INFO: Final = b"WhisperText"
_STATE_SCHEMA: Final = 2
_SHA256 = hashes.SHA256()


def derive_initial_keys(version: int, secrets: bytes) -> tuple[bytes, bytes, bytes | None]:
    """(root key, chain key, SPQR key) = HKDF-SHA256(no salt, 0xFF*32 || secrets, version's
    label)[:96] split 32/32/32 for version 4; version 3 has no SPQR key (64 bytes)."""
    if version == VERSION_PQXDH:
        out = HKDF(_SHA256, 96, None, PQXDH_INFO).derive(b"\xff" * 32 + secrets)
        return out[:32], out[32:64], out[64:]
    out = HKDF(_SHA256, 64, None, X3DH_INFO).derive(b"\xff" * 32 + secrets)
    return out[:32], out[32:], None


def _next_chain_key(chain_key: bytes) -> bytes:
    h = hmac.HMAC(chain_key, _SHA256)
    h.update(b"\x02")
    return h.finalize()


def _message_seed(chain_key: bytes) -> bytes:
    h = hmac.HMAC(chain_key, _SHA256)
    h.update(b"\x01")
    return h.finalize()


@dataclass(slots=True, repr=False)
class _Receiver:
    ratchet_key: bytes
    chain_key: bytes
    index: int
    #: counter -> message key seed of skipped messages, in insertion order.
    skipped: dict[int, bytes]


@dataclass(frozen=True, slots=True)
class Pending:
    """What an unanswered initiator repeats in every PreKeySignalMessage."""

    prekey_id: int | None
    signed_prekey_id: int
    base_key: bytes
    kyber_prekey_id: int | None
    kyber_ciphertext: bytes | None


@dataclass(frozen=True, slots=True)
class PrekeysUsed:
    """The responder's prekeys an accepted PreKeySignalMessage used (to be marked used)."""

    prekey_id: int | None
    signed_prekey_id: int
    kyber_prekey_id: int | None
    base_key: bytes


@dataclass(frozen=True, slots=True)
class Decrypted:
    """A decrypted message: plaintext and, for a new session, the prekeys it consumed."""

    plaintext: bytes = field(repr=False)
    prekeys_used: PrekeysUsed | None


@dataclass(slots=True, repr=False, eq=False)
class SessionState:
    """One libsignal session (libsignal's SessionStructure, our own serialization)."""

    version: int
    local_identity: bytes
    remote_identity: bytes
    root_key: bytes
    previous_counter: int
    sender_key: KeyPair
    sender_chain_key: bytes
    sender_index: int
    receivers: list[_Receiver]
    pending: Pending | None
    local_registration_id: int
    remote_registration_id: int
    #: The initiator's base key: identifies the session across repeated prekey messages.
    base_key: bytes
    #: SPQR (version-4 sessions that still speak it); None: no SPQR (version 3, or lowered
    #: to version 0 by negotiation).
    spqr: spqr.Spqr | None = None
    #: Restored from a copy not proven fresh (SPEC.md §6.5): no sending until a received
    #: message makes a DH ratchet step.
    must_ratchet: bool = False

    def __repr__(self) -> str:
        return f"SessionState(version={self.version}, sender_index={self.sender_index})"

    # -- sending -------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, rng: Rng = os.urandom) -> tuple[int, bytes]:
        """Encrypt one message: (libsignal message type 2 or 3, serialized message).

        ``rng`` feeds SPQR (a key pair or an encapsulation, once per SPQR epoch).
        :class:`RatchetStepRequired` while the state is marked restored.
        """
        if type(plaintext) is not bytes or len(plaintext) > MAX_PLAINTEXT_BYTES:
            raise DecodeError("plaintext must be bytes of at most MAX_PLAINTEXT_BYTES")
        if self.must_ratchet:
            raise RatchetStepRequired("restored libsignal session: no sending before a DH step")
        if self.sender_index >= 2**32 - 1:
            raise StateError("sending chain exhausted")
        pq_field, pq_key = b"", None
        new_spqr = self.spqr
        if self.spqr is not None:
            new_spqr, pq_field, pq_key = self.spqr.send(rng)
        next_ck, seed = chain_step(self.sender_chain_key)
        keys = expand_message_key(seed, pq_key)
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        enc = Cipher(algorithms.AES(keys[:32]), modes.CBC(keys[64:80])).encryptor()
        ct = enc.update(padded) + enc.finalize()
        msg = encode_signal_message(
            self.version,
            keys[32:64],
            self.sender_key.public,
            self.sender_index,
            self.previous_counter,
            ct,
            self.local_identity,
            self.remote_identity,
            pq_field,
        )
        self.sender_chain_key = next_ck
        self.sender_index += 1
        self.spqr = new_spqr
        p = self.pending
        if p is None:
            return WHISPER_TYPE, msg
        return PREKEY_TYPE, encode_prekey_message(
            self.version,
            self.local_registration_id,
            p.prekey_id,
            p.signed_prekey_id,
            p.kyber_prekey_id,
            p.kyber_ciphertext,
            p.base_key,
            self.local_identity,
            msg,
        )

    # -- receiving -----------------------------------------------------------------------

    def _receiver(self, ratchet_key: bytes) -> _Receiver | None:
        for chain in self.receivers:
            if chain.ratchet_key == ratchet_key:
                return chain
        return None

    def try_decrypt(
        self,
        msg: SignalMessage,
        rng: Rng = os.urandom,
        max_jump: int = MAX_JUMP,
        spqr_jump: int = SPQR_MAX_JUMP,
    ) -> bytes:
        """Decrypt ``msg`` with this state, changing the state only on success.

        ``max_jump`` bounds how far ahead of its chain ``msg`` may be (before any work),
        ``spqr_jump`` the same in its SPQR chain.
        """
        if msg.version != self.version:
            raise UnsupportedVersion("message version differs from the session's")
        chain = self._receiver(msg.ratchet_key)
        counter = msg.counter
        new_root: bytes | None = None
        if chain is not None:
            ck, index = chain.chain_key, chain.index
            if counter < index:
                seed = chain.skipped.get(counter)
                if seed is None:
                    raise DuplicateMessage("message key already used or never kept")
                return self._finish(msg, seed, chain, None, None, [], ck, counter, spqr_jump)
        else:
            # A new receiving chain: one DH and one root step before the MAC can be checked;
            # the new sending key pair and its DH wait until the message authenticated.
            new_root, ck = root_step(self.root_key, self.sender_key.exchange(msg.ratchet_key))
            index = 0
        if counter - index > max_jump:
            raise TooManySkipped("message is further ahead than MAX_JUMP")
        walked: list[bytes] = []
        while index < counter:
            walked.append(ck)
            ck = _next_chain_key(ck)
            index += 1
        return self._finish(
            msg, _message_seed(ck), chain, new_root, rng, walked, ck, counter, spqr_jump
        )

    def _finish(
        self,
        msg: SignalMessage,
        seed: bytes,
        chain: _Receiver | None,
        new_root: bytes | None,
        rng: Rng | None,
        walked: list[bytes],
        ck: bytes,
        counter: int,
        spqr_jump: int,
    ) -> bytes:
        received = None if self.spqr is None else self.spqr.prepare(msg.pq_ratchet, spqr_jump)
        keys = expand_message_key(seed, None if received is None else received.key)
        if not msg.verify_mac(keys[32:64], self.remote_identity, self.local_identity):
            if received is None and _keyed_spqr(msg.pq_ratchet):
                raise PeerRequiresSpqr(
                    "the message is keyed with SPQR, which this session does not speak"
                )
            raise AuthenticationFailed("SignalMessage MAC does not verify")
        ct = msg.ciphertext
        if not ct or len(ct) % 16:
            raise AuthenticationFailed("SignalMessage ciphertext has an impossible length")
        dec = Cipher(algorithms.AES(keys[:32]), modes.CBC(keys[64:80])).decryptor()
        padded = dec.update(ct) + dec.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            plaintext = unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            raise AuthenticationFailed("SignalMessage has bad padding") from None
        # Authenticated: SPQR's part (may still refuse the message), then commit.
        new_spqr = self.spqr if received is None else received.commit()
        if chain is not None and counter < chain.index and not walked and new_root is None:
            del chain.skipped[counter]
            self.pending = None
            self.spqr = new_spqr
            return plaintext
        if chain is None:
            assert new_root is not None and rng is not None
            new_sender = KeyPair.generate(rng)
            root2, sender_ck = root_step(new_root, new_sender.exchange(msg.ratchet_key))
            chain = _Receiver(msg.ratchet_key, b"", 0, {})
            self.receivers.append(chain)
            if len(self.receivers) > MAX_RECEIVER_CHAINS:
                del self.receivers[0]
            self.root_key = root2
            self.previous_counter = max(self.sender_index - 1, 0)
            self.sender_key, self.sender_chain_key, self.sender_index = new_sender, sender_ck, 0
            if self.must_ratchet:  # a sending chain no older copy of this state has
                self.must_ratchet = False
                if new_spqr is not None:
                    new_spqr = new_spqr.skip_sending_keys(SPQR_RESTORE_SKIP)
        start = counter - len(walked)
        for i, key in enumerate(walked):
            chain.skipped[start + i] = _message_seed(key)
        chain.chain_key = _next_chain_key(ck)
        chain.index = counter + 1
        self._evict()
        self.pending = None
        self.spqr = new_spqr
        return plaintext

    def _evict(self) -> None:
        total = sum(len(c.skipped) for c in self.receivers)
        for chain in self.receivers:  # oldest chains first, oldest keys first
            while total > MAX_SKIPPED_KEYS and chain.skipped:
                del chain.skipped[next(iter(chain.skipped))]
                total -= 1

    # -- serialization -------------------------------------------------------------------

    def to_obj(self) -> list[object]:
        """The state as a CBOR-ready list (private keys included: store it sealed)."""
        p = self.pending
        pend = (
            None
            if p is None
            else [
                p.prekey_id,
                p.signed_prekey_id,
                p.base_key,
                p.kyber_prekey_id,
                p.kyber_ciphertext,
            ]
        )
        return [
            self.version,
            self.local_identity,
            self.remote_identity,
            self.root_key,
            self.previous_counter,
            self.sender_key.private_bytes(),
            self.sender_key.public,
            self.sender_chain_key,
            self.sender_index,
            [
                [c.ratchet_key, c.chain_key, c.index, [[n, s] for n, s in c.skipped.items()]]
                for c in self.receivers
            ],
            pend,
            self.local_registration_id,
            self.remote_registration_id,
            self.base_key,
            None if self.spqr is None else spqr.ratchet.to_obj(self.spqr),
            self.must_ratchet,
        ]

    @classmethod
    def from_obj(cls, obj: object, schema: int = _STATE_SCHEMA) -> SessionState:
        """Inverse of :meth:`to_obj`; :class:`StateError` on anything malformed. A schema-1
        state (written before SPQR) has neither SPQR nor the restored flag."""
        if type(obj) is not list or len(obj) != (14 if schema == 1 else 16):
            raise StateError("malformed libsignal session state")
        f: list[Any] = obj
        ver, pc, sidx, lreg, rreg = f[0], f[4], f[8], f[11], f[12]
        if ver not in (VERSION_X3DH, VERSION_PQXDH):
            raise StateError("bad libsignal session version")
        for n in (pc, sidx, lreg, rreg):
            if type(n) is not int or not 0 <= n < 2**32:
                raise StateError("bad counter in libsignal session state")
        for i in (1, 2, 3, 5, 6, 7, 13):
            if type(f[i]) is not bytes or len(f[i]) != 32:
                raise StateError("bad key in libsignal session state")
        receivers = []
        try:
            for ratchet, ck, idx, skipped in f[9]:
                if not (_is32(ratchet) and _is32(ck) and type(idx) is int):
                    raise StateError("bad receiver chain in libsignal session state")
                seeds = {}
                for n, seed in skipped:
                    if type(n) is not int or not _is32(seed):
                        raise StateError("bad skipped key in libsignal session state")
                    seeds[n] = seed
                receivers.append(_Receiver(ratchet, ck, idx, seeds))
            pend = f[10]
            pending = None if pend is None else _pending(pend)
        except (TypeError, ValueError):
            raise StateError("malformed libsignal session state") from None
        pq, must_ratchet = (None, False) if schema == 1 else (f[14], f[15])
        if type(must_ratchet) is not bool or (pq is not None and ver != VERSION_PQXDH):
            raise StateError("malformed libsignal session state")
        return cls(
            ver,
            f[1],
            f[2],
            f[3],
            pc,
            KeyPair.from_stored(f[5], f[6]),
            f[7],
            sidx,
            receivers,
            pending,
            lreg,
            rreg,
            f[13],
            None if pq is None else spqr.ratchet.from_obj(pq),
            must_ratchet,
        )


def _is32(value: object) -> bool:
    return type(value) is bytes and len(value) == 32


def _pending(obj: Any) -> Pending:
    prekey_id, spk_id, base_key, kyber_id, kyber_ct = obj
    ok = (
        _u32_or_none(prekey_id)
        and _u32_or_none(spk_id)
        and spk_id is not None
        and _is32(base_key)
        and _u32_or_none(kyber_id)
        and (kyber_id is None) == (kyber_ct is None)
        and (kyber_ct is None or type(kyber_ct) is bytes)
    )
    if not ok:
        raise StateError("bad pending prekey message in libsignal session state")
    return Pending(prekey_id, spk_id, base_key, kyber_id, kyber_ct)


def _u32_or_none(value: object) -> bool:
    return value is None or (type(value) is int and 0 <= value < 2**32)


def _keyed_spqr(field: bytes) -> bool:
    """Whether ``field`` is a well-formed SPQR version-1 message that carries a key."""
    try:
        msg = spqr_message.parse(field)
    except DecodeError:
        return False
    return isinstance(msg, spqr_message.Message) and msg.index > 0


class SessionRecord:
    """A peer's current session state and up to MAX_PREVIOUS_STATES archived ones.

    Mirrors libsignal's SessionRecord: a new session (ours or theirs) archives the current
    one; a message that decrypts under an archived state promotes it back. This is what makes
    simultaneous initiation converge.
    """

    __slots__ = ("current", "previous")

    def __init__(
        self, current: SessionState | None = None, previous: list[SessionState] | None = None
    ) -> None:
        self.current = current
        self.previous: list[SessionState] = previous or []

    def __repr__(self) -> str:
        return f"SessionRecord(previous={len(self.previous)})"

    def promote(self, state: SessionState) -> None:
        """Make ``state`` current, archiving the old current state."""
        if self.current is not None:
            self.previous.insert(0, self.current)
            del self.previous[MAX_PREVIOUS_STATES:]
        self.current = state

    def encrypt(self, plaintext: bytes, rng: Rng = os.urandom) -> tuple[int, bytes]:
        """Encrypt with the current state: (message type, serialized message)."""
        if self.current is None:
            raise StateError("no current libsignal session")
        return self.current.encrypt(plaintext, rng)

    def decrypt(
        self,
        message_type: int,
        data: bytes,
        prekeys: PrekeySource | None = None,
        local_identity: KeyPair | None = None,
        local_registration_id: int = 0,
        rng: Rng = os.urandom,
        allowed_versions: tuple[int, ...] = (VERSION_PQXDH,),
        spqr_min_version: int = spqr.V1,
    ) -> Decrypted:
        """Decrypt a libsignal message of ``message_type`` (2 = SignalMessage, 3 = PreKey).

        A PreKeySignalMessage for a new base key needs ``prekeys`` and ``local_identity``; it
        starts a new session that becomes current once its message decrypts, with SPQR at
        minimum version ``spqr_min_version`` (1: SPQR required, as libsignal 0.92 and later;
        0: a peer without SPQR, libsignal 0.90 and older, is accepted and SPQR is then off for
        the session). The caller marks ``prekeys_used`` used. Any failure raises an
        :class:`~e2e.errors.E2EError` and leaves the record unchanged.
        """
        if message_type == PREKEY_TYPE:
            pkm = parse_prekey_message(data)
            if pkm.version not in allowed_versions:
                raise UnsupportedVersion(f"libsignal version {pkm.version} is not allowed here")
            for state in self._states():
                if state.version == pkm.version and state.base_key == pkm.base_key:
                    plaintext = state.try_decrypt(pkm.message, rng)
                    self._make_current(state)
                    return Decrypted(plaintext, None)
            if prekeys is None or local_identity is None:
                raise KeyAgreementError("a new session needs the local prekeys and identity")
            new = _respond(local_identity, local_registration_id, prekeys, pkm, spqr_min_version)
            plaintext = new.try_decrypt(pkm.message, rng)
            self.promote(new)
            used = PrekeysUsed(
                pkm.prekey_id, pkm.signed_prekey_id, pkm.kyber_prekey_id, pkm.base_key
            )
            return Decrypted(plaintext, used)
        if message_type != WHISPER_TYPE:
            raise DecodeError("unknown libsignal message type")
        msg = parse_signal_message(data)
        failure: DecryptError | None = None
        for state in self._states():
            try:
                if state is self.current:
                    plaintext = state.try_decrypt(msg, rng, MAX_JUMP, SPQR_MAX_JUMP)
                else:
                    plaintext = state.try_decrypt(
                        msg, rng, MAX_ARCHIVED_JUMP, SPQR_MAX_ARCHIVED_JUMP
                    )
            except DuplicateMessage:
                raise
            except (DecryptError, UnsupportedVersion) as e:
                # The first failure, unless a later state's is SPQR's (more telling: a peer
                # without SPQR is only reported for an authentic message).
                if isinstance(e, DecryptError) and (
                    failure is None
                    or (isinstance(e, PqRatchetError) and not isinstance(failure, PqRatchetError))
                ):
                    failure = e
                continue
            self._make_current(state)
            return Decrypted(plaintext, None)
        raise failure or AuthenticationFailed("no session state decrypts this message")

    def _states(self) -> list[SessionState]:
        return ([self.current] if self.current is not None else []) + list(self.previous)

    def _make_current(self, state: SessionState) -> None:
        if state is not self.current:
            self.previous = [s for s in self.previous if s is not state]
            self.promote(state)

    def to_bytes(self) -> bytes:
        """Canonical CBOR: [schema, current or null, [previous...]]."""
        return cbor2.dumps(
            [
                _STATE_SCHEMA,
                None if self.current is None else self.current.to_obj(),
                [s.to_obj() for s in self.previous],
            ],
            canonical=True,
        )

    @classmethod
    def from_bytes(cls, data: bytes, fresh: bool = True) -> SessionRecord:
        """Inverse of :meth:`to_bytes`; :class:`StateError` on anything malformed.

        A loader that cannot prove ``data`` is the newest record written for this peer (a
        backup, a restored database) MUST pass ``fresh=False`` (SPEC.md §6.5, §15.6): every
        state is then marked, and refuses to send until a received message has made a DH
        ratchet step in it, so no sending chain an older copy used is used again.
        """
        if type(data) is not bytes or len(data) > MAX_STATE_BYTES:
            raise StateError("libsignal session record too large")
        try:
            schema, current, previous = cbor2.loads(data)
        except Exception:  # noqa: BLE001 - cbor2 raises many types on garbage
            raise StateError("malformed libsignal session record") from None
        if schema not in (1, _STATE_SCHEMA) or type(previous) is not list:
            raise StateError("unknown libsignal session record schema")
        if len(previous) > MAX_PREVIOUS_STATES:
            raise StateError("too many archived libsignal states")
        record = cls(
            None if current is None else SessionState.from_obj(current, schema),
            [SessionState.from_obj(s, schema) for s in previous],
        )
        if not fresh:
            record.require_ratchet_step()
        return record

    def require_ratchet_step(self) -> None:
        """Mark every state restored (SPEC.md §6.5): :meth:`encrypt` raises
        :class:`RatchetStepRequired` until a decryption makes a DH ratchet step."""
        for state in self._states():
            state.must_ratchet = True


def _dh(pair: KeyPair, public: bytes) -> bytes:
    return pair.exchange(public)


def initiate(
    identity: KeyPair,
    registration_id: int,
    bundle: LibsignalBundle,
    *,
    version: int = VERSION_PQXDH,
    rng: Rng = os.urandom,
    encapsulate: Callable[[bytes], tuple[bytes, bytes]] = kyber.encapsulate,
    spqr_min_version: int = spqr.V1,
) -> SessionState:
    """Alice's side: a new session from ``bundle`` (PQXDH by default, X3DH with version=3).

    Verifies every field of the bundle (DecodeError, InvalidKey, InvalidSignature) and the
    local ``registration_id`` before anything else; version 4 needs a Kyber prekey, and a
    Kyber prekey in a version-3 set-up is refused (no silent downgrade either way). A
    version-4 session speaks SPQR at minimum version ``spqr_min_version`` (see
    :meth:`SessionRecord.decrypt`).
    """
    if version not in (VERSION_X3DH, VERSION_PQXDH):
        raise UnsupportedVersion("libsignal session version must be 3 or 4")
    check_uint32(registration_id, "local registration id")
    _check_spqr_min_version(spqr_min_version)
    bundle.verify()
    if (bundle.kyber_prekey is not None) != (version == VERSION_PQXDH):
        raise KeyAgreementError("bundle's Kyber prekey does not match the requested version")
    their_identity = parse_ec(bundle.identity_key)
    spk = parse_ec(bundle.signed_prekey)
    base = KeyPair.generate(rng)
    secrets = _dh(identity, spk) + _dh(base, their_identity) + _dh(base, spk)
    if bundle.prekey is not None:
        secrets += _dh(base, parse_ec(bundle.prekey))
    kyber_ct: bytes | None = None
    if version == VERSION_PQXDH:
        assert bundle.kyber_prekey is not None
        ss, kyber_ct = encapsulate(bundle.kyber_prekey)
        secrets += ss
    root, chain, spqr_key = derive_initial_keys(version, secrets)
    sender = KeyPair.generate(rng)
    root2, sender_ck = root_step(root, _dh(sender, spk))
    return SessionState(
        version=version,
        local_identity=identity.public,
        remote_identity=their_identity,
        root_key=root2,
        previous_counter=0,
        sender_key=sender,
        sender_chain_key=sender_ck,
        sender_index=0,
        receivers=[_Receiver(spk, chain, 0, {})],
        pending=Pending(
            bundle.prekey_id, bundle.signed_prekey_id, base.public, bundle.kyber_prekey_id, kyber_ct
        ),
        local_registration_id=registration_id,
        remote_registration_id=bundle.registration_id,
        base_key=base.public,
        spqr=None if spqr_key is None else spqr.Spqr.start(spqr_key, True, spqr_min_version),
    )


def _check_spqr_min_version(value: object) -> None:
    if value not in (spqr.V0, spqr.V1) or type(value) is not int:
        raise UnsupportedVersion("SPQR minimum version must be 0 or 1")


def _respond(
    identity: KeyPair,
    registration_id: int,
    prekeys: PrekeySource,
    pkm: PreKeySignalMessage,
    spqr_min_version: int,
) -> SessionState:
    """Bob's side for a PreKeySignalMessage; looks prekeys up without consuming them."""
    check_uint32(registration_id, "local registration id")
    _check_spqr_min_version(spqr_min_version)
    spk = prekeys.signed_prekey(pkm.signed_prekey_id)
    opk = prekeys.one_time_prekey(pkm.prekey_id) if pkm.prekey_id is not None else None
    secrets = _dh(spk, pkm.identity_key) + _dh(identity, pkm.base_key) + _dh(spk, pkm.base_key)
    if opk is not None:
        secrets += _dh(opk, pkm.base_key)
    if pkm.version == VERSION_PQXDH:
        assert pkm.kyber_prekey_id is not None and pkm.kyber_ciphertext is not None
        kem = prekeys.kem_prekey(pkm.kyber_prekey_id, pkm.base_key)
        secrets += kyber.decapsulate(kem, pkm.kyber_ciphertext)
    root, chain, spqr_key = derive_initial_keys(pkm.version, secrets)
    return SessionState(
        version=pkm.version,
        local_identity=identity.public,
        remote_identity=pkm.identity_key,
        root_key=root,
        previous_counter=0,
        sender_key=spk,
        sender_chain_key=chain,
        sender_index=0,
        receivers=[],
        pending=None,
        local_registration_id=registration_id,
        remote_registration_id=pkm.registration_id,
        base_key=pkm.base_key,
        spqr=None if spqr_key is None else spqr.Spqr.start(spqr_key, False, spqr_min_version),
    )
