"""Per-message workloads of an established session, and their floors."""

from __future__ import annotations

from typing import Any

import pytest

from benches.conftest import run_case
from benches.workloads import cases

MESSAGE_WORKLOADS = ("encrypt", "decrypt", "oneway", "out_of_order", "ping_pong")
CASES = [c for c in cases() if c[0] in MESSAGE_WORKLOADS]


@pytest.mark.parametrize(("workload", "suite", "size"), CASES, ids=lambda v: str(v))
def test_message(benchmark: Any, workload: str, suite: int, size: str) -> None:
    run_case(benchmark, workload, suite, size)
