"""The one error hierarchy of e2e (SPEC.md §8).

Every public decode, decrypt, agreement, store, relay and client path raises only subclasses
of :class:`E2EError`, whatever its input. Messages never contain key material.

Each class says whether a retry can succeed (:attr:`E2EError.retryable`): True only where
nothing was wrong with the request itself and sending the same request again later may be
accepted (the relay unreachable, busy, or rate-limiting); False where the input, the state or
a policy must change first (a refusal, a forgery, a stale device list: the caller must refresh
and build a new request).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "E2EError",
    "DecodeError",
    "LimitExceeded",
    "UnsupportedVersion",
    "UnknownSuite",
    "EnvelopeMismatch",
    "InvalidName",
    "InvalidKey",
    "InvalidSignature",
    "KeyAgreementError",
    "NonContributory",
    "UnknownPrekey",
    "PrekeyReused",
    "SuiteMismatch",
    "DecryptError",
    "AuthenticationFailed",
    "FrankingMismatch",
    "UntrustedDevice",
    "DuplicateMessage",
    "TooManySkipped",
    "AttachmentError",
    "AttachmentKeyMismatch",
    "ChunkTampered",
    "AttachmentTruncated",
    "AttachmentExtended",
    "DigestMismatch",
    "TransferError",
    "TransferInterrupted",
    "OffsetConflict",
    "BlobError",
    "NoSuchBlob",
    "BlobTooLarge",
    "QuotaExceeded",
    "PqRatchetError",
    "PeerLacksSpqr",
    "PeerRequiresSpqr",
    "StateError",
    "RatchetStepRequired",
    "RandomSourceRefused",
    "StoreError",
    "WeakKdfParameters",
    "RollbackDetected",
    "StoreUnavailable",
    "PolicyError",
    "WindowClosed",
    "NoPriorContact",
    "Blocked",
    "Limited",
    "NotOptedIn",
    "NotAllowed",
    "UnknownAccount",
    "StaleDeviceList",
    "DuplicateSubmission",
    "ReportRejected",
    "MisdeclaredClass",
    "UnapprovedTemplate",
    "TierLimitReached",
    "EntryRefused",
    "UntrustedIdentity",
    "Conflict",
    "RelayError",
    "Unauthenticated",
    "Forbidden",
    "Revoked",
    "RateLimited",
    "MailboxFull",
    "NoSuchEndpoint",
    "Overloaded",
    "WireFailure",
    "FingerprintVersionMismatch",
    "KeyTransparencyError",
    "InvalidProof",
    "LogForked",
    "LogRolledBack",
    "StaleProof",
    "KeyMismatch",
    "CertificateError",
    "KeyChangePending",
    "ConfigError",
]


class E2EError(Exception):
    """Base class of every error e2e raises on bad input or misuse."""

    #: True if the same request, sent again unchanged, can succeed (nothing was wrong with
    #: it: the relay was unreachable, busy or rate-limiting); False if something must change
    #: first. Class-level: every instance of a class answers the same.
    retryable: ClassVar[bool] = False


# -- bytes that are not what they claim (SPEC §5.3) ------------------------------------------


class DecodeError(E2EError):
    """Bytes that are not a well-formed, canonical object of the expected shape."""


class LimitExceeded(DecodeError):
    """Input larger, deeper or further ahead than a limit in :mod:`e2e.constants` allows."""


class UnsupportedVersion(DecodeError):
    """A frame, bundle or state whose version this implementation does not speak."""


class UnknownSuite(DecodeError):
    """A ciphersuite id that is not registered in :mod:`e2e.suite`."""


class EnvelopeMismatch(DecodeError):
    """(A receiving device) the envelope's routing metadata differs from what the sender put
    inside the E2E frame, or the delivery is addressed to another device (SPEC §10.2)."""


# -- keys, signatures, agreement (SPEC §2, §3) --------------------------------------------------


class InvalidName(DecodeError):
    """A name people read that is not in its one visible form (SPEC §10.1,
    :mod:`e2e.platform.names`): not NFC or NFKC-stable, holding an invisible or control
    character, or mixing scripts. On the wire it is ``malformed``."""


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


# -- decryption (SPEC §4, §10.2) --------------------------------------------------------------


class DecryptError(E2EError):
    """A message could not be decrypted; the session state is unchanged."""


class AuthenticationFailed(DecryptError):
    """A header or body failed authentication (tampered, wrong key, wrong AD)."""


class FrankingMismatch(AuthenticationFailed):
    """(A receiving device) the envelope's franking commitment does not match the decrypted
    message (SPEC §10.4)."""


class UntrustedDevice(AuthenticationFailed):
    """A device whose identity key is not certified by its account's pinned identity key
    (SPEC §10.1), or an account key other than the pinned one."""


class DuplicateMessage(DecryptError):
    """A message that was already decrypted (a replay)."""


class TooManySkipped(DecryptError):
    """A message further ahead than its frame's skip budget (MAX_SKIP), or from too many
    receiving chains."""


class AttachmentError(AuthenticationFailed):
    """An attachment's ciphertext that does not verify against its pointer (SPEC.md §16).

    Raised at the first bad byte or chunk: every plaintext byte returned before it was
    verified, and nothing of the bad chunk or after it is ever returned. ``chunk`` is the
    index of the chunk at fault (None for the header or the whole blob).
    """

    def __init__(self, message: str, chunk: int | None = None) -> None:
        super().__init__(message if chunk is None else f"{message} (chunk {chunk})")
        self.chunk = chunk


class AttachmentKeyMismatch(AttachmentError):
    """The blob's key commitment does not match the pointer's key: a wrong key, or the blob
    of another attachment (a swapped blob). Nothing was released."""


class ChunkTampered(AttachmentError):
    """A chunk failed authentication: changed, moved (reordered), repeated (duplicated),
    taken from another blob, or marked final where it is not."""


class AttachmentTruncated(AttachmentError):
    """The ciphertext ended before its final chunk."""


class AttachmentExtended(AttachmentError):
    """Bytes after the final chunk (an extended blob)."""


class DigestMismatch(AttachmentError):
    """The whole ciphertext's digest differs from the pointer's. Every chunk authenticated
    under the key, so only a holder of the key made it (a sender who uploaded another blob);
    the final chunk's plaintext is withheld."""


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


# -- state and storage (SPEC §6, §9) ----------------------------------------------------------


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


class StoreUnavailable(StoreError):
    """The relay's database did not confirm a transaction (busy, conflicting, connection
    lost, commit failed): as far as the relay knows nothing of the request was applied, but a
    connection lost after the server committed leaves it applied, so a retry must repeat the
    same body (every request is idempotent for a repeated body) and then sees the first
    outcome (HTTP 503, SPEC §10.8)."""

    retryable: ClassVar[bool] = True


# -- the relay's policy refusals (SPEC §10.3, §10.4, §10.7) ------------------------------------


class PolicyError(E2EError):
    """A request the relay's metadata policy refuses (window closed, blocked, no contact...);
    the relay stored nothing for it."""


class WindowClosed(PolicyError):
    """A free-form (service) business message outside the customer's 24 h window."""


class NoPriorContact(PolicyError):
    """A business message to a customer who never wrote to this business."""


class Blocked(PolicyError):
    """The customer blocked this business."""


class Limited(PolicyError):
    """The customer limited this business to important messages (no marketing, few templates)."""


class NotOptedIn(PolicyError):
    """A marketing message to a customer who did not opt in to this business's marketing."""


class NotAllowed(PolicyError):
    """A request between roles that may not make it (customer to customer, business to
    business, a device outside the chat's route, a control over a customer)."""


class UnknownAccount(PolicyError):
    """An account or device the relay does not know."""


class StaleDeviceList(PolicyError):
    """A batch that does not cover exactly the current devices: refresh both device lists and
    seal again (the same batch is refused again, so it is not retryable as it is)."""

    def __init__(self, missing: list[tuple[bytes, int]], extra: list[tuple[bytes, int]]) -> None:
        super().__init__(f"device list changed: {len(missing)} missing, {len(extra)} extra")
        self.missing = missing
        self.extra = extra


class DuplicateSubmission(PolicyError):
    """A batch whose message id the relay already accepted from this sender with other
    content (an identical batch gets the first receipt instead)."""


class ReportRejected(PolicyError):
    """A spam or class report whose franking does not verify, that names another chat, or
    that reports a message already reported."""


class MisdeclaredClass(PolicyError):
    """A business message whose content belongs to a dearer class than the one it declared
    (e.g. a registered marketing text sent as a free service message), or whose template id
    names a template of another class or text."""


class UnapprovedTemplate(PolicyError):
    """A template or marketing message outside the customer's window that names no approved
    template of the business's catalogue (unknown, pending, rejected), or a catalogue
    template sent as another class than its category's (SPEC §17.1)."""


class TierLimitReached(PolicyError):
    """A business starting a conversation (a template or marketing message outside the window)
    with one more customer than its messaging tier allows per 24 h (SPEC §17.3)."""


class EntryRefused(PolicyError):
    """An ad's entry token (SPEC §17.4) the relay does not take: not signed by the ad
    service, for another business, expired, already used, or presented where no entry can
    open (a business's message, a receipt, a relay without an ad service key). The message
    it came with is refused whole; sent again without the token it is an ordinary message."""


class UntrustedIdentity(PolicyError):
    """(A key store's sending policy, SPEC §9.1) the peer's identity key differs from the
    trusted one: the application must decide (``approve_identity``) before sending to it."""


class Conflict(PolicyError):
    """A registration that contradicts what the relay holds (name taken, other key) (409)."""


# -- reaching the relay (SPEC §10.7) ------------------------------------------------------------


class RelayError(E2EError):
    """The relay did not serve a request: not authenticated, not the caller's to ask, too
    fast, no such endpoint, or not reachable at all."""


class Unauthenticated(RelayError):
    """A request without a valid device signature: unknown device, wrong key, replayed nonce,
    time outside the allowed skew (401)."""


class Forbidden(RelayError):
    """An authenticated device asking for what is not its own (another device's mailbox) (403)."""


class Revoked(Forbidden):
    """A device certificate the account revoked (its serial is a tombstone of the account's
    signed device list, SPEC §10.1), or a device no longer in that list (403)."""


class RateLimited(RelayError):
    """A device sending faster than its rate limit allows (429); nothing was recorded, and
    the same request is accepted once a token has refilled."""

    retryable: ClassVar[bool] = True


class MailboxFull(RateLimited):
    """A recipient device's mailbox holds as much as its quota allows, in all or from this
    sender (429, SPEC §10.13); accepted once the recipient has fetched its mail."""


class NoSuchEndpoint(RelayError):
    """A path or method the API does not have (404/405)."""


class Overloaded(RelayError):
    """The relay is at one of its edge limits (request bodies in flight, shutting down) and
    did not read the request (503 with ``Retry-After``); nothing was recorded."""

    retryable: ClassVar[bool] = True


class WireFailure(RelayError):
    """The relay could not be reached (connection refused or reset, timeout) or answered
    something that is not the API's. Whether the request was applied is unknown; every
    request of the API is idempotent for a repeated body, so sending it again is safe."""

    retryable: ClassVar[bool] = True


# -- attachment transfers and the blob store (SPEC §16.8, §10.12) ---------------------------


class TransferError(E2EError):
    """A blob transfer that cannot go on: the blob store refused it, or answered with an
    offset or a length that no honest store gives (SPEC.md §16.8)."""


class TransferInterrupted(TransferError):
    """A blob transfer cut off before its end (a dropped connection, a timeout, a store that
    went away). Retrying can succeed: an upload continues from the store's offset, a
    download from the last byte verified."""

    retryable: ClassVar[bool] = True


class OffsetConflict(TransferError):
    """An upload's bytes sent for another offset than the blob store holds, or while another
    upload request of the same blob is running (HTTP 409). Ask the store's offset and go on
    from there."""


class BlobError(E2EError):
    """A blob store refused a request (SPEC.md §10.12)."""


class NoSuchBlob(BlobError):
    """No blob of that id that the caller may use: never made, expired, incomplete, or not
    the caller's to read (one answer for all, so nobody learns which; HTTP 404)."""


class BlobTooLarge(BlobError, LimitExceeded):
    """A blob longer than the store's cap, or bytes past a blob's declared length (HTTP 413)."""


class QuotaExceeded(BlobError):
    """The account's blobs would take more than its storage quota (HTTP 507)."""


# -- keys users can check (SPEC §13) -------------------------------------------------------------


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


class ConfigError(E2EError):
    """A relay configuration (file or environment variable) that names a setting that does
    not exist, or gives one a value of the wrong type or out of its range; the message names
    the setting (``edge.header_timeout: ...``)."""
