"""The subset of CDDL (RFC 8610) that SPEC-wire.cddl uses, read from cddlparser's AST into
small shapes, and CBOR instances made from those shapes alone (never from the code's
declarations), for tests/platform/test_wire_schema.py.

The subset: a rule is either a name (``x-request = register-account``) or a map of unsigned
integer keys, each optional (``?``) or not, whose value is an integer constant, an integer
range ``lo..hi``, ``bstr``, ``bstr .size n``, ``bstr .size (lo..hi)``, or an array
``[n*m item]`` of one such item. Anything else raises, so a schema construct this reader does
not understand fails the test instead of being skipped.

cddlparser 0.6.0 reads ``?`` as 0..inf (RFC 8610 §3.2: 0 or 1) and mis-reads ``0*n``; the
schema writes ``*n`` for the latter, and :func:`_occurrence` reads ``?`` by its token.

:func:`conforms` validates a CBOR item against a map rule of the subset. The test has it
check every instance, and asks pycddl (the Rust ``cddl`` crate) for a second opinion: pycddl
0.6.4 confuses byte strings and integers (``0..5`` accepts ``h''``, ``bstr .size (0..9)``
accepts ``0``), so it cannot be the only validator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import cbor2
import cddlparser
from cddlparser import ast

_UNBOUNDED = 1 << 64


@dataclass(frozen=True, slots=True)
class Shape:
    """One map value: ``int`` in [lo, hi], or ``bytes`` of length [lo, hi] (hi None:
    unbounded); ``array``: between ``least`` and ``most`` such items."""

    kind: type
    lo: int
    hi: int | None
    array: bool = False
    least: int = 0
    most: int = 0
    required: bool = True
    constant: bool = False


def _number(node: object) -> int:
    if not isinstance(node, ast.Value) or node.type != "number":
        raise ValueError(f"not a number: {node!r}")
    return int(node.value)


def _only(t: ast.Type) -> Any:
    if len(t.types) != 1:
        raise ValueError("a type choice is outside the subset")
    return t.types[0]


def _scalar(node: Any) -> Shape:
    if isinstance(node, ast.Value):
        n = _number(node)
        return Shape(int, n, n, constant=True)
    if isinstance(node, ast.Range):
        return Shape(int, _number(node.min), _number(node.max))
    if isinstance(node, ast.Typename) and node.name == "bstr":
        return Shape(bytes, 0, None)
    if isinstance(node, ast.Operator):
        if not (isinstance(node.type, ast.Typename) and node.type.name == "bstr"
                and node.name.literal == "size"):  # fmt: skip
            raise ValueError("only bstr .size is in the subset")
        ctl = node.controller
        if isinstance(ctl, ast.Type):
            ctl = _only(ctl)
        if isinstance(ctl, ast.Range):
            return Shape(bytes, _number(ctl.min), _number(ctl.max))
        n = _number(ctl)
        return Shape(bytes, n, n)
    raise ValueError(f"outside the subset: {type(node).__name__}")


def _occurrence(occ: ast.Occurrence | None) -> tuple[int, float]:
    if occ is None:
        return 1, 1
    if occ.tokens and occ.tokens[0].type == cddlparser.Tokens.QUEST:
        return 0, 1
    return int(occ.n), occ.m


def _value(t: ast.Type) -> Shape:
    node = _only(t)
    if isinstance(node, ast.Array):
        [choice] = node.groupChoices
        [entry] = choice.groupEntries
        least, most = _occurrence(entry.occurrence)
        if entry.key is not None or most == float("inf"):
            raise ValueError("an array is [n*m item] in the subset")
        item = _scalar(_only(entry.type))
        return dataclasses.replace(item, array=True, least=least, most=int(most))
    return _scalar(node)


def _map(node: ast.Map) -> dict[int, Shape]:
    out: dict[int, Shape] = {}
    for choice in node.groupChoices:
        for entry in choice.groupEntries:
            if entry.key is None or not entry.key.hasColon:
                raise ValueError("a map entry is key: value in the subset")
            key = _number(entry.key.type)
            least, most = _occurrence(entry.occurrence)
            if most != 1 or key in out:
                raise ValueError(f"map key {key}: one entry, ? or none")
            out[key] = dataclasses.replace(_value(entry.type), required=least == 1)
    return out


@dataclass(frozen=True, slots=True)
class Model:
    """The rules of one CDDL text: maps by name, and names that alias another rule."""

    maps: dict[str, dict[int, Shape]]
    aliases: dict[str, str]

    def resolve(self, name: str) -> dict[int, Shape]:
        seen = set()
        while name in self.aliases:
            if name in seen:
                raise ValueError(f"rule {name} refers to itself")
            seen.add(name)
            name = self.aliases[name]
        return self.maps[name]


def read(text: str) -> Model:
    maps: dict[str, dict[int, Shape]] = {}
    aliases: dict[str, str] = {}
    for rule in cddlparser.parse(text).rules:
        name = rule.name.name
        if not isinstance(rule.type, ast.Type):
            raise ValueError(f"rule {name} is a group: outside the subset")
        node = _only(rule.type)
        if isinstance(node, ast.Map):
            maps[name] = _map(node)
        elif isinstance(node, ast.Typename):
            aliases[name] = node.name
        else:
            raise ValueError(f"rule {name}: outside the subset")
    return Model(maps, aliases)


def _fits(shape: Shape, v: object) -> bool:
    if v.__class__ is not shape.kind:
        return False
    n = v if shape.kind is int else len(v)  # type: ignore[arg-type]
    return shape.lo <= n and (shape.hi is None or n <= shape.hi)  # type: ignore[operator]


def conforms(fields: dict[int, Shape], raw: bytes) -> bool:
    """True if ``raw`` is one CBOR map satisfying the map rule ``fields`` (RFC 8610 §3.5.1:
    a map rule is closed, so a key it does not name fails)."""
    try:
        obj = cbor2.loads(raw)
    except Exception:  # noqa: BLE001 - any malformed input simply does not conform
        return False
    if obj.__class__ is not dict or not all(k.__class__ is int and k in fields for k in obj):
        return False
    for k, shape in fields.items():
        if k not in obj:
            if shape.required:
                return False
            continue
        v = obj[k]
        if not shape.array:
            if not _fits(shape, v):
                return False
        elif v.__class__ is not list or not shape.least <= len(v) <= shape.most:
            return False
        elif not all(_fits(shape, item) for item in v):
            return False
    return True


# -- instances ----------------------------------------------------------------------------


def scalar(shape: Shape, high: bool) -> int | bytes:
    """The shape's least value, or its greatest (an unbounded bstr: its least)."""
    if shape.kind is int:
        return shape.hi if high and shape.hi is not None else shape.lo
    n = shape.hi if high and shape.hi is not None else shape.lo
    return b"a" * n


def value(shape: Shape, count: int | None = None, high: bool = False) -> Any:
    """A valid value: arrays of ``count`` items (default their least, at least 1)."""
    if not shape.array:
        return scalar(shape, high)
    n = max(shape.least, 1) if count is None else max(shape.least, min(count, shape.most))
    return [scalar(shape, high)] * n


def valid(fields: dict[int, Shape], overrides: dict[int, Any]) -> dict[str, dict[int, Any]]:
    """Valid instances by name: the required fields only; every field; and per field, that
    field at its upper bound (arrays: most items, equally many in every array, as columns
    must be; and one item at its upper bound)."""

    def base(every: bool, count: int | None = None) -> dict[int, Any]:
        return {k: overrides.get(k, value(s, count)) for k, s in fields.items()
                if s.required or every}  # fmt: skip

    out = {"required": base(False), "every": base(True)}
    for k, s in fields.items():
        if s.constant or k in overrides:
            continue
        if s.array:
            out[f"{k} most items"] = base(True, s.most)
            one = base(True)
            one[k] = [scalar(s, True)] * len(one[k])
            out[f"{k} items high"] = one
        elif s.hi is not None:
            out[f"{k} high"] = {**base(True), k: scalar(s, True)}
    return out


def broken(fields: dict[int, Shape], overrides: dict[int, Any]) -> dict[str, dict[int, Any]]:
    """Instances that break one constraint each: a required field missing, a type changed,
    a bound exceeded by one, an unknown key, the wrong version."""
    every = {k: overrides.get(k, value(s)) for k, s in fields.items()}
    out: dict[str, dict[int, Any]] = {}

    def put(name: str, k: int, v: Any) -> None:
        out[name] = {**every, k: v}

    for k, s in fields.items():
        if s.required:
            out[f"{k} missing"] = {j: v for j, v in every.items() if j != k}
        wrong: Any = b"" if s.kind is int else 0
        put(f"{k} wrong type", k, wrong if not s.array else [wrong] * len(every[k]))
        if s.array:
            put(f"{k} not an array", k, scalar(s, False))
            put(f"{k} one item too many", k, [scalar(s, False)] * (s.most + 1))
            if s.least > 0:
                put(f"{k} one item too few", k, [scalar(s, False)] * (s.least - 1))
        if s.constant:
            put(f"{k} another constant", k, s.lo + 1)
            continue
        item = (lambda v: [v]) if s.array else (lambda v: v)
        if s.kind is int:
            put(f"{k} above range", k, item(s.hi + 1))  # type: ignore[operator]
            if s.lo > 0:
                put(f"{k} below range", k, item(s.lo - 1))
        else:
            if s.hi is not None:
                put(f"{k} one byte too long", k, item(b"a" * (s.hi + 1)))
            if s.lo > 0:
                put(f"{k} one byte too short", k, item(b"a" * (s.lo - 1)))
    out["unknown key"] = {**every, max(fields) + 1: 0}
    return out
