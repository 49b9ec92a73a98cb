"""The catalogue's pure rules (SPEC §17.1): references, the review, rendering and the
device's content check, with hostile content."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.errors import DecodeError
from e2e.platform.policy import MessageClass, Template, check_class
from e2e.platform.templates import (
    Category,
    ParamType,
    TemplateContent,
    TemplateSpec,
    TemplateState,
    check_content,
    parse_ref,
    render,
    review,
    template_ref,
)

SPEC = TemplateSpec("order", "en_US", Category.UTILITY, "Order {{1}} costs {{2}}, due {{3}}.",
                    (ParamType.TEXT, ParamType.CURRENCY, ParamType.DATE)).checked()  # fmt: skip


def test_refs_round_trip_and_reject_lookalikes() -> None:
    ref = template_ref("order", "en_US", 12)
    assert ref == b"order.en_US.12" and parse_ref(ref) == ("order", "en_US", 12)
    for bad in (b"order.en.0", b"order.en.01", b"Order.en.1", b"order.english.1", b"order.en",
                b"a.b.c.d", b"order.en.12345", b"\xff.en.1", b"promo-1"):  # fmt: skip
        assert parse_ref(bad) is None, bad
    assert len(template_ref("a" * 20, "abc_DE", 9999)) <= 32  # fits the envelope's field


def test_render_and_check() -> None:
    params = ("A-7", "12.50 EUR", "2026-02-28")
    text = render(SPEC, params)
    assert text == "Order A-7 costs 12.50 EUR, due 2026-02-28."
    assert check_content(SPEC, TemplateContent(text, params).to_bytes()) == ""
    bad = {
        ("A-7", "12.5 EUR", "2026-02-28"): "parameter 2",
        ("A-7", "12.50 EUR", "2026-02-30"): "parameter 3",  # no such day
        ("A\n7", "12.50 EUR", "2026-02-28"): "parameter 1",
        ("{{1}}", "12.50 EUR", "2026-02-28"): "parameter 1",
        ("A-7", "12.50 EUR"): "2 parameters",
    }
    for p, why in bad.items():
        assert why in check_content(SPEC, TemplateContent(text, p).to_bytes())
        with pytest.raises(DecodeError):
            render(SPEC, p)
    other = TemplateContent(text.replace("Order", "Offer"), params).to_bytes()
    assert "not the template's" in check_content(SPEC, other)
    # Non-canonical or extra fields are not template content.
    assert check_content(SPEC, cbor2.dumps({2: list(params), 1: text})) != ""
    assert check_content(SPEC, cbor2.dumps({1: text, 2: list(params), 3: 0})) != ""
    assert check_content(SPEC, text.encode()) != ""


def test_the_class_check_uses_the_spec() -> None:
    ref = template_ref("order", "en_US", 1)
    held = {ref: Template(ref, MessageClass.TEMPLATE, b"\0" * 32, SPEC)}
    good = TemplateContent(render(SPEC, ("A", "1 EUR", "2026-01-01")), ("A", "1 EUR",
                           "2026-01-01")).to_bytes()  # fmt: skip
    assert check_class(MessageClass.TEMPLATE, ref, good, held).ok
    verdict = check_class(MessageClass.TEMPLATE, ref, b"free text", held)
    assert not verdict.ok and verdict.content is MessageClass.TEMPLATE


def test_review() -> None:
    ok = TemplateSpec("code", "en", Category.AUTHENTICATION, "Your code is {{1}}.",
                      (ParamType.CODE,))  # fmt: skip
    assert review(ok) == (TemplateState.APPROVED, "")
    for spec in (
        TemplateSpec("x", "en", Category.UTILITY, "{{1}}!", (ParamType.TEXT,)),
        TemplateSpec("x", "en", Category.UTILITY, "Hello there {{1}}{{2}}",
                     (ParamType.TEXT, ParamType.TEXT)),  # fmt: skip
        TemplateSpec("x", "en", Category.UTILITY, "Your code is {{1}}.", (ParamType.CODE,)),
        TemplateSpec("x", "en", Category.AUTHENTICATION, "Hello {{1}}, welcome", (ParamType.TEXT,)),
    ):
        assert review(spec.checked())[0] is TemplateState.REJECTED


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_hostile_content_only_typed_errors(raw: bytes) -> None:
    try:
        TemplateContent.from_bytes(raw)
    except DecodeError:
        pass
    assert isinstance(check_content(SPEC, raw), str)
