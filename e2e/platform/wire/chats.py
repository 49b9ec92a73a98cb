"""Wire bodies of chats: customer controls, the window, templates and the bill (SPEC.md
§10.7, §10.3, §10.4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from e2e.errors import DecodeError
from e2e.platform.envelope import MAX_BODY_BYTES, MAX_TEMPLATE_ID_LEN
from e2e.platform.wire.codec import Body, F, account_field, key

__all__ = [
    "MAX_TEMPLATES",
    "MAX_ENTRY_LINES",
    "Control",
    "WindowQuery",
    "WindowState",
    "RegisterTemplate",
    "ListTemplates",
    "TemplateList",
    "BillQuery",
    "BillLines",
]

#: Most templates one business registers (a template list answers with all of them).
MAX_TEMPLATES: Final = 256
_FLAG: Final = F(int, max_int=1)
_CLASS: Final = F(int, max_int=255)


@dataclass(frozen=True, slots=True)
class Control(Body):
    """``{1: op (1 block, 2 limit, 3 marketing opt-in), 2: business, 3: on (0/1)}``: a
    customer's control over one business; the caller must be a customer's device."""

    BLOCK: ClassVar[int] = 1
    LIMIT: ClassVar[int] = 2
    OPT_IN: ClassVar[int] = 3
    op: int = key(1, F(int, min_int=1, max_int=3))
    business: bytes = account_field(2)
    on: bool = key(3, _FLAG)


@dataclass(frozen=True, slots=True)
class WindowQuery(Body):
    """``{1: the other party}``: is the 24 h window of the caller's chat with it open?"""

    peer: bytes = account_field(1)


@dataclass(frozen=True, slots=True)
class WindowState(Body):
    """``{1: 1 if the window is open}``."""

    open: bool = key(1, _FLAG)


@dataclass(frozen=True, slots=True)
class RegisterTemplate(Body):
    """``{1: template id (1..32 bytes), 2: class (TEMPLATE or MARKETING), 3: text}``; the
    caller must be a device of the business. The relay keeps the text's SHA-256."""

    template_id: bytes = key(1, F(bytes, 1, MAX_TEMPLATE_ID_LEN))
    cls: int = key(2, _CLASS)
    text: bytes = key(3, F(bytes, 0, MAX_BODY_BYTES))


@dataclass(frozen=True, slots=True)
class ListTemplates(Body):
    """``{1: business account}``: the templates it registered (public, like its devices)."""

    business: bytes = account_field(1)


@dataclass(frozen=True, slots=True)
class TemplateList(Body):
    """``{1: [template ids], 2: [classes], 3: [SHA-256 of each text]}``, by id ascending."""

    template_ids: tuple[bytes, ...] = key(
        1, F(bytes, 1, MAX_TEMPLATE_ID_LEN, array=True, count=MAX_TEMPLATES)
    )
    classes: tuple[int, ...] = key(2, F(int, array=True, count=MAX_TEMPLATES, max_int=255))
    text_hashes: tuple[bytes, ...] = key(3, F(bytes, 32, 32, array=True, count=MAX_TEMPLATES))

    @classmethod
    def check(cls, obj: dict[int, Any]) -> None:
        if not len(obj[1]) == len(obj[2]) == len(obj[3]):
            raise DecodeError("template list columns differ in length")


@dataclass(frozen=True, slots=True)
class BillQuery(Body):
    """``{}``: the caller's (a business device's) billing ledger summary."""


def _column(n: int, required: bool = True, max_int: int = 2**63 - 1) -> Any:
    spec = F(int, required=required, array=True, count=64, max_int=max_int)
    return key(n, spec) if required else key(n, spec, ())


#: Most ads a bill lists entry points of (the relay lists the first by ad id).
MAX_ENTRY_LINES: Final = 1000


@dataclass(frozen=True, slots=True)
class BillLines(Body):
    """``{1: tier, 2: [classes], 3: [in window 0/1], 4: [message counts], 5: [unit prices]}``:
    one line per (class, in window, price) of the ledger, ascending; then the penalty lines
    of verified class reports, one per (declared class, content class, price), ascending:
    ``{6: [declared classes], 7: [content classes], 8: [counts], 9: [unit prices]}`` (keys
    6 to 9 absent when there are none); then, of the lines above, the catalogue templates by
    category (SPEC §17.1): ``{10: [categories], 11: [in window 0/1], 12: [counts], 13: [unit
    prices]}`` (absent when there are none; counted in the lines above, not again in
    :attr:`total`); then the ad entry points (SPEC §17.4), free, by ad: ``{14: [ad ids],
    15: [entries]}`` (absent when there are none)."""

    tier: int = key(1, F(int, max_int=1))
    classes: tuple[int, ...] = _column(2, max_int=255)
    in_window: tuple[int, ...] = _column(3, max_int=1)
    counts: tuple[int, ...] = _column(4)
    unit_prices: tuple[int, ...] = _column(5)
    penalty_declared: tuple[int, ...] = _column(6, False, 255)
    penalty_content: tuple[int, ...] = _column(7, False, 255)
    penalty_counts: tuple[int, ...] = _column(8, False)
    penalty_prices: tuple[int, ...] = _column(9, False)
    category_ids: tuple[int, ...] = _column(10, False, 3)
    category_in_window: tuple[int, ...] = _column(11, False, 1)
    category_counts: tuple[int, ...] = _column(12, False)
    category_prices: tuple[int, ...] = _column(13, False)
    entry_ads: tuple[bytes, ...] = key(14, F(bytes, 1, 32, required=False, array=True,
                                             count=MAX_ENTRY_LINES), ())  # fmt: skip
    entry_counts: tuple[int, ...] = key(15, F(int, required=False, array=True,
                                              count=MAX_ENTRY_LINES), ())  # fmt: skip

    @property
    def total(self) -> int:
        lines = zip(self.counts, self.unit_prices, strict=True)
        penalties = zip(self.penalty_counts, self.penalty_prices, strict=True)
        return sum(c * p for c, p in lines) + sum(c * p for c, p in penalties)

    @classmethod
    def check(cls, obj: dict[int, Any]) -> None:
        if not len(obj[2]) == len(obj[3]) == len(obj[4]) == len(obj[5]):
            raise DecodeError("bill arrays differ in length")
        if len({len(obj.get(k, ())) for k in (6, 7, 8, 9)}) != 1:
            raise DecodeError("bill penalty arrays differ in length")
        if len({len(obj.get(k, ())) for k in (10, 11, 12, 13)}) != 1:
            raise DecodeError("bill category arrays differ in length")
        if len(obj.get(14, ())) != len(obj.get(15, ())):
            raise DecodeError("bill entry arrays differ in length")
