"""Arithmetic in GF(2^16) modulo x^16 + x^12 + x^3 + x + 1 (SPEC.md §15.7.2).

SPQR's erasure code works over this field. An element is an int in 0..65535 whose bits are
the coefficients of a polynomial over GF(2); addition (and subtraction) is XOR. The
polynomial ``x`` (the element 2) generates the multiplicative group, so multiplication and
division go through log/antilog tables built once at import (two lists, 256 KiB each).
"""

from __future__ import annotations

from typing import Final

__all__ = ["MODULUS", "ORDER", "EXP", "LOG", "mul", "div", "inv"]

#: x^16 + x^12 + x^3 + x + 1, the field's reduction polynomial.
MODULUS: Final = 0x1100B
#: Order of the multiplicative group (2^16 - 1).
ORDER: Final = 0xFFFF


def _tables() -> tuple[list[int], list[int]]:
    exp = [0] * (2 * ORDER)
    log = [0] * (ORDER + 1)
    x = 1
    for i in range(ORDER):
        exp[i] = exp[i + ORDER] = x
        log[x] = i
        x <<= 1
        if x & 0x10000:
            x ^= MODULUS
    if x != 1:  # pragma: no cover - a property of the modulus, checked once
        raise AssertionError("x does not generate GF(2^16)*")
    return exp, log


#: EXP[i] = x^i for 0 <= i < 2 * ORDER (doubled so a sum of two logs needs no reduction).
#: LOG[a] = i with x^i = a, for a != 0 (LOG[0] is unused).
EXP, LOG = _tables()


def mul(a: int, b: int) -> int:
    """a * b in the field."""
    if a == 0 or b == 0:
        return 0
    return EXP[LOG[a] + LOG[b]]


def div(a: int, b: int) -> int:
    """a / b in the field; ``b`` must not be 0."""
    if b == 0:
        raise ZeroDivisionError("division by zero in GF(2^16)")
    if a == 0:
        return 0
    return EXP[LOG[a] + ORDER - LOG[b]]


def inv(a: int) -> int:
    """1 / a in the field; ``a`` must not be 0."""
    return div(1, a)
