"""Wire bodies of the key directory and business certificates (SPEC.md §10.7, §13.2-§13.4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from e2e.errors import DecodeError
from e2e.platform.leaves import MAX_LEAF_BYTES
from e2e.platform.transparency import MAX_OPENING_BYTES
from e2e.platform.wire.codec import Body, F, account_field, key

__all__ = [
    "MAX_LOG_ENTRIES",
    "LogHeadQuery",
    "LogHead",
    "LogLookup",
    "LogEntry",
    "LogConsistencyQuery",
    "LogConsistency",
    "LogEntriesQuery",
    "LogOpen",
    "LogEntries",
    "BusinessCertQuery",
    "BusinessCert",
]

#: Most key-log leaves one /v1/log/entries answer carries (a monitor pages through).
MAX_LOG_ENTRIES: Final = 256
#: Largest signed tree head, directory entry, proof and business certificate.
_HEAD: Final = F(bytes, 1, 256)
_ENTRY: Final = F(bytes, 1, MAX_OPENING_BYTES)
_PROOF: Final = F(bytes, 1, 8192)
_BUSINESS_CERT: Final = F(bytes, 0, 512)
_SIZE: Final = F(int)


@dataclass(frozen=True, slots=True)
class LogHeadQuery(Body):
    """``{}``: the key log's newest signed tree head."""


@dataclass(frozen=True, slots=True)
class LogHead(Body):
    """``{1: signed tree head (SPEC §13.2 wire form), 2: the log's Ed25519 public key,
    3: the relay's VRF public key, 4: the log key's signature vouching for it (SPEC
    §13.5)}``. The log key is informational: a client checks heads against the key it
    pinned, never against this field; it learns the VRF key through the signature."""

    head: bytes = key(1, _HEAD)
    log_key: bytes = key(2, F(bytes, 32, 32))
    vrf_key: bytes = key(3, F(bytes, 32, 32))
    vrf_signature: bytes = key(4, F(bytes, 64, 64))


@dataclass(frozen=True, slots=True)
class LogLookup(Body):
    """``{1: account, 2: tree size}``: the account's newest entry within that many leaves."""

    account: bytes = account_field(1)
    size: int = key(2, _SIZE)


@dataclass(frozen=True, slots=True)
class LogEntry(Body):
    """``{1: the opening record of the entry (SPEC §13.4: the entry, its commitment's
    opening, the VRF proof of the account's label), 2: its leaf's inclusion proof}``."""

    entry: bytes = key(1, _ENTRY)
    proof: bytes = key(2, _PROOF)


@dataclass(frozen=True, slots=True)
class LogConsistencyQuery(Body):
    """``{1: size1, 2: size2}``."""

    size1: int = key(1, _SIZE)
    size2: int = key(2, _SIZE)


@dataclass(frozen=True, slots=True)
class LogConsistency(Body):
    """``{1: consistency proof}``."""

    proof: bytes = key(1, _PROOF)


@dataclass(frozen=True, slots=True)
class LogEntriesQuery(Body):
    """``{1: start, 2: tree size}``: entries from ``start`` (at most MAX_LOG_ENTRIES) with
    inclusion proofs in the tree of ``size`` leaves."""

    start: int = key(1, _SIZE)
    size: int = key(2, _SIZE)


@dataclass(frozen=True, slots=True)
class LogOpen(Body):
    """``{1: leaf index, 2: tree size}``: the opening record of a leaf of the caller's own
    account (its monitor; any other account's is ``forbidden``)."""

    index: int = key(1, _SIZE)
    size: int = key(2, _SIZE)


@dataclass(frozen=True, slots=True)
class LogEntries(Body):
    """``{1: [leaves: label and commitment, no name], 2: [inclusion proofs]}``, equally
    long, in log order."""

    entries: tuple[bytes, ...] = key(
        1, F(bytes, 1, MAX_LEAF_BYTES, array=True, count=MAX_LOG_ENTRIES)
    )
    proofs: tuple[bytes, ...] = key(2, F(bytes, 1, 8192, array=True, count=MAX_LOG_ENTRIES))

    @classmethod
    def check(cls, obj: dict[int, Any]) -> None:
        if len(obj[1]) != len(obj[2]):
            raise DecodeError("log entries: entry and proof arrays differ in length")


@dataclass(frozen=True, slots=True)
class BusinessCertQuery(Body):
    """``{1: account}``: the platform's certificate of a business account (SPEC §13.3)."""

    account: bytes = account_field(1)


@dataclass(frozen=True, slots=True)
class BusinessCert(Body):
    """``{1: certificate}``: the stored business certificate, empty if the account has none.
    The relay only stores and serves it; the client verifies it under the platform key."""

    certificate: bytes = key(1, _BUSINESS_CERT)
