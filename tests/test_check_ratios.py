"""benches/check_ratios.py: ratios from one pytest-benchmark JSON, checked against bounds."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

_PATH = Path(__file__).resolve().parent.parent / "benches" / "check_ratios.py"
_spec = importlib.util.spec_from_file_location("check_ratios", _PATH)
assert _spec is not None and _spec.loader is not None
check_ratios: Any = importlib.util.module_from_spec(_spec)
sys.modules["check_ratios"] = check_ratios  # dataclasses look their module up
_spec.loader.exec_module(check_ratios)


def _bench(case: str, ratios: list[float], floor: float = 20e-6) -> dict[str, Any]:
    """A case as benches/interleave.py writes it: per-round seconds of both sides."""
    return {
        "stats": {"median": 1.0},
        "extra_info": {"case": case, "a": [r * floor for r in ratios], "b": [floor] * len(ratios)},
    }


def _run(tmp_path: Path, benches: list[dict[str, Any]], bounds: dict[str, Any]) -> int:
    report = tmp_path / "bench.json"
    report.write_text(json.dumps({"benchmarks": benches}))
    bounds_file = tmp_path / "bounds.json"
    bounds_file.write_text(json.dumps(bounds))
    code: int = check_ratios.main([str(report), "--bounds", str(bounds_file)])
    return code


BOUNDS = {"ratios": {"pq-oneway-256B": 1.3}, "state_bytes": {}}


def _spread(center: float, width: float, n: int = 101) -> list[float]:
    """n ratios evenly spread over center +- width (median = center)."""
    return [center - width + 2 * width * i / (n - 1) for i in range(n)]


def test_median_ci_is_the_binomial_order_statistic_interval() -> None:
    # n = 100 at 99 %: ranks 37 and 64 (the textbook table), median 50.5
    assert check_ratios.median_ci([float(x) for x in range(1, 101)]) == (37.0, 50.5, 64.0)
    # n = 8: P(X = 0) = 1/256 <= 0.005, so [x_(1), x_(8)]
    assert check_ratios.median_ci([float(x) for x in range(1, 9)]) == (1.0, 4.5, 8.0)
    # too few rounds for 99 %: an unbounded interval, which can decide nothing
    low, _, high = check_ratios.median_ci([1.0, 2.0, 3.0])
    assert low == float("-inf") and high == float("inf")
    # order does not matter; large n does not overflow
    xs = [float((i * 7919) % 2000) for i in range(2000)]
    low, median, high = check_ratios.median_ci(xs)
    assert low < median < high and check_ratios.median_ci(sorted(xs)) == (low, median, high)


def test_decide_pass_fail_more_warn() -> None:
    decide = check_ratios.decide
    assert decide(_spread(1.2, 0.05), 1.3, final=False).verdict == check_ratios.PASS
    assert decide(_spread(1.4, 0.05), 1.3, final=False).verdict == check_ratios.FAIL
    # the interval straddles the bound: measure more, and at the cap pass with a warning
    assert decide(_spread(1.3, 0.2), 1.3, final=False).verdict == check_ratios.MORE
    assert decide(_spread(1.3, 0.2), 1.3, final=True).verdict == check_ratios.WARN
    # a median above the bound whose interval still reaches below it is not a failure
    assert decide(_spread(1.32, 0.2), 1.3, final=True).verdict == check_ratios.WARN
    # unbounded cases always pass
    assert decide(_spread(9.0, 0.1), None, final=False).verdict == check_ratios.PASS


def test_within_bound_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, [_bench("pq-oneway-256B", _spread(1.25, 0.05))], BOUNDS) == 0
    out = capsys.readouterr().out
    assert "pq-oneway-256B" in out and "1.25" in out and "ok" in out


def test_interval_above_the_bound_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, [_bench("pq-oneway-256B", _spread(1.4, 0.05))], BOUNDS) == 1
    assert "lies above the bound" in capsys.readouterr().err


def test_a_few_slow_rounds_do_not_fail(tmp_path: Path) -> None:
    # 30 of 101 rounds hit by load (ratio 3): the median and its interval stay below 1.3
    ratios = _spread(1.2, 0.02, 71) + [3.0] * 30
    assert _run(tmp_path, [_bench("pq-oneway-256B", ratios)], BOUNDS) == 0


def test_straddling_interval_passes_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tmp_path, [_bench("pq-oneway-256B", _spread(1.31, 0.3))], BOUNDS) == 0
    captured = capsys.readouterr()
    assert "WARNING pq-oneway-256B" in captured.err and "straddles the bound" in captured.err
    assert "1 with a warning" in captured.out


def test_bounded_case_missing_from_the_run_fails(tmp_path: Path) -> None:
    assert _run(tmp_path, [_bench("pq-encrypt-256B", _spread(1.0, 0.1))], BOUNDS) == 1


def test_unpaired_or_empty_rounds_fail(tmp_path: Path) -> None:
    half = _bench("pq-oneway-256B", _spread(1.0, 0.1))
    half["extra_info"]["b"] = half["extra_info"]["b"][:-1]
    assert _run(tmp_path, [half], BOUNDS) == 1
    empty = _bench("pq-oneway-256B", [])
    assert _run(tmp_path, [empty], BOUNDS) == 1


def test_decides_on_per_round_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the load changed halfway (both sides twice as slow): every round pair still says 1.2
    a = [12e-6] * 50 + [24e-6] * 51
    b = [10e-6] * 50 + [20e-6] * 51
    bench = {"stats": {}, "extra_info": {"case": "pq-oneway-256B", "a": a, "b": b}}
    assert _run(tmp_path, [bench], {"ratios": {"pq-oneway-256B": 1.21}, "state_bytes": {}}) == 0
    assert "1.20–1.20" in capsys.readouterr().out
    assert _run(tmp_path, [bench], {"ratios": {"pq-oneway-256B": 1.19}, "state_bytes": {}}) == 1


def test_state_size_bound(tmp_path: Path) -> None:
    benches = [
        _bench("pq-oneway-256B", _spread(1.2, 0.05)),
        {"stats": {"median": 1e-6}, "extra_info": {"state_bytes": {"pq-idle": 2049}}},
    ]
    assert _run(tmp_path, benches, {**BOUNDS, "state_bytes": {"pq-idle": 2048}}) == 1
    assert _run(tmp_path, benches, {**BOUNDS, "state_bytes": {"pq-idle": 4096}}) == 0
    assert _run(tmp_path, benches, {**BOUNDS, "state_bytes": {"pq-other": 4096}}) == 1


def test_memory_bound(tmp_path: Path) -> None:
    """A peak memory over its bound fails the gate, as does one bounded but not measured."""
    benches = [
        _bench("pq-oneway-256B", _spread(1.2, 0.05)),
        {"stats": {}, "extra_info": {"memory_bytes": {"attachment-1GiB-peak": 3 << 20}}},
    ]
    assert (
        _run(tmp_path, benches, {**BOUNDS, "memory_bytes": {"attachment-1GiB-peak": 2 << 20}}) == 1
    )
    assert (
        _run(tmp_path, benches, {**BOUNDS, "memory_bytes": {"attachment-1GiB-peak": 4 << 20}}) == 0
    )
    assert _run(tmp_path, benches, {**BOUNDS, "memory_bytes": {"attachment-other": 4 << 20}}) == 1


def test_peers_table_reports_ratios_and_a_peer_that_failed() -> None:
    spec = importlib.util.spec_from_file_location("peers", _PATH.with_name("peers.py"))
    assert spec is not None and spec.loader is not None
    peers: Any = importlib.util.module_from_spec(spec)
    sys.modules["peers"] = peers
    spec.loader.exec_module(peers)
    row = {
        "e2e_us": 10.0, "peer_us": 20.0, "ratio": 0.5, "iqr": [0.45, 0.55], "ci": [0.48, 0.52],
    }  # fmt: skip
    results = {"vodozemac": {w: row for w in peers.WORKLOADS}, "python-axolotl": "no wheel"}
    lines = peers.table(results).splitlines()
    assert len(lines) == 2 + len(peers.WORKLOADS)
    assert all("no wheel" in line for line in lines[2:])
    assert all(
        "10.0 / 20.0" in line and "**0.50** [0.45–0.55] (0.48–0.52)" in line for line in lines[2:]
    )


def _provider(case: str, ratios: list[float]) -> dict[str, Any]:
    bench = _bench("", ratios, 40e-6)
    del bench["extra_info"]["case"]
    bench["extra_info"]["provider_case"] = case
    return bench


def test_provider_choice_bound(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = [_bench("pq-oneway-256B", _spread(1.25, 0.05))]
    bounds = {**BOUNDS, "providers": {"provider-x25519_dh": 1.0}}
    faster = [_provider("provider-x25519_dh", _spread(0.75, 0.05))]
    assert _run(tmp_path, base + faster, bounds) == 0
    assert "0.75" in capsys.readouterr().out
    slower = [_provider("provider-x25519_dh", _spread(1.1, 0.05))]
    assert _run(tmp_path, base + slower, bounds) == 1  # the other library became faster
    assert _run(tmp_path, base + faster, BOUNDS) == 1  # a provider case without a bound
    half = _provider("provider-x25519_dh", _spread(0.75, 0.05))
    half["extra_info"]["b"] = []
    assert _run(tmp_path, base + [half], bounds) == 1  # unpaired rounds
    assert _run(tmp_path, base, bounds) == 0  # skipped here (library unavailable): not a failure


def test_provider_near_tie_is_printed_not_gated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [_bench("pq-oneway-256B", _spread(1.25, 0.05))]
    bounds = {**BOUNDS, "providers": {"provider-sha512": None}}
    for ratio in (0.9, 1.2):
        tie = [_provider("provider-sha512", _spread(ratio, 0.05))]
        assert _run(tmp_path, base + tie, bounds) == 0
        assert f"{ratio:.2f}" in capsys.readouterr().out
    unlisted = {**BOUNDS, "providers": {}}
    tie = [_provider("provider-sha512", _spread(0.9, 0.05))]
    assert _run(tmp_path, base + tie, unlisted) == 1  # null is a decision; absent is not


def test_every_provider_case_is_bounded_and_names_where_e2e_uses_it() -> None:
    from benches.providers import CHOICES, case_name

    bounds = check_ratios.load_bounds()["providers"]
    assert sorted(bounds) == sorted(case_name(n) for n in CHOICES)
    root = _PATH.parent.parent
    for choice in CHOICES.values():
        source = (root / choice.used_in).read_text()
        assert choice.call in source, f"{choice.name}: {choice.used_in} no longer makes the call"
        imports = {"PyNaCl": "nacl", "cryptography": "from cryptography"}[choice.chosen]
        assert imports in source, f"{choice.name}: {choice.used_in} does not use {choice.chosen}"
