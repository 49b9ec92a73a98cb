"""PQXDH (suite 3) session set-up with the first message, and floors."""

from __future__ import annotations

from typing import Any

import pytest

from benches.conftest import run_case
from benches.workloads import SUITE_NAMES, cases, established
from e2e import PQ, KeyPair, LocalPrekeys, Session
from e2e.suite import get_suite

CASES = [c for c in cases() if c[0] == "setup"]


@pytest.mark.parametrize(("workload", "suite", "size"), CASES, ids=lambda v: str(v))
def test_setup(benchmark: Any, workload: str, suite: int, size: str) -> None:
    run_case(benchmark, workload, suite, size)


@pytest.mark.parametrize("suite", [PQ.id], ids=["pq"])
def test_idle_state(benchmark: Any, suite: int) -> None:
    """Serialize an idle established session; records its size for check_ratios."""
    alice, bob = established(suite)
    name = SUITE_NAMES[suite]
    keys = LocalPrekeys.generate(KeyPair.generate(), get_suite(suite), one_time=1)
    waiting = Session.initiate(
        KeyPair.generate(), keys.bundle().to_bytes(), allowed_suites=(get_suite(suite),)
    )
    waiting.encrypt(b"hi")  # sent, no reply yet: it still holds its prekey fields
    benchmark.group = f"{name}-state"
    benchmark.extra_info["state_bytes"] = {
        f"{name}-idle-initiator": len(alice.to_bytes()),
        f"{name}-idle-responder": len(bob.to_bytes()),
        f"{name}-initiator-awaiting-reply": len(waiting.to_bytes()),
    }
    benchmark(alice.to_bytes)
