"""Sessions: the sync, I/O-free public API over PQXDH and the Double Ratchet (SPEC.md §6).

    alice = Session.initiate(alice_identity, bob_bundle)
    frame = alice.encrypt(b"hi")                      # a prekey message until Bob answers
    bob, first = Session.respond(bob_identity, bob_prekeys, frame)
    reply = bob.encrypt(b"hello"); alice.decrypt(reply)

Every method either succeeds or raises an :class:`~e2e.errors.E2EError` subclass leaving the
session (and, for ``respond``, the prekey source) exactly as it was. ``to_bytes`` /
``from_bytes`` serialize the whole state; see SPEC.md §6.3 for the compatibility rule.

Restored state (SPEC.md §6.5): a loader that cannot prove the state it read is the newest one
(a store that detected a rollback, a backup restore) passes ``fresh=False`` to ``from_bytes``
or calls :meth:`Session.require_ratchet_step`; the session then refuses to ``encrypt``
(:class:`~e2e.errors.RatchetStepRequired`) until it has decrypted a message that made a DH
ratchet step, which gives it a sending chain no older copy of the state has.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any, Final

from e2e.constants import MAX_STATE_BYTES
from e2e.errors import DecodeError, E2EError, StateError, UnsupportedVersion
from e2e.frame import Field, PrekeyFields, decode_map, decode_message, encode_map
from e2e.keys import KeyPair, Rng, kem_encapsulate
from e2e.prekeys import PrekeyBundle, PrekeySource
from e2e.ratchet import Ratchet
from e2e.suite import DEFAULT, Suite, get_suite
from e2e.x3dh import KemEncapsulate, initiate, respond

__all__ = ["Session", "STATE_SCHEMA"]

#: Schema version of serialized state. Readers accept every version up to their own.
#: Schema 2 added key 25 (must ratchet before sending); schema 1 is read as "fresh".
STATE_SCHEMA: Final = 2


class _S:
    SCHEMA = 0
    SUITE = 1
    AD = 2
    DHS_SECRET = 3
    DHS_PUBLIC = 4
    DHR = 5
    RK = 6
    CKS = 7
    CKR = 8
    NS = 9
    NR = 10
    PN = 11
    HKS = 12
    HKR = 13
    NHKS = 14
    NHKR = 15
    SKIPPED = 16
    OLD_CHAINS = 17
    LOCAL_IDENTITY = 18
    REMOTE_IDENTITY = 19
    BASE_KEY = 20
    PENDING_SPK_ID = 21
    PENDING_OPK_ID = 22
    PENDING_KEM_ID = 23
    PENDING_KEM_CT = 24
    MUST_RATCHET = 25


def _opt(kind: type, size: int | None = None) -> Field:
    return Field(kind, size, required=False)


_STATE_SCHEMA: Final = {
    _S.SCHEMA: Field(int),
    _S.SUITE: Field(int),
    _S.AD: Field(bytes, 66),
    _S.DHS_SECRET: Field(bytes, 32),
    _S.DHS_PUBLIC: Field(bytes, 32),
    _S.DHR: _opt(bytes, 32),
    _S.RK: Field(bytes, 32),
    _S.CKS: _opt(bytes, 32),
    _S.CKR: _opt(bytes, 32),
    _S.NS: Field(int),
    _S.NR: Field(int),
    _S.PN: Field(int),
    _S.HKS: _opt(bytes, 32),
    _S.HKR: _opt(bytes, 32),
    _S.NHKS: _opt(bytes, 32),
    _S.NHKR: _opt(bytes, 32),
    _S.SKIPPED: _opt(bytes),
    _S.OLD_CHAINS: _opt(bytes),
    _S.LOCAL_IDENTITY: Field(bytes, 32),
    _S.REMOTE_IDENTITY: Field(bytes, 32),
    _S.BASE_KEY: Field(bytes, 32),
    _S.PENDING_SPK_ID: _opt(int),
    _S.PENDING_OPK_ID: _opt(int),
    _S.PENDING_KEM_ID: _opt(int),
    _S.PENDING_KEM_CT: _opt(bytes, 1568),
    _S.MUST_RATCHET: Field(int, required=False, max_int=1),
}
#: Schema 1: the same keys but 25.
_STATE_SCHEMA_1: Final = {k: v for k, v in _STATE_SCHEMA.items() if k != _S.MUST_RATCHET}


class Session:
    """One end of a pairwise session. The single owner of its ratchet state."""

    __slots__ = ("ratchet", "local_identity", "remote_identity", "base_key", "pending")

    def __init__(
        self,
        ratchet: Ratchet,
        local_identity: bytes,
        remote_identity: bytes,
        base_key: bytes,
        pending: PrekeyFields | None,
    ) -> None:
        self.ratchet = ratchet
        #: Public identity keys of this end and of the peer.
        self.local_identity = local_identity
        self.remote_identity = remote_identity
        #: The initiator's PQXDH base key: names the session's key agreement.
        self.base_key = base_key
        #: Initiator only: PQXDH parameters sent with every message until the peer answers.
        self.pending = pending

    def __repr__(self) -> str:
        return f"Session(suite={self.suite.id}, remote={self.remote_identity.hex()[:16]}...)"

    @property
    def suite(self) -> Suite:
        return self.ratchet.suite

    @property
    def needs_ratchet_step(self) -> bool:
        """True while this restored session may not send (SPEC.md §6.5)."""
        return self.ratchet.must_ratchet

    def require_ratchet_step(self) -> None:
        """Refuse to send until a received message has made a DH ratchet step.

        For a loader that learns only after loading that the state it read may be older than
        the newest one written (SPEC.md §6.5); the flag is saved with the state.
        """
        self.ratchet.must_ratchet = True

    # -- set-up ------------------------------------------------------------------------

    @classmethod
    def initiate(
        cls,
        identity: KeyPair,
        bundle: PrekeyBundle | bytes,
        *,
        allowed_suites: Collection[Suite] = (DEFAULT,),
        rng: Rng = os.urandom,
        encapsulate: KemEncapsulate = kem_encapsulate,
    ) -> Session:
        """Start a session from the peer's prekey bundle (decoded or as received).

        ``allowed_suites`` is the downgrade guard: by default only the PQ suite is accepted.
        """
        if not isinstance(bundle, PrekeyBundle):
            bundle = PrekeyBundle.from_bytes(bundle)
        agreement, ek = initiate(
            identity, bundle, allowed_suites=allowed_suites, rng=rng, encapsulate=encapsulate
        )
        ratchet = Ratchet.initiator(
            agreement.suite,
            agreement.ad,
            agreement.root_key,
            bundle.spk,
            agreement.header_key_a,
            agreement.header_key_b,
            rng,
        )
        return cls(ratchet, identity.public, agreement.remote_identity, ek.public, agreement.prekey)

    @classmethod
    def respond(
        cls,
        identity: KeyPair,
        prekeys: PrekeySource,
        frame: bytes,
        *,
        allowed_suites: Collection[Suite] = (DEFAULT,),
        rng: Rng = os.urandom,
    ) -> tuple[Session, bytes]:
        """Accept an initial (prekey) message: returns the new session and its plaintext.

        The prekeys it used are marked used only after the message has decrypted.
        """
        parsed = decode_message(frame)
        fields = parsed.prekey
        if fields is None:
            raise DecodeError("not a prekey message")
        agreement, spk = respond(
            identity, prekeys, parsed.suite, fields, allowed_suites=allowed_suites
        )
        ratchet = Ratchet.responder(
            agreement.suite,
            agreement.ad,
            agreement.root_key,
            spk,
            agreement.header_key_a,
            agreement.header_key_b,
            rng,
        )
        plaintext = ratchet.decrypt(parsed)
        prekeys.mark_used(fields.opk_id, fields.kem_id, fields.base_key)
        session = cls(ratchet, identity.public, fields.identity_key, fields.base_key, None)
        return session, plaintext

    # -- messages ----------------------------------------------------------------------

    def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` into a frame. Persist the session before sending it."""
        return self.ratchet.encrypt(plaintext, self.pending)

    def decrypt(self, frame: bytes) -> bytes:
        """Decrypt a frame of this session; the state changes only if it authenticates."""
        parsed = decode_message(frame)
        if parsed.prekey is not None and (
            parsed.prekey.base_key != self.base_key
            or parsed.prekey.identity_key != self.remote_identity
        ):
            raise StateError("prekey message of another session: use Session.respond")
        plaintext = self.ratchet.decrypt(parsed)
        if self.pending is not None:
            self.pending = None  # the peer has answered: it holds the session
        return plaintext

    # -- serialization -------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialize the whole state (secrets included: encrypt it at rest, see e2e.store)."""
        r = self.ratchet
        f: dict[int, Any] = {
            _S.SCHEMA: STATE_SCHEMA,
            _S.SUITE: r.suite.id,
            _S.AD: r.ad,
            _S.DHS_SECRET: r.dhs.private_bytes(),
            _S.DHS_PUBLIC: r.dhs.public,
            _S.DHR: r.dhr,
            _S.RK: r.rk,
            _S.CKS: r.cks,
            _S.CKR: r.ckr,
            _S.NS: r.ns,
            _S.NR: r.nr,
            _S.PN: r.pn,
            _S.HKS: r.hks,
            _S.HKR: r.hkr,
            _S.NHKS: r.nhks,
            _S.NHKR: r.nhkr,
            _S.SKIPPED: r.skipped_bytes() or None,
            _S.OLD_CHAINS: b"".join(dh + (hk or b"") for dh, hk in r.old_chains) or None,
            _S.LOCAL_IDENTITY: self.local_identity,
            _S.REMOTE_IDENTITY: self.remote_identity,
            _S.BASE_KEY: self.base_key,
        }
        p = self.pending
        if p is not None:
            f[_S.PENDING_SPK_ID] = p.spk_id
            f[_S.PENDING_OPK_ID] = p.opk_id
            f[_S.PENDING_KEM_ID] = p.kem_id
            f[_S.PENDING_KEM_CT] = p.kem_ciphertext
        f[_S.MUST_RATCHET] = 1 if r.must_ratchet else None  # after the pending fields: in order
        return encode_map({k: v for k, v in f.items() if v is not None})

    @classmethod
    def from_bytes(cls, data: bytes, *, fresh: bool = True, rng: Rng = os.urandom) -> Session:
        """Load state written by :meth:`to_bytes`; :class:`StateError` if it is not valid.

        ``fresh=False`` says the caller cannot prove this is the newest state written for the
        session (SPEC.md §6.5): the session will not send until it has made a DH ratchet
        step on receiving. A state saved while that was pending stays so whatever ``fresh``.
        """
        try:
            try:
                obj = decode_map(
                    data, _STATE_SCHEMA, "session state", MAX_STATE_BYTES, STATE_SCHEMA
                )
            except UnsupportedVersion:  # schema 1, migrated: no key 25 (fresh)
                obj = decode_map(data, _STATE_SCHEMA_1, "session state", MAX_STATE_BYTES, 1)
            suite = get_suite(obj[_S.SUITE])
        except E2EError as exc:
            raise StateError(f"invalid session state: {exc}") from None
        if _S.NHKS not in obj or _S.NHKR not in obj:
            raise StateError("invalid session state: next header keys are missing")
        if (_S.CKS in obj and _S.HKS not in obj) or (_S.CKR in obj and _S.HKR not in obj):
            # Without its header key a chain could not seal (or open) its headers.
            raise StateError("invalid session state: a chain lacks its header key")
        if _S.PENDING_SPK_ID in obj:  # a pending prekey message always carries its KEM fields
            bad_pending = any(k not in obj for k in (_S.PENDING_KEM_ID, _S.PENDING_KEM_CT))
        else:
            bad_pending = any(
                k in obj for k in (_S.PENDING_OPK_ID, _S.PENDING_KEM_ID, _S.PENDING_KEM_CT)
            )
        if (_S.CKR in obj and _S.DHR not in obj) or bad_pending or obj.get(_S.MUST_RATCHET) == 0:
            raise StateError("invalid session state: inconsistent fields")
        rec = 64
        chains_raw: bytes = obj.get(_S.OLD_CHAINS, b"")
        if len(chains_raw) % rec:
            raise StateError("invalid session state: old chains are malformed")
        old_chains: list[tuple[bytes, bytes | None]] = [
            (chains_raw[i : i + 32], chains_raw[i + 32 : i + 64])
            for i in range(0, len(chains_raw), rec)
        ]
        ratchet = Ratchet(
            suite,
            obj[_S.AD],
            KeyPair.from_stored(obj[_S.DHS_SECRET], obj[_S.DHS_PUBLIC]),
            obj.get(_S.DHR),
            obj[_S.RK],
            cks=obj.get(_S.CKS),
            ckr=obj.get(_S.CKR),
            ns=obj[_S.NS],
            nr=obj[_S.NR],
            pn=obj[_S.PN],
            hks=obj.get(_S.HKS),
            hkr=obj.get(_S.HKR),
            nhks=obj.get(_S.NHKS),
            nhkr=obj.get(_S.NHKR),
            skipped=Ratchet.skipped_from_bytes(obj.get(_S.SKIPPED, b"")),
            old_chains=old_chains,
            rng=rng,
            must_ratchet=not fresh or _S.MUST_RATCHET in obj,
        )
        pending = None
        if _S.PENDING_SPK_ID in obj:
            pending = PrekeyFields(
                obj[_S.LOCAL_IDENTITY],
                obj[_S.BASE_KEY],
                obj[_S.PENDING_SPK_ID],
                obj.get(_S.PENDING_OPK_ID),
                obj.get(_S.PENDING_KEM_ID),
                obj.get(_S.PENDING_KEM_CT),
            )
        return cls(
            ratchet, obj[_S.LOCAL_IDENTITY], obj[_S.REMOTE_IDENTITY], obj[_S.BASE_KEY], pending
        )
