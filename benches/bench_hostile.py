"""Hostile input (issue 11): what a rejected frame costs, in normal decrypts of its suite.

Each case times e2e rejecting a forged or altered frame (side A) against e2e decrypting the
next in-order message of the same suite and size (side B, the ``decrypt`` workload); the
bound in benches/bounds.json is 10 (SPEC.md §12, "Bounded cost of hostile input").
"""

from __future__ import annotations

from typing import Any

import pytest

from benches.conftest import BOUNDS, run_pair
from benches.interleave import side
from benches.workloads import HOSTILE, SIZES, WORKLOADS, case_name, cases

CASES = [c for c in cases() if c[0] in HOSTILE]


@pytest.mark.parametrize(("workload", "suite", "size"), CASES, ids=lambda v: str(v))
def test_hostile(benchmark: Any, workload: str, suite: int, size: str) -> None:
    w = WORKLOADS[workload]
    name = case_name(workload, suite, size)
    a = side(*w.e2e(suite, SIZES[size]))
    b = side(*w.floor(suite, SIZES[size]))
    run_pair(
        benchmark, name, a, b, BOUNDS["ratios"].get(name), w.messages, case=name,
        messages=w.messages, sides=["e2e rejecting", "e2e normal decrypt"],
    )  # fmt: skip
