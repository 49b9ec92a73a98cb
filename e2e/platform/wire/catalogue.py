"""Wire bodies of the business platform (SPEC.md §17): the template catalogue (a business
registers a template by name and language, anyone reads a business's catalogue, public like
its devices), the messaging tier (§17.3) and the notices of customers' controls (§17.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from e2e.errors import DecodeError
from e2e.platform.wire.codec import Body, F, account_field, key

__all__ = [
    "MAX_CATALOGUE",
    "RegisterCatalogue",
    "CatalogueAnswer",
    "ListCatalogue",
    "Catalogue",
    "TierQuery",
    "TierInfo",
    "MAX_NOTICES",
    "NoticeQuery",
    "Notices",
]

#: Most template versions one business keeps (a catalogue answers with all of them).
MAX_CATALOGUE: Final = 256
_TEXT: Final = 1024


@dataclass(frozen=True, slots=True)
class RegisterCatalogue(Body):
    """``{1: name, 2: language, 3: category (1 utility, 2 authentication, 3 marketing),
    4: text (UTF-8, placeholders {{1}}..{{n}}), 5: parameter types (one byte each)}``; the
    caller must be a device of the business. The same text again is the same version."""

    name: bytes = key(1, F(bytes, 1, 20))
    language: bytes = key(2, F(bytes, 2, 6))
    category: int = key(3, F(int, min_int=1, max_int=3))
    text: bytes = key(4, F(bytes, 1, _TEXT))
    params: bytes = key(5, F(bytes, 0, 10))


@dataclass(frozen=True, slots=True)
class CatalogueAnswer(Body):
    """``{1: version, 2: state (0 pending, 1 approved, 2 rejected), 3: reason}``."""

    version: int = key(1, F(int, min_int=1, max_int=9999))
    state: int = key(2, F(int, max_int=2))
    reason: bytes = key(3, F(bytes, 0, 200))


@dataclass(frozen=True, slots=True)
class ListCatalogue(Body):
    """``{1: business account}``: every version of every template it registered."""

    business: bytes = account_field(1)


def _col(n: int, spec: F) -> Any:
    return key(n, spec)


@dataclass(frozen=True, slots=True)
class Catalogue(Body):
    """Columns, one row per template version, by (name, language, version) ascending:
    ``{1: [names], 2: [languages], 3: [versions], 4: [categories], 5: [states],
    6: [texts], 7: [parameter types]}``."""

    names: tuple[bytes, ...] = _col(1, F(bytes, 1, 20, array=True, count=MAX_CATALOGUE))
    languages: tuple[bytes, ...] = _col(2, F(bytes, 2, 6, array=True, count=MAX_CATALOGUE))
    versions: tuple[int, ...] = _col(3, F(int, array=True, count=MAX_CATALOGUE, max_int=9999))
    categories: tuple[int, ...] = _col(4, F(int, array=True, count=MAX_CATALOGUE, max_int=3))
    states: tuple[int, ...] = _col(5, F(int, array=True, count=MAX_CATALOGUE, max_int=2))
    texts: tuple[bytes, ...] = _col(6, F(bytes, 1, _TEXT, array=True, count=MAX_CATALOGUE))
    params: tuple[bytes, ...] = _col(7, F(bytes, 0, 10, array=True, count=MAX_CATALOGUE))

    @classmethod
    def check(cls, obj: dict[int, Any]) -> None:
        if len({len(obj[k]) for k in range(1, 8)}) != 1:
            raise DecodeError("catalogue columns differ in length")


@dataclass(frozen=True, slots=True)
class TierQuery(Body):
    """``{}``: the caller's (a business device's) messaging tier."""


@dataclass(frozen=True, slots=True)
class TierInfo(Body):
    """``{1: level, 2: limit (new customers per 24 h; 0 if unlimited), 3: used in the last
    24 h, 4: quality (0 high, 1 medium, 2 low), 5: blocks and spam reports in 7 days,
    6: customers it started conversations with in 7 days}``."""

    level: int = key(1, F(int, max_int=255))
    limit: int = key(2, F(int, max_int=2**63 - 1))
    used: int = key(3, F(int))
    quality: int = key(4, F(int, max_int=2))
    negatives: int = key(5, F(int))
    started_week: int = key(6, F(int))


#: Most notices in one answer.
MAX_NOTICES: Final = 256


@dataclass(frozen=True, slots=True)
class NoticeQuery(Body):
    """``{1: position}``: (a business device) what its customers did about it after that
    position (SPEC §17.2)."""

    after: int = key(1, F(int))


@dataclass(frozen=True, slots=True)
class Notices(Body):
    """``{1: [positions], 2: [customers], 3: [kinds], 4: [values], 5: [times]}``: what
    customers did about the business, oldest first, at most :data:`MAX_NOTICES`. A kind is
    :attr:`BLOCK`, :attr:`LIMIT` or :attr:`OPT_IN` (value 1 on, 0 off; the numbers of
    :class:`~e2e.platform.wire.Control`) or :attr:`SPAM_REPORT` (value: the messages it
    newly reported)."""

    BLOCK: ClassVar[int] = 1
    LIMIT: ClassVar[int] = 2
    OPT_IN: ClassVar[int] = 3
    SPAM_REPORT: ClassVar[int] = 4

    seqs: tuple[int, ...] = key(1, F(int, array=True, count=MAX_NOTICES))
    customers: tuple[bytes, ...] = key(2, F(bytes, 1, 64, array=True, count=MAX_NOTICES))
    kinds: tuple[int, ...] = key(3, F(int, 1, max_int=4, array=True, count=MAX_NOTICES))
    values: tuple[int, ...] = key(4, F(int, array=True, count=MAX_NOTICES))
    times: tuple[int, ...] = key(5, F(int, array=True, count=MAX_NOTICES))

    @classmethod
    def check(cls, obj: dict[int, Any]) -> None:
        if not len(obj[1]) == len(obj[2]) == len(obj[3]) == len(obj[4]) == len(obj[5]):
            raise DecodeError("notice columns differ in length")
