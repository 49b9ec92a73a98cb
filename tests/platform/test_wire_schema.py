"""SPEC-wire.cddl, the CDDL schema of the wire API (SPEC.md §10.7), against the code in both
directions.

* The file is what ``python -m e2e wire schema`` prints (generated from e2e.platform.wire).
* Read back through a CDDL parser (cddlparser; tests/platform/cddlmodel.py), every endpoint
  has its request and answer rule, every body's map has exactly the keys, types, bounds and
  optionality its decoder accepts, and the schema has nothing the code lacks.
* Instances made from the parsed schema alone: the valid ones decode, and each that breaks one
  constraint is refused by the decoder with a typed error of e2e.errors; a CDDL validator
  (pycddl, the Rust ``cddl`` crate) agrees on both, so the reading above is CDDL's.
* What the encoders produce validates: every body a relay scenario sends or answers, and each
  frame and signed input built by its own encoder.
"""

from __future__ import annotations

import base64
import functools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pycddl
import pytest

from e2e import prekeys
from e2e.__main__ import main
from e2e.attachment.pointer import Pointer
from e2e.errors import DecodeError, E2EError, StaleDeviceList, Unauthenticated
from e2e.frame import Field
from e2e.keys import KeyPair
from e2e.platform import certificates, directory, envelope, franking, merkle, wire
from e2e.platform.certificates import BusinessCertificate, PlatformSigner
from e2e.platform.directory import DeviceCertificate, SignedDeviceList
from e2e.platform.envelope import Delivery, Envelope, Inner, pad, unpad
from e2e.platform.franking import Report, ReportItem
from e2e.platform.merkle import SignedTreeHead, TreeHead
from e2e.platform.policy import MessageClass
from e2e.platform.wire import schema
from e2e.platform.wire.codec import F
from e2e.prekeys import PrekeyBundle
from tests.platform import cddlmodel
from tests.platform.cddlmodel import Shape
from tests.world import Service, run

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "SPEC-wire.cddl").read_text("utf-8")
MODEL = cddlmodel.read(TEXT)
FRAMES = (
    "envelope",
    "delivery",
    "inner-message",
    "signed-tree-head",
    "device-certificate",
    "signed-device-list",
    "business-certificate",
    "report",
    "report-item",
    "prekey-bundle",
)
SIGNED = ("auth-message", "patch-descriptor")


@functools.cache
def validator(rule: str) -> pycddl.Schema:
    """pycddl validates against a schema's first rule: put ``rule`` first."""
    return pycddl.Schema(f"wire-root = {rule}\n{TEXT}")


def pycddl_accepts(rule: str, raw: bytes) -> bool:
    try:
        validator(rule).validate_cbor(raw)
    except pycddl.ValidationError:
        return False
    return True


def valid_cddl(rule: str, raw: bytes) -> bool:
    """Whether ``raw`` satisfies ``rule``: the subset's validator, and pycddl agreeing."""
    ours = cddlmodel.conforms(MODEL.resolve(rule), raw)
    if ours or not _pycddl_bug(rule, raw):
        assert pycddl_accepts(rule, raw) == ours, (rule, raw[:64])
    return ours


def _pycddl_bug(rule: str, raw: bytes) -> bool:
    """pycddl 0.6.4 confuses byte strings and integers (``0..5`` accepts ``h''``, ``bstr
    .size (0..9)`` accepts ``0``): does ``raw`` hold one where the other is declared?"""
    fields = MODEL.resolve(rule)
    obj = cbor2.loads(raw)
    for k, v in obj.items() if isinstance(obj, dict) else ():
        shape = fields.get(k)
        items = v if isinstance(v, list) else [v]
        if shape is not None and any(type(i) in (int, bytes) and type(i) is not shape.kind
                                     for i in items):  # fmt: skip
            return True
    return False


def _token(raw: bytes) -> object:
    return wire.parse_auth("E2E-Device " + base64.urlsafe_b64encode(raw).rstrip(b"=").decode())


#: Rule -> the decoder a client or the relay runs on such bytes.
DECODERS: dict[str, Callable[[bytes], object]] = {
    **{schema.rule_name(c.__name__): c.from_bytes for c in schema.BODIES},
    "auth-token": _token,
    "envelope": Envelope.from_bytes,
    "delivery": Delivery.from_bytes,
    "inner-message": lambda raw: Inner.from_padded(pad(raw)),
    "signed-tree-head": SignedTreeHead.from_bytes,
    "device-certificate": DeviceCertificate.from_bytes,
    "signed-device-list": SignedDeviceList.from_bytes,
    "business-certificate": BusinessCertificate.from_bytes,
    "report": Report.from_bytes,
    "report-item": ReportItem.from_bytes,
    "prekey-bundle": PrekeyBundle.from_bytes,
}
_POINTER = Pointer(bytes(16), bytes(32), bytes(32), 10, "text/plain", "a.txt").to_bytes()
#: Fields whose bytes must be more than bytes of a length to decode (an opaque encoding).
_ITEM = ReportItem(b"delivery", bytes(32), b"text", _POINTER).to_bytes()
OVERRIDES: dict[str, dict[int, Any]] = {
    "inner-message": {9: _POINTER},
    "report-item": {4: _POINTER},
    "report": {k: _ITEM for k in range(3, 8)},
    "signed-device-list": {3: b"", 4: b""},  # packed certificates and tombstones: the encoder test
}
#: The typed error a rule's decoder refuses with (a report's own rules: ReportRejected).
REFUSAL: dict[str, type[E2EError]] = {"auth-token": Unauthenticated, "report": E2EError,
                                      "report-item": E2EError}  # fmt: skip


def test_the_file_is_the_generated_schema() -> None:
    assert TEXT == schema.render(), "SPEC-wire.cddl is stale: python -m e2e wire schema"


def test_the_command_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wire", "schema"]) == 0
    assert capsys.readouterr().out == TEXT
    out = subprocess.run([sys.executable, "-m", "e2e", "wire", "schema"], capture_output=True,
                         check=True, cwd=ROOT).stdout  # fmt: skip
    assert out.decode("utf-8") == TEXT


# -- the schema against the declarations ----------------------------------------------------


def _expected(spec: F, default: object) -> Shape:
    """The shape a declared field must have in the schema: its bounds, less the default of an
    optional field (which the decoder refuses: it is absent instead)."""
    if spec.kind is int:
        lo, hi = spec.min_int, spec.max_int
    else:
        lo, hi = spec.lo, spec.hi
    least = 0
    if not spec.required and spec.array and default == ():
        least = 1  # an empty array is the default
    elif not spec.required and spec.kind is int and default == lo:
        lo += 1
    elif not spec.required and spec.kind is int and default == hi:
        hi -= 1
    if spec.array:
        item = (spec.min_int, spec.max_int) if spec.kind is int else (spec.lo, spec.hi)
        return Shape(spec.kind, *item, array=True, least=least, most=spec.count,
                     required=spec.required)  # fmt: skip
    return Shape(spec.kind, lo, hi, required=spec.required)


def _declared(cls: type[wire.Body]) -> dict[int, Shape]:
    out = {0: Shape(int, 1, 1, constant=True)}
    for n, _name, spec, default in schema.declared(cls):
        out[n] = _expected(spec, default)
    return out


def test_every_endpoint_has_its_request_and_answer_rules() -> None:
    for e in wire.ENDPOINTS:
        stem = schema.endpoint_rule(e.path)
        assert MODEL.aliases[f"{stem}-request"] == schema.rule_name(e.request.__name__)
        assert MODEL.aliases[f"{stem}-answer"] == schema.rule_name(e.answer.__name__)
        assert MODEL.resolve(f"{stem}-request") == _declared(e.request), e.path
        assert MODEL.resolve(f"{stem}-answer") == _declared(e.answer), e.path


def test_every_body_matches_its_declaration() -> None:
    for cls in schema.BODIES:
        assert MODEL.maps[schema.rule_name(cls.__name__)] == _declared(cls), cls.__name__
    token = {n: _expected(s, None) for n, s in wire.AUTH_TOKEN_SCHEMA.items()}
    assert MODEL.maps["auth-token"] == {0: Shape(int, 1, 1, constant=True), **token}


def test_the_schema_has_nothing_the_code_lacks() -> None:
    stems = {schema.endpoint_rule(e.path) for e in wire.ENDPOINTS}
    assert set(MODEL.aliases) == {f"{s}-{w}" for s in stems for w in ("request", "answer")}
    bodies = {schema.rule_name(c.__name__) for c in schema.BODIES}
    assert set(MODEL.maps) == bodies | {"auth-token", *FRAMES, *SIGNED}


@pytest.mark.parametrize(
    ("rule", "fields"),
    [
        ("envelope", envelope._ENVELOPE_SCHEMA),
        ("delivery", envelope._DELIVERY_SCHEMA),
        ("inner-message", envelope._INNER_SCHEMA),
        ("signed-tree-head", merkle._HEAD_SCHEMA),
        ("device-certificate", directory._CERT_SCHEMA),
        ("signed-device-list", directory._LIST_SCHEMA),
        ("business-certificate", certificates._SCHEMA),
        ("report", franking._REPORT_SCHEMA),
        ("report-item", franking._ITEM_SCHEMA),
        ("prekey-bundle", prekeys._BUNDLE_SCHEMA),
    ],
)
def test_frame_rules_have_the_decoders_keys(rule: str, fields: dict[int, Field]) -> None:
    """The hand-written frame rules: the decoder's key set and types, never optional where it
    requires a key, its exact lengths and integer ceilings (what its later checks add is
    tested by the instances below)."""
    got = MODEL.maps[rule]
    assert set(got) == set(fields)
    for k, f in fields.items():
        assert got[k].kind is f.kind, (rule, k)
        assert got[k].required or not f.required, (rule, k)  # later checks may require it
        if f.kind is bytes and f.size is not None:
            assert (got[k].lo, got[k].hi) == (f.size, f.size), (rule, k)
        if f.kind is int and k:  # the decoder may narrow it (the class): never widen
            assert 0 <= got[k].lo <= got[k].hi <= f.max_int, (rule, k)


# -- instances made from the schema --------------------------------------------------------


def _encode(fields: dict[int, Any]) -> bytes:
    return cbor2.dumps(dict(sorted(fields.items())))


@pytest.mark.parametrize("rule", sorted(DECODERS))
def test_valid_instances_decode_and_validate(rule: str) -> None:
    fields = MODEL.maps[rule]
    for name, inst in cddlmodel.valid(fields, OVERRIDES.get(rule, {})).items():
        raw = _encode(inst)
        assert valid_cddl(rule, raw), (rule, name)
        DECODERS[rule](raw)  # raises if refused


@pytest.mark.parametrize("rule", sorted(DECODERS))
def test_each_broken_constraint_is_refused(rule: str) -> None:
    fields = MODEL.maps[rule]
    typed = REFUSAL.get(rule, DecodeError)
    cases = cddlmodel.broken(fields, OVERRIDES.get(rule, {}))
    assert len(cases) >= 3
    for name, inst in cases.items():
        raw = _encode(inst)
        assert not valid_cddl(rule, raw), (rule, name)
        with pytest.raises(typed):
            DECODERS[rule](raw)


def test_every_rule_across_fields_is_a_comment() -> None:
    """A body whose decoder checks a rule across its fields says so in its rule's comment."""
    across = {c.__name__ for c in schema.BODIES if "check" in vars(c) or c is wire.WireError}
    assert across == set(schema.ACROSS_FIELDS)
    prose = " ".join(TEXT.replace("\n;", " ").split())
    for name in across:
        assert f"Across fields: {schema.ACROSS_FIELDS[name]}" in prose


@pytest.mark.parametrize(
    ("cls", "change"),
    [
        (wire.TemplateList, {2: [0, 0]}),
        (wire.LogEntries, {2: [b"p", b"p"]}),
        (wire.Catalogue, {7: [b"", b""]}),
        (wire.BillLines, {5: [0, 0]}),
        (wire.BillLines, {6: [1], 7: [1], 8: [1]}),
        (wire.BillLines, {10: [1], 11: [1], 12: [1], 13: [1, 1]}),
        (wire.BillLines, {14: [b"ad", b"bd"], 15: [1]}),
        (wire.Notices, {5: [0, 0]}),
        (wire.WireError, {5: [b"a"], 6: [1]}),
        (wire.WireError, {3: [b"a"], 4: [1, 2], 5: [b"a"], 6: [1]}),
        (wire.WireError, {3: [], 4: [], 5: [], 6: []}),
    ],
)
def test_rules_across_fields_are_the_decoders(cls: type[wire.Body], change: dict) -> None:  # type: ignore[type-arg]
    """What only the comment says binds too: CDDL takes the body, the decoder refuses it."""
    rule = schema.rule_name(cls.__name__)
    every = cddlmodel.valid(MODEL.maps[rule], {})["required"]
    raw = _encode({**every, **change})
    assert valid_cddl(rule, raw)
    with pytest.raises(DecodeError):
        cls.from_bytes(raw)


def test_non_canonical_bytes_are_refused_though_cddl_cannot_say_so() -> None:
    """Canonical encoding is a rule of SPEC §5.1 stated in the schema's header comment: the
    same map with a long integer head validates as CDDL and is refused as a body."""
    raw = _encode({0: 1, 1: 5, 2: 6})
    long_head = raw.replace(b"\x05", b"\x18\x05", 1)
    assert valid_cddl("log-consistency-query", long_head)
    with pytest.raises(DecodeError):
        wire.LogConsistencyQuery.from_bytes(long_head)


# -- what the encoders produce --------------------------------------------------------------


def _rule_of(channel: str, raw: bytes) -> str:
    """The rule a tapped body must satisfy: its endpoint's, or wire-error for a refusal."""
    way, path = channel.split(":", 1)
    stem = schema.endpoint_rule(path)
    rule = f"{stem}-{'request' if way == 'recv' else 'answer'}"
    if way == "send" and not valid_cddl(rule, raw):
        return "wire-error"
    return rule


#: Rule -> {key: the frame rule of that key's bytes (or of each item of its array)}.
NESTED: dict[str, dict[int, str]] = {
    "messages-submit-request": {1: "envelope"},
    "messages-resend-request": {1: "envelope"},
    "mailbox-fetch-answer": {1: "delivery"},
    "delivery": {1: "envelope"},
    "prekeys-upload-request": {1: "prekey-bundle", 2: "prekey-bundle"},
    "prekeys-claim-answer": {1: "prekey-bundle"},
    "devices-register-request": {1: "device-certificate", 2: "signed-device-list"},
    "devices-publish-request": {1: "signed-device-list"},
    "devices-list-answer": {3: "device-certificate", 4: "signed-device-list"},
    "log-head-answer": {1: "signed-tree-head"},
    "reports-submit-request": {1: "report"},
    "reports-class-request": {1: "report-item"},
    "business-certificate-answer": {1: "business-certificate"},
}


def _check_nested(rule: str, raw: bytes, seen: set[str]) -> None:
    """``raw`` satisfies ``rule``, and so does every frame it carries (empty: none)."""
    assert valid_cddl(rule, raw), rule
    seen.add(rule)
    obj = cbor2.loads(raw)
    for key, inner in NESTED.get(rule, {}).items():
        items = obj.get(key, [])
        for item in items if isinstance(items, list) else [items]:
            if item:
                _check_nested(inner, item, seen)


def test_every_body_of_a_relay_scenario_validates(tmp_path: Path) -> None:
    """Accounts, devices, prekeys, a chat both ways, a refusal: every body the relay received
    and sent, as the tap recorded it, validates against its endpoint's rule (or wire-error),
    and every frame inside (envelopes, delivery records, bundles, certificates, device lists,
    tree heads) against its frame rule."""
    svc = Service(tmp_path)

    async def scenario() -> None:
        biz, cust = await svc.chat("shop", "alice")
        await svc.add_device(biz)
        await biz.send("alice", "hello back")
        await cust.sync()
        await cust.send("shop", "thanks")
        await biz.sync()
        with pytest.raises(E2EError):
            await cust.send("nobody-here", "?")
        await svc.aclose()

    run(scenario)
    seen: set[str] = set()
    for channel, raw in svc.tap.records:
        if channel.split(":", 1)[1] in wire.BY_PATH:
            _check_nested(_rule_of(channel, raw), raw, seen)
    assert {"messages-submit-request", "messages-submit-answer", "mailbox-fetch-answer",
            "wire-error", "envelope", "delivery", "prekey-bundle", "device-certificate",
            "signed-device-list"} <= seen, seen  # fmt: skip


def test_frames_and_signed_inputs_from_their_encoders_validate() -> None:
    ident = KeyPair.generate()
    reg = wire.RegisterAccount.create(b"shop", 1, ident, 1)
    assert valid_cddl("register-account", reg.to_bytes())
    stale = StaleDeviceList([(b"a", 1)], [(b"b", 2), (b"c", 3)])
    extra_only = StaleDeviceList([], [(b"b", 2)])
    for exc in (stale, extra_only, Unauthenticated("no"), DecodeError("bad")):
        assert valid_cddl("wire-error", wire.WireError.of(exc)[1].to_bytes())
    header = wire.sign_request(ident, b"shop", 7, "POST", "/v1/mailbox/fetch", b"\xa1\x00\x01", 1)
    token = header.split(" ", 1)[1]
    assert valid_cddl("auth-token", base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    signed = wire.auth_message("POST", "/v1/mailbox/fetch", bytes(32), b"shop", 7, 1, bytes(16))
    assert valid_cddl("auth-message", signed.removeprefix(wire.AUTH_LABEL))
    for length in (0, 99):
        assert valid_cddl("patch-descriptor", wire.patch_descriptor(bytes(16), 5, 9, length))
    env = Envelope(MessageClass.TEMPLATE, b"shop", 1, b"alice", b"alice", 2, os.urandom(16),
                   os.urandom(32), b"frame", b"tpl", bytes(16))  # fmt: skip
    assert valid_cddl("envelope", env.to_bytes())
    assert valid_cddl("delivery", Delivery(env.to_bytes(), 10, bytes(32), 3).to_bytes())
    inner = Inner(MessageClass.SERVICE, b"shop", b"alice", bytes(16), bytes(32), b"hi",
                  b"h" * 100, None, _POINTER, 4)  # fmt: skip
    assert valid_cddl("inner-message", unpad(inner.to_padded()))
    head = SignedTreeHead(TreeHead(3, bytes(32), 1000), bytes(64))
    assert valid_cddl("signed-tree-head", head.to_bytes())
    device = KeyPair.generate()
    certs = [DeviceCertificate.issue(ident, b"shop", n, device.public, n, n) for n in (1, 2)]
    for cert in certs:
        assert valid_cddl("device-certificate", cert.to_bytes())
    signed = SignedDeviceList.sign(ident, b"shop", 3, [certs[1].to_bytes()], [1])
    assert valid_cddl("signed-device-list", signed.to_bytes())
    gone = SignedDeviceList.sign(ident, b"shop", 4, [], [1, 2], deleted=True)
    assert valid_cddl("signed-device-list", gone.to_bytes())
    business = PlatformSigner().certify(b"shop", "The Shop", ident.public, 1000, 86400)
    assert valid_cddl("business-certificate", business.to_bytes())
    item = ReportItem(Delivery(env.to_bytes(), 10, bytes(32), 3).to_bytes(), bytes(32), b"hi")
    assert valid_cddl("report-item", item.to_bytes())
    assert valid_cddl("report", Report(b"alice", b"shop", (item, item)).to_bytes())
