"""benches/check_ratios.py: ratios from one pytest-benchmark JSON, checked against bounds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

_PATH = Path(__file__).resolve().parent.parent / "benches" / "check_ratios.py"
_spec = importlib.util.spec_from_file_location("check_ratios", _PATH)
assert _spec is not None and _spec.loader is not None
check_ratios: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_ratios)


def _bench(case: str, kind: str, median: float, messages: int = 1) -> dict[str, Any]:
    return {
        "stats": {"median": median, "min": median / 2},
        "extra_info": {"case": case, "kind": kind, "messages": messages},
    }


def _run(tmp_path: Path, benches: list[dict[str, Any]], bounds: dict[str, Any]) -> int:
    report = tmp_path / "bench.json"
    report.write_text(json.dumps({"benchmarks": benches}))
    bounds_file = tmp_path / "bounds.json"
    bounds_file.write_text(json.dumps(bounds))
    code: int = check_ratios.main([str(report), "--bounds", str(bounds_file)])
    return code


BOUNDS = {"stat": "median", "ratios": {"pq-oneway-256B": 1.3}, "state_bytes": {}}


def test_within_bound_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    benches = [_bench("pq-oneway-256B", "e2e", 25e-6), _bench("pq-oneway-256B", "floor", 20e-6)]
    assert _run(tmp_path, benches, BOUNDS) == 0
    out = capsys.readouterr().out
    assert "pq-oneway-256B" in out and "1.25" in out


def test_ratio_over_bound_fails(tmp_path: Path) -> None:
    benches = [_bench("pq-oneway-256B", "e2e", 27e-6), _bench("pq-oneway-256B", "floor", 20e-6)]
    assert _run(tmp_path, benches, BOUNDS) == 1


def test_bounded_case_missing_from_the_run_fails(tmp_path: Path) -> None:
    benches = [_bench("pq-encrypt-256B", "e2e", 1e-6), _bench("pq-encrypt-256B", "floor", 1e-6)]
    assert _run(tmp_path, benches, BOUNDS) == 1


def test_floor_missing_fails(tmp_path: Path) -> None:
    assert _run(tmp_path, [_bench("pq-oneway-256B", "e2e", 25e-6)], BOUNDS) == 1


def test_uses_the_configured_statistic_and_messages(tmp_path: Path) -> None:
    # medians: 15 / 10 us per message = 1.5 > 1.3; mins: 12.5 / 10 = 1.25 <= 1.3
    benches = [
        _bench("pq-oneway-256B", "e2e", 30e-6, messages=2),
        _bench("pq-oneway-256B", "floor", 20e-6, messages=2),
    ]
    benches[0]["stats"]["min"] = 25e-6
    benches[1]["stats"]["min"] = 20e-6
    assert _run(tmp_path, benches, BOUNDS) == 1
    assert _run(tmp_path, benches, {**BOUNDS, "stat": "min"}) == 0


def test_state_size_bound(tmp_path: Path) -> None:
    benches = [
        _bench("pq-oneway-256B", "e2e", 25e-6),
        _bench("pq-oneway-256B", "floor", 20e-6),
        {"stats": {"median": 1e-6}, "extra_info": {"state_bytes": {"pq-idle": 2049}}},
    ]
    assert _run(tmp_path, benches, {**BOUNDS, "state_bytes": {"pq-idle": 2048}}) == 1
    assert _run(tmp_path, benches, {**BOUNDS, "state_bytes": {"pq-idle": 4096}}) == 0
    assert _run(tmp_path, benches, {**BOUNDS, "state_bytes": {"pq-other": 4096}}) == 1


def test_peers_table_reports_a_peer_that_failed() -> None:
    spec = importlib.util.spec_from_file_location("peers", _PATH.with_name("peers.py"))
    assert spec is not None and spec.loader is not None
    peers: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    ours = {s: {w: 10.0 for w in peers.WORKLOADS} for s in ("pq", "signal")}
    fast = {w: 5.0 for w in peers.WORKLOADS}
    table = peers.table(ours, {"vodozemac": fast, "python-axolotl": "install failed: no wheel"})
    lines = table.splitlines()
    assert len(lines) == 2 + len(peers.WORKLOADS)
    assert all("install failed: no wheel" in line for line in lines[2:])
    assert all("5.0 (0.50×)" in line for line in lines[2:])


def _provider(case: str, kind: str, median: float) -> dict[str, Any]:
    return {"stats": {"median": median}, "extra_info": {"provider_case": case, "kind": kind}}


def test_provider_choice_bound(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = [_bench("pq-oneway-256B", "e2e", 25e-6), _bench("pq-oneway-256B", "floor", 20e-6)]
    bounds = {**BOUNDS, "providers": {"provider-x25519_dh": 1.0}}
    faster = [_provider("provider-x25519_dh", "chosen", 30e-6)]
    faster.append(_provider("provider-x25519_dh", "other", 40e-6))
    assert _run(tmp_path, base + faster, bounds) == 0
    assert "0.75" in capsys.readouterr().out
    slower = [_provider("provider-x25519_dh", "chosen", 44e-6), faster[1]]
    assert _run(tmp_path, base + slower, bounds) == 1  # the other library became faster
    assert _run(tmp_path, base + faster, BOUNDS) == 1  # a provider case without a bound
    assert _run(tmp_path, base + faster[:1], bounds) == 1  # half a pair
    assert _run(tmp_path, base, bounds) == 0  # skipped here (library unavailable): not a failure


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
