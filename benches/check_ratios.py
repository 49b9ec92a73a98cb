"""Check each workload's ratio to its floor from one interleaved pytest-benchmark run.

    pytest benches/ --benchmark-only --benchmark-json=bench.json
    python benches/check_ratios.py bench.json [--markdown]

Every case of benches/ measures two things in alternating rounds in one process (a workload
and its floor, a 100k-session store and a 1k-session one, e2e's provider choice and the other
library) and writes the per-round times of both sides into the benchmark's ``extra_info``
(see benches/interleave.py). This script takes the ratio of each round pair, and decides on
the MEDIAN of those ratios with a distribution-free confidence interval (order statistics of
the binomial, :func:`median_ci`):

* the whole interval lies above the bound: FAIL;
* the whole interval lies at or below the bound: pass;
* the interval straddles the bound: the harness has already measured more rounds (up to its
  time cap); if it still straddles, the case PASSES WITH A WARNING. A gate that cannot tell
  is not allowed to block a landing; a real regression moves the whole interval.

It also exits 1 when a bounded case is missing from the run, when a serialized idle session
is larger than its bound, or when a measured peak memory (``memory_bytes``) is over its
bound. Absolute times are printed, never checked.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BOUNDS_FILE = Path(__file__).with_name("bounds.json")

#: Two-sided confidence of the interval around the median ratio. A case whose true median
#: ratio sits at its bound fails (interval wholly above) with probability <= 0.5 %.
CONFIDENCE = 0.99

PASS, FAIL, MORE, WARN = "pass", "FAIL", "more", "pass (warning: straddles the bound)"


def load_bounds(path: Path = BOUNDS_FILE) -> dict[str, Any]:
    bounds: dict[str, Any] = json.loads(path.read_text())
    return bounds


def median_ci(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(low, median, high): the sample median and a distribution-free confidence interval for
    the population median, [x_(k), x_(n+1-k)] of the sorted sample with the largest k such
    that P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2. With too few values for that
    confidence the interval is the whole sample range (and wider than any bound can decide).
    """
    if not values:
        raise ValueError("no values")
    xs = sorted(values)
    n = len(xs)
    tail = (1.0 - confidence) / 2.0
    k, cumulative = 0, 0.0
    while k < n:
        # P(X = k), in logs: 2**n overflows a float beyond n = 1023
        p = math.exp(
            math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)
        )
        if cumulative + p > tail:
            break
        cumulative += p
        k += 1
    # k = number of order statistics that may be cut from each end; 1-indexed x_(k) = xs[k-1]
    if k == 0:
        return -math.inf, statistics.median(xs), math.inf
    return xs[k - 1], statistics.median(xs), xs[n - k]


@dataclass(frozen=True)
class Decision:
    verdict: str  # PASS, FAIL, MORE or WARN
    low: float
    median: float
    high: float


def decide(
    ratios: list[float], bound: float | None, final: bool, confidence: float = CONFIDENCE
) -> Decision:
    """The gate's rule on per-round ratios: FAIL when the interval lies wholly above the bound,
    PASS when wholly at or below it (or unbounded), otherwise MORE rounds, or at the cap
    (``final``) WARN, which passes."""
    low, median, high = median_ci(ratios, confidence)
    if bound is None or high <= bound:
        return Decision(PASS, low, median, high)
    if low > bound:
        return Decision(FAIL, low, median, high)
    return Decision(WARN if final else MORE, low, median, high)


@dataclass(frozen=True)
class Row:
    case: str
    a_us: float  # median per-message time of side A (e2e / 100k store / chosen provider)
    b_us: float  # the same for side B (floor / 1k store / other provider)
    decision: Decision
    rounds: int
    bound: float | None


def ratios_of(info: dict[str, Any]) -> tuple[list[float], list[float], list[float]]:
    """(A seconds per message per round, B ..., A/B per round) from a case's extra_info."""
    a = [float(x) for x in info["a"]]
    b = [float(x) for x in info["b"]]
    if len(a) != len(b) or not a:
        raise ValueError("unpaired rounds")
    return a, b, [x / y for x, y in zip(a, b, strict=True)]


def evaluate(info: dict[str, Any], bound: float | None) -> Row:
    a, b, ratios = ratios_of(info)
    name = info.get("case") or info["provider_case"]
    d = decide(ratios, bound, final=True)
    return Row(name, statistics.median(a) * 1e6, statistics.median(b) * 1e6, d, len(a), bound)


def collect(report: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, int], list[Any]]:
    """(workload cases' extra_info, state or memory name -> bytes, provider cases'
    extra_info)."""
    cases, providers = [], []
    sizes: dict[str, int] = {}
    for bench in report["benchmarks"]:
        info = bench.get("extra_info", {})
        for name, value in info.get("state_bytes", {}).items():
            sizes[name] = int(value)
        for name, value in info.get("memory_bytes", {}).items():
            sizes[name] = int(value)
        if "case" in info:
            cases.append(info)
        elif "provider_case" in info:
            providers.append(info)
    return cases, sizes, providers


def _fmt_row(row: Row, markdown: bool) -> str:
    d = row.decision
    ci = f"{d.low:.2f}–{d.high:.2f}" if math.isfinite(d.low) else "n/a"
    verdict = {PASS: "ok", FAIL: "FAIL", WARN: "warn"}.get(d.verdict, d.verdict)
    if markdown:
        b = "" if row.bound is None else f"≤ {row.bound}"
        mark = {"ok": "", "FAIL": " ✗", "warn": " (?)"}[verdict]
        return (
            f"| {row.case} | {row.a_us:.1f} | {row.b_us:.1f} | {d.median:.2f}{mark} | {ci} "
            f"| {row.rounds} | {b} |"
        )
    b = "" if row.bound is None else f"{row.bound:.2f}"
    return (
        f"{row.case:28} {row.a_us:10.1f} {row.b_us:10.1f} {d.median:6.2f} {ci:>11} "
        f"{row.rounds:6d} {b:>6} {verdict}"
    )


def _header(first: str, a: str, b: str, markdown: bool) -> list[str]:
    if markdown:
        return [
            f"| {first} | {a} | {b} | median ratio | 99 % CI | rounds | bound |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
    return [f"{first:28} {a:>10} {b:>10} {'ratio':>6} {'99% CI':>11} {'rounds':>6} {'bound':>6}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark --benchmark-json output")
    parser.add_argument("--bounds", type=Path, default=BOUNDS_FILE)
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args(argv)
    bounds = load_bounds(args.bounds)
    cases, sizes, providers = collect(json.loads(args.json.read_text()))
    ratio_bounds: dict[str, float] = bounds["ratios"]
    failures: list[str] = []
    warnings: list[str] = []

    rows: list[Row] = []
    for info in cases:
        try:
            rows.append(evaluate(info, ratio_bounds.get(info["case"])))
        except (KeyError, ValueError) as exc:
            failures.append(f"{info['case']}: no paired rounds ({exc})")
    rows.sort(key=lambda r: _order(r.case))
    seen = {r.case for r in rows}
    for case in ratio_bounds:
        if case not in seen:
            failures.append(f"{case}: bounded but not in this run")

    print("\n".join(_header("workload", "e2e µs/msg", "floor µs/msg", args.markdown)))
    for row in rows:
        print(_fmt_row(row, args.markdown))
    failures += [_failure(r) for r in rows if r.decision.verdict == FAIL]
    warnings += [_warning(r) for r in rows if r.decision.verdict == WARN]

    byte_bounds = [("state", "serialized", bounds.get("state_bytes", {}))]
    byte_bounds.append(("memory", "peak memory of", bounds.get("memory_bytes", {})))
    for kind, label, limits in byte_bounds:
        for name, limit in limits.items():
            size = sizes.get(name)
            if size is None:
                failures.append(f"{kind} {name}: not measured in this run")
                continue
            verdict = "ok" if size <= limit else "FAIL"
            print(f"{label} {name}: {size} bytes (bound {limit}) {verdict}")
            if size > limit:
                failures.append(f"{kind} {name}: {size} bytes > {limit}")
    bounded = {name for _, _, limits in byte_bounds for name in limits}
    for name, size in sorted(sizes.items()):
        if name not in bounded:
            print(f"measured {name}: {size} bytes (not bounded)")

    p_rows, p_failures = check_providers(providers, bounds.get("providers", {}), args.markdown)
    failures += p_failures
    warnings += [_warning(r) for r in p_rows if r.decision.verdict == WARN]

    for warning in warnings:
        print(f"WARNING {warning}", file=sys.stderr)
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    within = sum(1 for r in rows + p_rows if r.decision.verdict != FAIL)
    print(f"{within} within bounds ({len(warnings)} with a warning), {len(failures)} failed")
    return 1 if failures else 0


def _failure(row: Row) -> str:
    d = row.decision
    return (
        f"{row.case}: median ratio {d.median:.2f}, 99 % interval {d.low:.2f}–{d.high:.2f} "
        f"lies above the bound {row.bound} ({row.rounds} rounds)"
    )


def _warning(row: Row) -> str:
    d = row.decision
    return (
        f"{row.case}: median ratio {d.median:.2f}, 99 % interval {d.low:.2f}–{d.high:.2f} "
        f"straddles the bound {row.bound} after {row.rounds} rounds: passed, undecided"
    )


def check_providers(
    providers: list[dict[str, Any]], bounds: dict[str, float], markdown: bool
) -> tuple[list[Row], list[str]]:
    """Print e2e's provider choice per operation against the other library's (A = chosen,
    B = other); return the rows and the failures.

    A provider case may be missing (skipped where the other library cannot run it), but one
    that ran must be listed in bounds.json and keep chosen / other within its bound; a bound
    of ``null`` marks a near tie, measured and printed but never a pass/fail row.
    """
    rows: list[Row] = []
    failures: list[str] = []
    for info in providers:
        case = info["provider_case"]
        bound = bounds.get(case)
        if case not in bounds:
            failures.append(f"{case}: no bound in bounds.json")
        try:
            rows.append(evaluate(info, bound))
        except (KeyError, ValueError) as exc:
            failures.append(f"{case}: no paired rounds ({exc})")
    rows.sort(key=lambda r: r.case)
    if rows:
        print()
        print("\n".join(_header("operation", "chosen µs", "other µs", markdown)))
    for row in rows:
        print(_fmt_row(row, markdown))
    failures += [_failure(r) for r in rows if r.decision.verdict == FAIL]
    return rows, failures


_WORKLOAD_ORDER = [
    "oneway", "encrypt", "decrypt", "out_of_order", "ping_pong", "setup",
    "frame_encode", "frame_decode", "store", "state",
]  # fmt: skip


def _order(case: str) -> tuple[int, str, int]:
    suite, workload, size = case.split("-", 2)
    rank = _WORKLOAD_ORDER.index(workload) if workload in _WORKLOAD_ORDER else 99
    units = {"B": 1, "KiB": 1024, "MiB": 1 << 20}
    number = size.rstrip("BKMi")
    unit = size[len(number) :]
    return rank, suite, int(number) * units.get(unit, 1) if number.isdigit() else 0


if __name__ == "__main__":
    sys.exit(main())
