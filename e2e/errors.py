"""The one error hierarchy of e2e.

Every public decode, decrypt, agreement and store path raises only subclasses of
:class:`E2EError`, whatever its input. Messages never contain key material.
"""

from __future__ import annotations

__all__ = [
    "E2EError",
    "DecodeError",
    "LimitExceeded",
    "UnsupportedVersion",
    "UnknownSuite",
    "InvalidKey",
    "InvalidSignature",
    "KeyAgreementError",
    "NonContributory",
    "UnknownPrekey",
    "PrekeyReused",
    "SuiteMismatch",
    "DecryptError",
    "AuthenticationFailed",
    "DuplicateMessage",
    "TooManySkipped",
    "PqRatchetError",
    "PeerLacksSpqr",
    "PeerRequiresSpqr",
    "StateError",
    "RatchetStepRequired",
    "RandomSourceRefused",
    "StoreError",
    "WeakKdfParameters",
    "RollbackDetected",
    "PolicyError",
    "FingerprintVersionMismatch",
    "KeyTransparencyError",
    "InvalidProof",
    "LogForked",
    "LogRolledBack",
    "StaleProof",
    "KeyMismatch",
    "CertificateError",
    "KeyChangePending",
]


class E2EError(Exception):
    """Base class of every error e2e raises on bad input or misuse."""


class DecodeError(E2EError):
    """Bytes that are not a well-formed, canonical object of the expected shape."""


class LimitExceeded(DecodeError):
    """Input larger, deeper or further ahead than a limit in :mod:`e2e.constants` allows."""


class UnsupportedVersion(DecodeError):
    """A frame, bundle or state whose version this implementation does not speak."""


class UnknownSuite(DecodeError):
    """A ciphersuite id that is not registered in :mod:`e2e.suite`."""


class InvalidKey(E2EError):
    """A key of the wrong type or length, or a public key that is not acceptable."""


class InvalidSignature(E2EError):
    """An XEdDSA signature that does not verify."""


class KeyAgreementError(E2EError):
    """X3DH / PQXDH could not complete."""


class NonContributory(KeyAgreementError):
    """A Diffie-Hellman output was all zeros: a low-order (non-contributory) point."""


class UnknownPrekey(KeyAgreementError):
    """An initial message names a prekey the responder does not hold."""


class PrekeyReused(KeyAgreementError):
    """A one-time prekey used twice, or a last-resort KEM prekey reused with the same base key."""


class SuiteMismatch(KeyAgreementError):
    """The suite of a frame or bundle differs from the one the session or policy requires."""


class DecryptError(E2EError):
    """A message could not be decrypted; the session state is unchanged."""


class AuthenticationFailed(DecryptError):
    """A header or body failed authentication (tampered, wrong key, wrong AD)."""


class DuplicateMessage(DecryptError):
    """A message that was already decrypted (a replay)."""


class TooManySkipped(DecryptError):
    """A message further ahead than its frame's skip budget (MAX_SKIP), or from too many
    receiving chains."""


class PqRatchetError(DecryptError):
    """libsignal's post-quantum ratchet (SPQR, SPEC.md §15.7) refused a message: its SPQR
    data is malformed, out of range, or fails SPQR's own checks. The session is unchanged."""


class PeerLacksSpqr(PqRatchetError):
    """An authentic message without SPQR data, in a session that requires SPQR (minimum
    version V1, the default): the peer is libsignal 0.90 or older, or has no SPQR. Accepting
    such peers is opt-in (``spqr_min_version=0`` when the session is made)."""


class PeerRequiresSpqr(PqRatchetError):
    """A message that carries an SPQR key and fails the MAC of a session that has no SPQR
    (it negotiated SPQR away with an earlier peer, or is a version-3 session): the peer
    requires SPQR, as libsignal 0.92 and later do; start a new session (SPQR is on by
    default). Without SPQR the message cannot be authenticated, so a forgery carrying such
    a field is reported the same way; the session is unchanged either way."""


class StateError(E2EError):
    """Serialized session state that is malformed or of an unknown schema version."""


class RatchetStepRequired(StateError):
    """The session was restored from a state not proven fresh (SPEC.md §6.5): it may not
    send until it has received a message that made a DH ratchet step."""


class RandomSourceRefused(E2EError):
    """A random source other than ``os.urandom`` was passed outside a test (e2e._testing)."""


class StoreError(E2EError):
    """A store record that is missing, corrupted, tampered or under a wrong storage key.

    ``record`` names the record (table and id), never its contents.
    """

    def __init__(self, message: str, record: str = "") -> None:
        super().__init__(f"{message} ({record})" if record else message)
        self.record = record


class WeakKdfParameters(StoreError):
    """A store created from a passphrase with scrypt costs below the floor
    (:data:`e2e.store.atrest.SCRYPT_MIN_N`, r >= 8)."""


class RollbackDetected(StoreError):
    """Stored state older than the store's sealed epoch says it is: a record put back from an
    older copy, a record deleted behind the store's back, or a whole database restored from an
    earlier state (SPEC.md §9.7). Nothing is written; the application decides how to recover."""


class PolicyError(E2EError):
    """A send the relay's metadata policy refuses (window closed, blocked, no contact...)."""


class FingerprintVersionMismatch(UnsupportedVersion):
    """A scanned safety-number code of another fingerprint version than ours."""


class KeyTransparencyError(E2EError):
    """The key directory did not prove what it claimed: an account key or device list that
    is not in the log, a log that forked or went back, a proof against an old head.

    Raised before anything is encrypted to the key in question."""


class InvalidProof(KeyTransparencyError):
    """An inclusion or consistency proof, or a signed tree head, that does not verify."""


class LogForked(KeyTransparencyError):
    """Two signed tree heads that no append-only log can both have produced (a split view)."""


class LogRolledBack(KeyTransparencyError):
    """A signed tree head smaller or older than one already seen."""


class StaleProof(KeyTransparencyError):
    """A proof against a tree head older than the newest this client has seen, or an entry
    that a later entry of the same account supersedes."""


class KeyMismatch(KeyTransparencyError):
    """The log's entry for an account differs from what was served or from what the account
    itself published (a substituted key or a rogue device)."""


class CertificateError(E2EError):
    """A platform certificate that does not verify under the pinned platform key, or that
    names another account or key."""


class KeyChangePending(E2EError):
    """A send to an account whose key changed and whose change the application has not
    accepted yet."""
