"""Message frame encoding and strict decoding; the floor is plain cbor2 dumps / loads."""

from __future__ import annotations

from typing import Any

import pytest

from benches.conftest import run_case
from benches.workloads import cases

CASES = [c for c in cases() if c[0] in ("frame_encode", "frame_decode")]


@pytest.mark.parametrize(("workload", "suite", "size"), CASES, ids=lambda v: str(v))
def test_frame(benchmark: Any, workload: str, suite: int, size: str) -> None:
    run_case(benchmark, workload, suite, size)
