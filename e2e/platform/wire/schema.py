"""The wire API as a CDDL schema (RFC 8610; SPEC.md §10.7), generated from the declarations.

:func:`render` writes one CDDL rule per body class of :data:`~e2e.platform.wire.ENDPOINTS`
(the map each ``F`` field declares, with its key, type, bounds and optionality), the error
body and the ``authorization`` token, one pair of rules per endpoint naming its request and
answer (``<path>-request``, ``<path>-answer``, the path after ``/v1/`` with ``/`` as ``-``),
then the hand-written rules of the frames those bodies carry (``frames.cddl`` beside this
module: the envelope, the delivery record, the signed inputs). ``SPEC-wire.cddl`` at the top
of a checkout is its output, and ``python -m e2e wire schema`` prints it.

What CDDL cannot say is written as a comment on the rule: arrays that must be equally long,
and the error body's all-or-none device lists. An optional field is absent exactly when it
holds its default (SPEC §10.7), so its type leaves the default out: a ``0..25000`` field whose
default is 0 is ``? 3: 1..25000``.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections.abc import Iterator
from importlib import resources
from typing import Any, Final

from e2e.platform.wire import CERTIFIED, ENDPOINTS, NO_AUTH, Endpoint
from e2e.platform.wire.auth import AUTH_TOKEN_SCHEMA
from e2e.platform.wire.codec import WIRE_VERSION, Body, F
from e2e.platform.wire.errors import WireError

__all__ = [
    "ACROSS_FIELDS",
    "BODIES",
    "body_rule",
    "declared",
    "endpoint_rule",
    "field_type",
    "render",
    "rule_name",
]

_CALLER: Final = {NO_AUTH: "anyone", CERTIFIED: "the device its certificate certifies"}
#: Rules across fields that CDDL cannot express, by body class name.
ACROSS_FIELDS: Final = {
    "TemplateList": "keys 1, 2 and 3 hold equally many items",
    "LogEntries": "keys 1 and 2 hold equally many items",
    "Catalogue": "keys 1 to 7 hold equally many items",
    "BillLines": "keys 2 to 5 hold equally many items; keys 6 to 9 are all absent or all "
    "present, equally long; so are keys 10 to 13, and keys 14 and 15",
    "Notices": "keys 1 to 5 hold equally many items",
    "WireError": "keys 3 to 6 are all absent or all present (only for stale_device_list), "
    "3 and 4 equally long, 5 and 6 equally long, not all four empty; 1 is ASCII, 2 UTF-8",
}


def rule_name(cls_name: str) -> str:
    """``RegisterAccount`` -> ``register-account``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", cls_name).lower()


def endpoint_rule(path: str) -> str:
    """``/v1/accounts/register`` -> ``accounts-register`` (the stem of its two rules)."""
    return path.removeprefix("/v1/").replace("/", "-")


def _ints(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}..{hi}"


def _item(spec: F) -> str:
    if spec.kind is int:
        return _ints(spec.min_int, spec.max_int)
    return f"bstr .size {spec.lo}" if spec.lo == spec.hi else f"bstr .size ({spec.lo}..{spec.hi})"


def field_type(spec: F, default: Any = dataclasses.MISSING) -> str:
    """The CDDL type of one field; an optional field's leaves out its default."""
    if spec.array:
        least = "1" if not spec.required and default == () else ""
        return f"[{least}*{spec.count} {_item(spec)}]"
    if spec.required or spec.kind is not int or not spec.min_int <= default <= spec.max_int:
        return _item(spec)
    if default == spec.min_int:
        return _ints(spec.min_int + 1, spec.max_int)
    if default == spec.max_int:
        return _ints(spec.min_int, spec.max_int - 1)
    raise ValueError(f"an optional int field's default {default} is inside its range")


def declared(cls: type[Body]) -> Iterator[tuple[int, str, F, Any]]:
    """(key, attribute name, shape, default) of every field a body class declares."""
    if cls is WireError:
        names = {1: "code", 2: "message", 3: "missing accounts", 4: "missing devices",
                 5: "extra accounts", 6: "extra devices"}  # fmt: skip
        for n, spec in WireError.schema().items():  # its own codec: no default refused
            yield n, names[n], spec, dataclasses.MISSING
        return
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        n, spec = f.metadata["wire"]
        yield n, f.name, spec, f.default


def _comment(text: str) -> list[str]:
    text = re.sub(r":\w+:`~?(?:[\w.]*\.)?(\w+)`", r"\1", text).replace("``", "")
    flat = " ".join(text.split())
    return ["; " + line for line in textwrap.wrap(flat, 94)]


def _map_rule(name: str, doc: str, entries: list[tuple[int, str, str, bool]]) -> list[str]:
    lines = _comment(doc)
    body = [(f"0: {WIRE_VERSION}", "wire version")]
    body += [(f"{'' if req else '? '}{n}: {ty}", attr) for n, attr, ty, req in entries]
    if len(body) == 1:
        return [*lines, f"{name} = {{ 0: {WIRE_VERSION} }}", ""]
    lines.append(f"{name} = {{")
    for i, (text, attr) in enumerate(body):
        sep = "," if i < len(body) - 1 else ""
        lines.append(f"  {text + sep:<58} ; {attr}")
    return [*lines, "}", ""]


def body_rule(cls: type[Body]) -> list[str]:
    """The lines of one body class's rule: its docstring as a comment, then its map."""
    doc = (cls.__doc__ or "").strip()
    across = ACROSS_FIELDS.get(cls.__name__)
    if across:
        doc += f" Across fields: {across}."
    entries = [(n, attr, field_type(spec, default), spec.required)
               for n, attr, spec, default in sorted(declared(cls))]  # fmt: skip
    return _map_rule(rule_name(cls.__name__), doc, entries)


def _endpoint_rules(e: Endpoint) -> list[str]:
    stem = endpoint_rule(e.path)
    caller = _CALLER.get(e.auth, "a registered device (signed authorization header)")
    return [
        f"; POST {e.path}, caller: {caller}",
        f"{stem}-request = {rule_name(e.request.__name__)}",
        f"{stem}-answer = {rule_name(e.answer.__name__)}",
    ]


def _bodies() -> tuple[type[Body], ...]:
    seen: dict[type[Body], None] = {}
    for e in ENDPOINTS:
        seen.setdefault(e.request)
        seen.setdefault(e.answer)
    seen.setdefault(WireError)
    return tuple(seen)


#: Every body class the schema has a rule for, in the order of the endpoints.
BODIES: Final[tuple[type[Body], ...]] = _bodies()


def _auth_rule() -> list[str]:
    names = {1: "account", 2: "device id", 3: "unix time (s)", 4: "nonce", 5: "signature",
             6: "SHA-256 of the body"}  # fmt: skip
    doc = ("The authorization header's token: 'authorization: E2E-Device <unpadded base64url "
           "of this map>' (SPEC §10.7); the signature is over auth-message.")  # fmt: skip
    entries = [(n, names[n], field_type(s), True) for n, s in AUTH_TOKEN_SCHEMA.items()]
    return _map_rule("auth-token", doc, entries)


def _frames() -> str:
    return resources.files(__package__).joinpath("frames.cddl").read_text("utf-8")


def render() -> str:
    """The whole schema (``SPEC-wire.cddl``), deterministic."""
    out = [
        "; The relay's wire API, version 1, in CDDL (RFC 8610). Normative for the shapes of",
        "; bodies (SPEC.md §10.7). Generated from e2e/platform/wire/ by `python -m e2e wire",
        "; schema`: do not edit by hand. Every body is one canonical CBOR map (RFC 8949 core",
        "; deterministic encoding: shortest heads, keys ascending, definite lengths, no tags).",
        "",
        "; ---- Endpoints: every POST with a CBOR body, in SPEC §10.7's order. Any answer other",
        "; than 200 has the body wire-error. Not here: GET /v1/health (answers ok), GET",
        "; /v1/metrics (text), POST /v1/noop (answers ok), and a blob's bytes, raw on",
        "; /v1/blobs/<blob id in hex> (PATCH answers blob-state; SPEC §10.12).",
        "",
    ]
    for e in ENDPOINTS:
        out += [*_endpoint_rules(e), ""]
    out += ["; ---- Bodies", ""]
    for cls in BODIES:
        out += body_rule(cls)
    out += _auth_rule()
    out += ["; ---- Frames the bodies carry (hand-written: e2e/platform/wire/frames.cddl)", ""]
    return "\n".join(out) + _frames()
