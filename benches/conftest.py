"""pytest-benchmark set-up for benches/: collects bench_*.py; every case is one benchmark that
measures its two sides in interleaved rounds (benches/interleave.py) and stores the rounds in
``extra_info`` for benches/check_ratios.py.

E2E_BENCH_QUICK=1 gives each case a shorter time budget (CI); the rule that decides is the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benches import interleave
from benches.check_ratios import load_bounds
from benches.workloads import SIZES, WORKLOADS, case_name

QUICK = interleave.QUICK
BOUNDS = load_bounds()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)  # given by name: pytest collects it
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def run_pair(
    benchmark: Any,
    name: str,
    a: interleave.Side,
    b: interleave.Side,
    bound: float | None,
    per_message: int = 1,
    **info: Any,
) -> interleave.Result:
    """Benchmark one case: pytest-benchmark times the whole interleaved measurement (one
    round); the per-round times of both sides, the median ratio, its interval and the verdict
    go into ``extra_info``."""
    out: list[interleave.Result] = []
    inject = interleave.injection(name)
    benchmark.group = name
    benchmark.pedantic(
        lambda: out.append(interleave.measure(a, b, bound, inject=inject)),
        rounds=1,
        iterations=1,
    )
    result = out[0]
    benchmark.extra_info.update(info)
    benchmark.extra_info.update(result.info(per_message), bound=bound)
    return result


def run_case(benchmark: Any, workload: str, suite: int, size: str) -> None:
    """One workload against its floor, interleaved; labelled for check_ratios."""
    w = WORKLOADS[workload]
    name = case_name(workload, suite, size)
    a = interleave.side(*w.e2e(suite, SIZES[size]))
    b = interleave.side(*w.floor(suite, SIZES[size]))
    run_pair(
        benchmark, name, a, b, BOUNDS["ratios"].get(name), w.messages, case=name,
        messages=w.messages, sides=["e2e", "floor"],
    )  # fmt: skip
