"""The wire API's bodies (SPEC.md §10.7) as declared in e2e.platform.wire: every endpoint has
one request and one answer body; every body re-encodes to exactly the bytes it accepted; an
optional field is absent exactly when it holds its default."""

from __future__ import annotations

import dataclasses
import sys

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2e.errors import DecodeError, E2EError
from e2e.platform import wire
from e2e.platform.wire.codec import Body

ALL_BODIES = sorted(
    {e.request for e in wire.ENDPOINTS} | {e.answer for e in wire.ENDPOINTS} | {wire.WireError},
    key=lambda c: c.__name__,
)


def _every_body_class() -> set[type]:
    """Every Body subclass defined in the wire package."""
    out, todo = set(), [Body]
    while todo:
        for sub in todo.pop().__subclasses__():
            module = sys.modules[sub.__module__]
            # (a slots dataclass replaces its class: the module holds the one in use)
            if sub.__module__.startswith("e2e.platform.wire") and vars(module)[sub.__name__] is sub:
                out.add(sub)
            todo.append(sub)
    return out


def test_every_body_is_an_endpoints_request_or_answer() -> None:
    assert set(ALL_BODIES) == _every_body_class()
    assert len(wire.BY_REQUEST) == len(wire.ENDPOINTS) == len(wire.BY_PATH)
    paths = {v for k, v in vars(wire.Path).items() if k.isupper()}
    assert set(wire.BY_PATH) == paths - {wire.Path.HEALTH, wire.Path.METRICS, wire.Path.NOOP,
                                         wire.Path.AD_CONVERSIONS}  # fmt: skip
    assert {e.auth for e in wire.ENDPOINTS} == {wire.NO_AUTH, wire.DEVICE, wire.CERTIFIED}


def _value(spec: wire.F, draw: st.DrawFn) -> object:
    def one() -> object:
        if spec.kind is int:
            return draw(st.integers(spec.min_int, min(spec.max_int, 2**40)))
        return draw(st.binary(min_size=spec.lo, max_size=min(spec.hi, spec.lo + 40)))

    if spec.array:
        return [one() for _ in range(draw(st.integers(0, min(spec.count, 3))))]
    return one()


@st.composite
def body_maps(draw: st.DrawFn) -> tuple[type[Body], bytes]:
    cls = draw(st.sampled_from([c for c in ALL_BODIES if c is not wire.WireError]))
    fields = {0: 1}
    for key, spec in cls.schema().items():
        if spec.required or draw(st.booleans()):
            fields[key] = _value(spec, draw)
    return cls, cbor2.dumps(dict(sorted(fields.items())))


@given(body_maps())
def test_an_accepted_body_re_encodes_to_its_bytes(case: tuple[type[Body], bytes]) -> None:
    cls, raw = case
    try:
        body = cls.from_bytes(raw)
    except E2EError:
        return  # a rule across fields (equal lengths, an optional field at its default)
    assert body.to_bytes() == raw
    assert cls.from_bytes(body.to_bytes()) == body


def test_optional_fields_are_absent_exactly_at_their_default() -> None:
    fetch = wire.Fetch(b"alice", 1)
    assert set(cbor2.loads(fetch.to_bytes())) == {0, 1, 2}
    assert set(cbor2.loads(wire.Fetch(b"alice", 1, wait_ms=5).to_bytes())) == {0, 1, 2, 3}
    for extra in ({3: 0}, {4: wire.MAX_FETCH}):
        raw = cbor2.dumps({0: 1, 1: b"alice", 2: 1, **extra})
        with pytest.raises(DecodeError):
            wire.Fetch.from_bytes(raw)
    bill = wire.BillLines(1, (1,), (0,), (2,), (40,))
    assert set(cbor2.loads(bill.to_bytes())) == {0, 1, 2, 3, 4, 5}
    with pytest.raises(DecodeError):  # penalty columns present but empty
        wire.BillLines.from_bytes(cbor2.dumps({**cbor2.loads(bill.to_bytes()), 6: [], 7: [],
                                               8: [], 9: []}))  # fmt: skip
    with pytest.raises(DecodeError):  # columns of unequal length
        wire.BillLines.from_bytes(dataclasses.replace(bill, counts=(2, 3)).to_bytes())


def test_bool_fields_travel_as_0_and_1() -> None:
    raw = wire.PrekeyCount(3, True).to_bytes()
    assert cbor2.loads(raw) == {0: 1, 1: 3, 2: 1}
    assert wire.PrekeyCount.from_bytes(raw).last_resort is True
    with pytest.raises(DecodeError):
        wire.PrekeyCount.from_bytes(cbor2.dumps({0: 1, 1: 3, 2: 2}))


def test_error_bodies_round_trip_with_their_device_lists() -> None:
    err = wire.WireError("stale_device_list", "m", ((b"a", 1),), ((b"b", 2), (b"c", 3)))
    assert wire.WireError.from_bytes(err.to_bytes()) == err
    plain = wire.WireError("blocked", "no")
    assert wire.WireError.from_bytes(plain.to_bytes()) == plain
    with pytest.raises(DecodeError):  # some of the four lists without the others
        wire.WireError.from_bytes(cbor2.dumps({0: 1, 1: b"x", 2: b"y", 3: [b"a"], 4: [1]}))
