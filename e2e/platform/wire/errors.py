"""Error answers of the relay's wire API (SPEC.md §10.7): codes, HTTP statuses and the error
body, mapped onto the one hierarchy of :mod:`e2e.errors` in both directions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from e2e.errors import (
    BlobTooLarge,
    Blocked,
    Conflict,
    DecodeError,
    DuplicateSubmission,
    E2EError,
    EntryRefused,
    Forbidden,
    InvalidKey,
    InvalidSignature,
    Limited,
    LimitExceeded,
    MailboxFull,
    MisdeclaredClass,
    NoPriorContact,
    NoSuchBlob,
    NoSuchEndpoint,
    NotAllowed,
    NotOptedIn,
    OffsetConflict,
    Overloaded,
    PolicyError,
    QuotaExceeded,
    RateLimited,
    ReportRejected,
    Revoked,
    StaleDeviceList,
    StoreError,
    StoreUnavailable,
    TierLimitReached,
    UnapprovedTemplate,
    Unauthenticated,
    UnknownAccount,
    UnsupportedVersion,
    WindowClosed,
    WireFailure,
)
from e2e.platform.wire.codec import MAX_BATCH, Body, F, addresses, decode_body, encode_body

__all__ = ["ERRORS", "error_status", "error_for", "WireError"]

#: Error code -> (HTTP status, error type). The relay answers the most specific entry whose
#: type the error is an instance of (the table is ordered subclass first); a client raises the
#: type of a code's first row.
ERRORS: Final[tuple[tuple[str, int, type[E2EError]], ...]] = (
    ("unauthenticated", 401, Unauthenticated),
    ("revoked", 403, Revoked),
    ("forbidden", 403, Forbidden),
    ("mailbox_full", 429, MailboxFull),
    ("rate_limited", 429, RateLimited),
    ("no_such_endpoint", 404, NoSuchEndpoint),
    ("no_such_blob", 404, NoSuchBlob),
    ("blob_too_large", 413, BlobTooLarge),
    ("quota_exceeded", 507, QuotaExceeded),
    ("offset_conflict", 409, OffsetConflict),
    ("timeout", 408, WireFailure),
    ("too_large", 413, LimitExceeded),
    ("unsupported_version", 400, UnsupportedVersion),
    ("malformed", 400, DecodeError),
    ("invalid_key", 400, InvalidKey),
    ("invalid_signature", 400, InvalidSignature),
    ("unknown_account", 404, UnknownAccount),
    ("stale_device_list", 409, StaleDeviceList),
    ("duplicate_submission", 409, DuplicateSubmission),
    ("conflict", 409, Conflict),
    ("window_closed", 422, WindowClosed),
    ("no_prior_contact", 422, NoPriorContact),
    ("blocked", 422, Blocked),
    ("limited", 422, Limited),
    ("not_opted_in", 422, NotOptedIn),
    ("not_allowed", 422, NotAllowed),
    ("report_rejected", 422, ReportRejected),
    ("misdeclared_class", 422, MisdeclaredClass),
    ("unapproved_template", 422, UnapprovedTemplate),
    ("tier_limit", 422, TierLimitReached),
    ("entry_refused", 422, EntryRefused),
    ("refused", 422, PolicyError),
    ("overloaded", 503, Overloaded),
    ("store_unavailable", 503, StoreUnavailable),
    ("store_unavailable", 503, StoreError),
    ("rejected", 400, E2EError),
)
#: Code -> (status, the type a client raises): the first row of each code.
_BY_CODE: Final = {code: (status, cls) for code, status, cls in reversed(ERRORS)}


def error_status(exc: E2EError) -> tuple[int, str]:
    """(HTTP status, code) for a typed error."""
    for code, status, cls in ERRORS:
        if isinstance(exc, cls):
            return status, code
    return 400, "rejected"  # pragma: no cover - E2EError is the last entry


def error_for(code: str, message: str, missing: Sequence[tuple[bytes, int]] = (),
              extra: Sequence[tuple[bytes, int]] = ()) -> E2EError:  # fmt: skip
    """The typed error a client raises for an error body's code (unknown codes: E2EError)."""
    entry = _BY_CODE.get(code)
    cls: type[E2EError] = entry[1] if entry else E2EError
    if cls is StaleDeviceList:
        return StaleDeviceList(list(missing), list(extra))
    if cls is E2EError or cls is PolicyError:
        return cls(f"{code}: {message}")
    return cls(message)


_U32: Final = 2**32 - 1
_SCHEMA: Final = {
    1: F(bytes, 1, 64),
    2: F(bytes, 0, 1024),
    3: F(bytes, 1, 64, required=False, array=True, count=MAX_BATCH),
    4: F(int, required=False, array=True, count=MAX_BATCH, max_int=_U32),
    5: F(bytes, 1, 64, required=False, array=True, count=MAX_BATCH),
    6: F(int, required=False, array=True, count=MAX_BATCH, max_int=_U32),
}


@dataclass(frozen=True, slots=True)
class WireError(Body):
    """An error body: ``{1: code (ASCII), 2: message (UTF-8), 3?: [missing accounts],
    4?: [missing devices], 5?: [extra accounts], 6?: [extra devices]}`` (3..6 only for
    stale_device_list, all four together). Messages never contain key material or message
    content."""

    code: str
    message: str
    missing: tuple[tuple[bytes, int], ...] = ()
    extra: tuple[tuple[bytes, int], ...] = ()

    @classmethod
    def schema(cls) -> dict[int, F]:
        return dict(_SCHEMA)

    @classmethod
    def of(cls, exc: E2EError) -> tuple[int, WireError]:
        status, code = error_status(exc)
        missing: tuple[tuple[bytes, int], ...] = ()
        extra: tuple[tuple[bytes, int], ...] = ()
        if isinstance(exc, StaleDeviceList):
            missing, extra = tuple(exc.missing), tuple(exc.extra)
        return status, cls(code, str(exc)[:1024], missing, extra)

    def to_error(self) -> E2EError:
        return error_for(self.code, self.message, self.missing, self.extra)

    def to_bytes(self) -> bytes:
        out: dict[int, Any] = {0: 1, 1: self.code.encode("ascii"),
                               2: self.message.encode("utf-8")[:1024]}  # fmt: skip
        if self.missing or self.extra:
            out[3] = tuple(a for a, _ in self.missing)
            out[4] = tuple(d for _, d in self.missing)
            out[5] = tuple(a for a, _ in self.extra)
            out[6] = tuple(d for _, d in self.extra)
        return encode_body(out)

    @classmethod
    def from_bytes(cls, raw: object) -> WireError:
        obj = decode_body(raw, _SCHEMA, cls.__name__)
        try:
            code = obj[1].decode("ascii")
            message = obj[2].decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("error body is not text") from None
        lists = [k in obj for k in (3, 4, 5, 6)]
        if any(lists) and not all(lists):
            raise DecodeError("error body: device lists are all present or all absent")
        missing = addresses(obj.get(3, []), obj.get(4, []), cls.__name__)
        extra = addresses(obj.get(5, []), obj.get(6, []), cls.__name__)
        if all(lists) and not (missing or extra):
            raise DecodeError("error body: empty device lists are absent")
        return cls(code, message, tuple(missing), tuple(extra))
