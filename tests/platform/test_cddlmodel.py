"""The CDDL subset reader and validator of tests/platform/cddlmodel.py, on small schemas whose
meaning RFC 8610 fixes (§2.1 maps are closed, §3.2 occurrence, §3.8.1 ``.size``, §3.2 ranges),
each answer cross-checked with pycddl where pycddl is right (pycddl 0.6.4 confuses byte
strings with integers and with text under ``.size``)."""

from __future__ import annotations

import cbor2
import pycddl
import pytest

from tests.platform import cddlmodel
from tests.platform.cddlmodel import Shape

SCHEMA = """
root = thing
thing = {
  0: 1,
  1: bstr .size (2..4),
  ? 2: 10..20,
  3: [1*3 bstr .size 1],
  ? 4: bstr,
}
alias = thing
"""


def test_reads_the_subset() -> None:
    model = cddlmodel.read(SCHEMA)
    assert model.aliases == {"root": "thing", "alias": "thing"}
    assert model.resolve("alias") == {
        0: Shape(int, 1, 1, constant=True),
        1: Shape(bytes, 2, 4),
        2: Shape(int, 10, 20, required=False),  # "?" is 0 or 1 (RFC 8610 §3.2)
        3: Shape(bytes, 1, 1, array=True, least=1, most=3),
        4: Shape(bytes, 0, None, required=False),
    }


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ({0: 1, 1: b"ab", 3: [b"x"]}, True),
        ({0: 1, 1: b"abcd", 2: 20, 3: [b"x"] * 3, 4: b""}, True),
        ({0: 1, 1: b"ab", 3: [b"x"], 9: 0}, False),  # closed map
        ({0: 2, 1: b"ab", 3: [b"x"]}, False),  # constant
        ({0: 1, 1: b"a", 3: [b"x"]}, False),  # .size below
        ({0: 1, 1: b"abcde", 3: [b"x"]}, False),  # .size above
        ({0: 1, 1: b"ab", 2: 21, 3: [b"x"]}, False),  # range
        ({0: 1, 1: b"ab", 2: 9, 3: [b"x"]}, False),
        ({0: 1, 1: b"ab", 3: []}, False),  # occurrence 1*3
        ({0: 1, 1: b"ab", 3: [b"x"] * 4}, False),
        ({0: 1, 1: b"ab", 3: [b"xy"]}, False),  # item size
        ({0: 1, 1: b"ab"}, False),  # required key
        ({0: 1, 1: "ab", 3: [b"x"]}, False),  # text is not bstr (pycddl 0.6.4 takes it)
        ([1], False),
    ],
)
def test_validates_as_cddl_says(value: object, ok: bool) -> None:
    raw = cbor2.dumps(value)
    fields = cddlmodel.read(SCHEMA).resolve("thing")
    assert cddlmodel.conforms(fields, raw) is ok
    try:
        pycddl.Schema(SCHEMA).validate_cbor(raw)
        theirs = True
    except pycddl.ValidationError:
        theirs = False
    if not (isinstance(value, dict) and isinstance(value.get(1), str)):
        assert theirs is ok


@pytest.mark.parametrize(
    "text",
    [
        "a = { 1: uint / bstr }",  # a type choice
        "a = { 1: tstr }",  # a type outside the subset
        "a = { * 1: 0..5 }",  # an occurrence other than ?
        "a = { 1: [* 0..5] }",  # an unbounded array
        "a = { 1: bstr .cbor b }\nb = {0: 1}",  # a control other than .size
        "a = [ 1, 2 ]",  # a rule that is neither a map nor a name
    ],
)
def test_refuses_what_it_does_not_understand(text: str) -> None:
    with pytest.raises(ValueError):
        cddlmodel.read(text)


def test_broken_instances_each_break_one_rule() -> None:
    fields = cddlmodel.read(SCHEMA).resolve("thing")
    for name, inst in cddlmodel.valid(fields, {}).items():
        assert cddlmodel.conforms(fields, cbor2.dumps(inst)), name
    broken = cddlmodel.broken(fields, {})
    assert {"1 missing", "3 one item too many", "3 one item too few", "1 one byte too long",
            "1 one byte too short", "2 above range", "2 below range", "unknown key",
            "0 another constant"} <= set(broken)  # fmt: skip
    for name, inst in broken.items():
        assert not cddlmodel.conforms(fields, cbor2.dumps(inst)), name
