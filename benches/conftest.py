"""pytest-benchmark set-up for benches/: collects bench_*.py and runs each case with
``benchmark.pedantic`` (setup untimed, one call per round).

E2E_BENCH_QUICK=1 runs short rounds (CI); the ratios to the floor stay comparable because
each workload and its floor run the same number of rounds in the same run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from benches.workloads import SIZES, WORKLOADS, case_name

QUICK = os.environ.get("E2E_BENCH_QUICK", "") not in ("", "0")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)  # given by name: pytest collects it
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def rounds_for(workload: str) -> int:
    if workload == "setup":
        return 150 if QUICK else 500
    # Even quick rounds last ~30 ms per case at 256 B, so a short burst of load on a shared
    # machine cannot move a median on its own.
    return 4000 if QUICK else 10000


def run_case(benchmark: Any, workload: str, suite: int, size: str, kind: str) -> None:
    """Benchmark ``kind`` ("e2e" or "floor") of one case and label it for check_ratios."""
    w = WORKLOADS[workload]
    factory = w.e2e if kind == "e2e" else w.floor
    setup, target = factory(suite, SIZES[size])
    rounds = rounds_for(workload)
    benchmark.group = case_name(workload, suite, size)
    benchmark.extra_info.update(
        case=case_name(workload, suite, size), kind=kind, messages=w.messages
    )
    benchmark.pedantic(
        target,
        setup=lambda: (setup(), {}),
        rounds=rounds,
        warmup_rounds=max(10, rounds // 20),
        iterations=1,
    )
