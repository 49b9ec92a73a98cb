"""The template catalogue as pure rules (SPEC.md §17.1): named, versioned templates with a
language, a category and typed parameters; the platform's review; a template message's
reference (in the envelope's metadata) and content (inside the encrypted frame); the check a
recipient's device -- and the relay, on a franked report -- runs on what it decrypted.

* A template is registered by name and language; the platform numbers its versions (a new
  text under the same name and language is a new version) and keeps each version's
  :class:`TemplateState`.
* A template message names ``name.language.version`` (:func:`template_ref`) in the envelope's
  template id field, so the relay checks approval and bills by category without seeing the
  content; its body is :class:`TemplateContent` (the rendered text and the parameters), which
  only the recipient's devices read.
* :func:`check_content` is the device's check: the parameters fit their declared types and the
  text is exactly the approved text with them filled in. A mismatch is a franked fact: the
  class report of SPEC §10.4 proves it to the relay.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

import cbor2

from e2e.errors import DecodeError
from e2e.platform.policy import MessageClass

__all__ = [
    "Category",
    "ParamType",
    "TemplateState",
    "TemplateSpec",
    "CatalogueEntry",
    "TemplateContent",
    "template_ref",
    "parse_ref",
    "render",
    "check_params",
    "check_content",
    "review",
    "spec_of",
    "entries_of",
    "MAX_PARAMS",
    "MAX_TEMPLATE_TEXT",
    "MAX_PARAM_CHARS",
]

#: Most parameters one template has.
MAX_PARAMS: Final = 10
#: Longest template text, in bytes of UTF-8.
MAX_TEMPLATE_TEXT: Final = 1024
#: Longest text parameter, in characters.
MAX_PARAM_CHARS: Final = 64

_NAME: Final = re.compile(r"[a-z0-9_]{1,20}")
_LANGUAGE: Final = re.compile(r"[a-z]{2,3}(?:_[A-Z]{2})?")
_PLACEHOLDER: Final = re.compile(r"\{\{([0-9]{1,2})\}\}")
_NUMBER: Final = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{1,6})?")
_CODE: Final = re.compile(r"[A-Za-z0-9]{4,10}")
_CURRENCY: Final = re.compile(r"[0-9]{1,12}(?:\.[0-9]{2})? [A-Z]{3}")
_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class Category(IntEnum):
    """A template's category: what it is for, and so what it costs outside the window."""

    UTILITY = 1
    AUTHENTICATION = 2
    MARKETING = 3

    @property
    def cls(self) -> MessageClass:
        """The message class a template of this category is sent as (the envelope's)."""
        return MessageClass.MARKETING if self is Category.MARKETING else MessageClass.TEMPLATE


class ParamType(IntEnum):
    """The type of one template parameter, checked on the recipient's device."""

    #: 1 to 64 characters, no line break and no ``{{``.
    TEXT = 1
    #: A decimal number: ``-?digits(.digits)?``.
    NUMBER = 2
    #: A calendar date, ``YYYY-MM-DD``.
    DATE = 3
    #: A one-time code: 4 to 10 ASCII letters and digits.
    CODE = 4
    #: An amount and its ISO 4217 code: ``12.50 EUR``.
    CURRENCY = 5


class TemplateState(IntEnum):
    """A template version's review state, kept by the platform."""

    PENDING = 0
    APPROVED = 1
    REJECTED = 2


def _fits(kind: ParamType, value: str) -> bool:
    if kind is ParamType.TEXT:
        return (
            0 < len(value) <= MAX_PARAM_CHARS
            and "{{" not in value
            and not any(c in value for c in "\r\n\x00")
        )
    if kind is ParamType.NUMBER:
        return _NUMBER.fullmatch(value) is not None
    if kind is ParamType.CODE:
        return _CODE.fullmatch(value) is not None
    if kind is ParamType.CURRENCY:
        return _CURRENCY.fullmatch(value) is not None
    if _DATE.fullmatch(value) is None:
        return False
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """What a business registers: a name and language, a category, the text with its
    placeholders ``{{1}}`` .. ``{{n}}`` and the type of each parameter. :meth:`checked` is the
    structural check (a spec that fails it is refused at registration, 400); whether the
    platform approves it is :func:`review`'s."""

    name: str
    language: str
    category: Category
    text: str
    params: tuple[ParamType, ...]

    def checked(self) -> TemplateSpec:
        """This spec, or :class:`~e2e.errors.DecodeError` naming what is malformed."""
        if _NAME.fullmatch(self.name) is None:
            raise DecodeError("template name: 1 to 20 of a-z, 0-9, _")
        if _LANGUAGE.fullmatch(self.language) is None:
            raise DecodeError("template language: like en or en_US")
        if not 0 < len(self.text.encode()) <= MAX_TEMPLATE_TEXT:
            raise DecodeError(f"template text: 1 to {MAX_TEMPLATE_TEXT} bytes")
        if len(self.params) > MAX_PARAMS:
            raise DecodeError(f"at most {MAX_PARAMS} template parameters")
        used = {int(m) for m in _PLACEHOLDER.findall(self.text)}
        if used != set(range(1, len(self.params) + 1)):
            raise DecodeError("the placeholders must be {{1}} .. {{n}}, one per parameter")
        if "{{" in _PLACEHOLDER.sub("", self.text):
            raise DecodeError("a malformed placeholder in the template text")
        return self

    def check(self, body: bytes) -> str:
        """:func:`check_content` of ``body`` against this spec (the
        :class:`~e2e.platform.policy.ContentRule` a :class:`~e2e.platform.policy.Template`
        holds)."""
        return check_content(self, body)

    @property
    def literal(self) -> str:
        """The text without its placeholders."""
        return _PLACEHOLDER.sub("", self.text)


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One version of a template as the platform keeps it: the spec, its version number and
    review state (with the reviewer's reason when it is not approved)."""

    spec: TemplateSpec
    version: int
    state: TemplateState
    reason: str = ""

    @property
    def ref(self) -> bytes:
        return template_ref(self.spec.name, self.spec.language, self.version)

    @property
    def approved(self) -> bool:
        return self.state is TemplateState.APPROVED

    @property
    def text_hash(self) -> bytes:
        return hashlib.sha256(self.spec.text.encode()).digest()


def template_ref(name: str, language: str, version: int) -> bytes:
    """The reference a template message carries in its envelope: ``name.language.version``
    in ASCII (at most 32 bytes: the envelope's template id field)."""
    return f"{name}.{language}.{version}".encode()


def parse_ref(ref: bytes) -> tuple[str, str, int] | None:
    """(name, language, version) of a catalogue reference, or None if ``ref`` is not one (a
    template id registered the older way, by its text alone)."""
    try:
        name, language, version = ref.decode("ascii").split(".")
    except (UnicodeDecodeError, ValueError):
        return None
    if (
        _NAME.fullmatch(name) is None
        or _LANGUAGE.fullmatch(language) is None
        or not version.isdigit()
        or not 0 < len(version) <= 4
        or version.startswith("0")
    ):
        return None
    return name, language, int(version)


@dataclass(frozen=True, slots=True)
class TemplateContent:
    """The body of a template message, inside the encrypted frame: the text as the customer
    reads it and the parameters that filled it. Canonical CBOR ``{1: text, 2: [params]}``."""

    text: str
    params: tuple[str, ...]

    def to_bytes(self) -> bytes:
        return cbor2.dumps({1: self.text, 2: list(self.params)}, canonical=True)

    @classmethod
    def from_bytes(cls, raw: bytes) -> TemplateContent:
        """Decode strictly (:class:`~e2e.errors.DecodeError` for anything but the canonical
        encoding of exactly these two fields)."""
        if len(raw) > 2 * MAX_TEMPLATE_TEXT + MAX_PARAMS * 4 * MAX_PARAM_CHARS:
            raise DecodeError("template content too long")
        try:
            obj: Any = cbor2.loads(raw)
        except Exception:  # noqa: BLE001 - any decoder failure is malformed input
            raise DecodeError("template content is not CBOR") from None
        if (
            not isinstance(obj, dict)
            or set(obj) != {1, 2}
            or type(obj[1]) is not str
            or not isinstance(obj[2], list)
            or len(obj[2]) > MAX_PARAMS
            or not all(type(p) is str for p in obj[2])
        ):
            raise DecodeError("template content: {1: text, 2: [parameters]}")
        content = cls(obj[1], tuple(obj[2]))
        if content.to_bytes() != raw:
            raise DecodeError("template content is not canonical")
        return content


def check_params(spec: TemplateSpec, params: tuple[str, ...]) -> str:
    """ "" if ``params`` fit ``spec``'s parameter types, else the reason they do not."""
    if len(params) != len(spec.params):
        return f"{len(params)} parameters for a template of {len(spec.params)}"
    for i, (kind, value) in enumerate(zip(spec.params, params, strict=True), 1):
        if not _fits(kind, value):
            return f"parameter {i} is not a {kind.name.lower()}"
    return ""


def render(spec: TemplateSpec, params: tuple[str, ...]) -> str:
    """The template's text with its parameters filled in (:class:`DecodeError` if they do
    not fit their types)."""
    why = check_params(spec, params)
    if why:
        raise DecodeError(why)
    return _PLACEHOLDER.sub(lambda m: params[int(m.group(1)) - 1], spec.text)


def check_content(spec: TemplateSpec, body: bytes) -> str:
    """The recipient's check of a template message: "" if ``body`` is a
    :class:`TemplateContent` whose parameters fit ``spec`` and whose text is exactly the
    template's with them filled in; else the reason it is not. A pure function, run by the
    device on what it decrypted and by the relay on what a franked report revealed."""
    try:
        content = TemplateContent.from_bytes(body)
    except DecodeError as exc:
        return str(exc)
    why = check_params(spec, content.params)
    if why:
        return why
    if content.text != render(spec, content.params):
        return "the text is not the template's with these parameters"
    return ""


def review(spec: TemplateSpec) -> tuple[TemplateState, str]:
    """The platform's automatic review of a well-formed spec: APPROVED, or REJECTED with the
    reason (an operator may still approve or reject any version by hand, SPEC §17.1)."""
    if len(spec.literal.strip()) < 8:
        return TemplateState.REJECTED, "a template needs at least 8 characters of fixed text"
    if re.search(r"\}\}\s*\{\{", spec.text):
        return TemplateState.REJECTED, "two parameters with no fixed text between them"
    codes = spec.params.count(ParamType.CODE)
    if spec.category is Category.AUTHENTICATION:
        if spec.params != (ParamType.CODE,):
            return TemplateState.REJECTED, "an authentication template carries one code only"
    elif codes:
        return TemplateState.REJECTED, "one-time codes belong in authentication templates"
    return TemplateState.APPROVED, ""


def spec_of(
    name: bytes, language: bytes, category: int, text: bytes, params: bytes
) -> TemplateSpec:
    """The spec of a registration or catalogue row in its wire form (ASCII name and language,
    UTF-8 text, one byte per parameter type), checked (:class:`DecodeError` if malformed)."""
    try:
        spec = TemplateSpec(
            name.decode("ascii"), language.decode("ascii"), Category(category), text.decode(),
            tuple(ParamType(p) for p in params),
        )  # fmt: skip
    except (UnicodeDecodeError, ValueError):
        raise DecodeError("template: bad name, language, text or parameter type") from None
    return spec.checked()


def entries_of(
    names: tuple[bytes, ...], languages: tuple[bytes, ...], versions: tuple[int, ...],
    categories: tuple[int, ...], states: tuple[int, ...], texts: tuple[bytes, ...],
    params: tuple[bytes, ...],
) -> list[CatalogueEntry]:  # fmt: skip
    """A catalogue's entries from its columns (as the wire's ``Catalogue`` carries them),
    each spec checked: a device reads them from the relay, which it does not trust."""
    out = []
    for name, lang, version, cat, text, types, state in zip(
        names, languages, versions, categories, texts, params, states, strict=True
    ):
        try:
            st = TemplateState(state)
        except ValueError:
            raise DecodeError("unknown template state") from None
        if not 0 < version <= 9999:
            raise DecodeError("template version out of range")
        out.append(CatalogueEntry(spec_of(name, lang, cat, text, types), version, st))
    return out
