"""Wire bodies of the prekey directory (SPEC.md §10.7, §2.4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from e2e.platform.wire.codec import Body, F, account_field, device_field, key

__all__ = [
    "MAX_PREKEYS_PER_UPLOAD",
    "MAX_BUNDLE_BYTES",
    "UploadPrekeys",
    "CountPrekeys",
    "PrekeyCount",
    "ClaimPrekey",
    "ClaimedPrekey",
]

MAX_PREKEYS_PER_UPLOAD: Final = 200
MAX_BUNDLE_BYTES: Final = 4096
_BUNDLE: Final = F(bytes, 1, MAX_BUNDLE_BYTES)
_FLAG: Final = F(int, max_int=1)


@dataclass(frozen=True, slots=True)
class UploadPrekeys(Body):
    """``{1: [one-time prekey bundles], 2?: last-resort bundle}``. Each one-time bundle must
    carry a one-time prekey id; uploading an id again (a retry) changes nothing, and an id once
    handed out is never handed out again. A new last-resort bundle replaces the old one."""

    one_time: tuple[bytes, ...] = key(
        1, F(bytes, 1, MAX_BUNDLE_BYTES, array=True, count=MAX_PREKEYS_PER_UPLOAD)
    )
    last_resort: bytes | None = key(2, F(bytes, 1, MAX_BUNDLE_BYTES, required=False), None)


@dataclass(frozen=True, slots=True)
class CountPrekeys(Body):
    """``{}``: how many one-time prekeys of the caller are left."""


@dataclass(frozen=True, slots=True)
class PrekeyCount(Body):
    """``{1: one-time prekeys not yet handed out, 2: 1 if a last-resort bundle is held}``."""

    one_time: int = key(1, F(int))
    last_resort: bool = key(2, _FLAG)


@dataclass(frozen=True, slots=True)
class ClaimPrekey(Body):
    """``{1: account, 2: device id}``: hand out one bundle of that device."""

    account: bytes = account_field(1)
    device_id: int = device_field(2)


@dataclass(frozen=True, slots=True)
class ClaimedPrekey(Body):
    """``{1: bundle, 2: 1 if it is a one-time bundle (0: the last-resort one)}``."""

    bundle: bytes = key(1, _BUNDLE)
    one_time: bool = key(2, _FLAG)
