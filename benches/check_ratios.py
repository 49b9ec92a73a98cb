"""Check each workload's ratio to its floor from one pytest-benchmark run.

    pytest benches/ --benchmark-only --benchmark-json=bench.json
    python benches/check_ratios.py bench.json [--markdown]

Reads the JSON that run wrote, pairs every e2e workload with its floor measured in the
SAME run (never a stored baseline), prints a table of per-message times and ratios, and
exits 1 when a ratio passes its bound in benches/bounds.json, when a bounded workload is
missing from the run, or when a serialized idle session is larger than its bound.
Absolute times are printed, never checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BOUNDS_FILE = Path(__file__).with_name("bounds.json")


def load_bounds(path: Path = BOUNDS_FILE) -> dict[str, Any]:
    bounds: dict[str, Any] = json.loads(path.read_text())
    return bounds


Times = dict[str, dict[str, float]]


def collect(report: dict[str, Any], stat: str) -> tuple[Times, dict[str, int], Times]:
    """(case -> {"e2e": seconds per message, "floor": ...}, state name -> bytes,
    provider case -> {"chosen": seconds per call, "other": ...})."""
    times: dict[str, dict[str, float]] = {}
    sizes: dict[str, int] = {}
    providers: dict[str, dict[str, float]] = {}
    for bench in report["benchmarks"]:
        info = bench.get("extra_info", {})
        for name, value in info.get("state_bytes", {}).items():
            sizes[name] = int(value)
        if "provider_case" in info:
            providers.setdefault(info["provider_case"], {})[info["kind"]] = bench["stats"][stat]
        if "case" not in info:
            continue
        per_message = bench["stats"][stat] / info.get("messages", 1)
        times.setdefault(info["case"], {})[info["kind"]] = per_message
    return times, sizes, providers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark --benchmark-json output")
    parser.add_argument("--bounds", type=Path, default=BOUNDS_FILE)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    bounds = load_bounds(args.bounds)
    stat = bounds.get("stat", "median")
    times, sizes, providers = collect(json.loads(args.json.read_text()), stat)
    ratio_bounds: dict[str, float] = bounds["ratios"]
    failures: list[str] = []

    rows = []
    for case in sorted(times, key=_order):
        pair = times[case]
        if "e2e" not in pair or "floor" not in pair:
            failures.append(f"{case}: e2e or floor result missing")
            continue
        ratio = pair["e2e"] / pair["floor"]
        bound = ratio_bounds.get(case)
        ok = bound is None or ratio <= bound
        if not ok:
            failures.append(f"{case}: ratio {ratio:.2f} > bound {bound}")
        rows.append((case, pair["e2e"] * 1e6, pair["floor"] * 1e6, ratio, bound, ok))
    for case in ratio_bounds:
        if case not in times:
            failures.append(f"{case}: bounded but not in this run")

    if args.markdown:
        print("| workload | e2e µs/msg | floor µs/msg | ratio | bound |")
        print("|---|---:|---:|---:|---:|")
        for case, e2e, fl, ratio, bound, ok in rows:
            b = "" if bound is None else f"≤ {bound}"
            print(f"| {case} | {e2e:.1f} | {fl:.1f} | {ratio:.2f}{'' if ok else ' ✗'} | {b} |")
    else:
        print(f"{'workload':28} {'e2e us':>10} {'floor us':>10} {'ratio':>6} {'bound':>6}")
        for case, e2e, fl, ratio, bound, ok in rows:
            b = "" if bound is None else f"{bound:.2f}"
            mark = "" if ok else "  FAIL"
            print(f"{case:28} {e2e:10.1f} {fl:10.1f} {ratio:6.2f} {b:>6}{mark}")

    for name, limit in bounds.get("state_bytes", {}).items():
        size = sizes.get(name)
        if size is None:
            failures.append(f"state {name}: not measured in this run")
            continue
        verdict = "ok" if size <= limit else "FAIL"
        print(f"serialized {name}: {size} bytes (bound {limit}) {verdict}")
        if size > limit:
            failures.append(f"state {name}: {size} bytes > {limit}")
    for name, size in sorted(sizes.items()):
        if name not in bounds.get("state_bytes", {}):
            print(f"serialized {name}: {size} bytes (not bounded)")

    provider_failures = check_providers(providers, bounds.get("providers", {}), args.markdown)
    failures += provider_failures

    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    # at most one failure per provider case
    within = sum(1 for r in rows if r[5]) + len(providers) - len(provider_failures)
    print(f"{within} within bounds, {len(failures)} failed")
    return 1 if failures else 0


def check_providers(providers: Times, bounds: dict[str, float], markdown: bool) -> list[str]:
    """Print e2e's provider choice per operation against the other library's; return failures.

    A provider case may be missing (skipped where the other library cannot run it), but one
    that ran must have a bound and keep chosen / other within it.
    """
    failures = []
    if providers:
        if markdown:
            print("\n| operation | chosen µs | other µs | chosen / other | bound |")
            print("|---|---:|---:|---:|---:|")
        else:
            print(
                f"\n{'operation':28} {'chosen us':>10} {'other us':>10} {'ratio':>6} {'bound':>6}"
            )
    for case in sorted(providers):
        pair = providers[case]
        if "chosen" not in pair or "other" not in pair:
            failures.append(f"{case}: chosen or other result missing")
            continue
        ratio = pair["chosen"] / pair["other"]
        bound = bounds.get(case)
        if bound is None:
            failures.append(f"{case}: no bound in bounds.json")
        elif ratio > bound:
            failures.append(f"{case}: chosen / other {ratio:.2f} > bound {bound}")
        chosen, other = pair["chosen"] * 1e6, pair["other"] * 1e6
        b = "" if bound is None else f"{bound:.2f}"
        if markdown:
            print(f"| {case} | {chosen:.1f} | {other:.1f} | {ratio:.2f} | ≤ {b} |")
        else:
            print(f"{case:28} {chosen:10.1f} {other:10.1f} {ratio:6.2f} {b:>6}")
    return failures


_WORKLOAD_ORDER = [
    "oneway", "encrypt", "decrypt", "out_of_order", "ping_pong", "setup",
    "frame_encode", "frame_decode", "state",
]  # fmt: skip


def _order(case: str) -> tuple[int, str, int]:
    suite, workload, size = case.split("-", 2)
    rank = _WORKLOAD_ORDER.index(workload) if workload in _WORKLOAD_ORDER else 99
    units = {"B": 1, "KiB": 1024}
    number = size.rstrip("BKi")
    unit = size[len(number) :]
    return rank, suite, int(number) * units.get(unit, 1) if number.isdigit() else 0


if __name__ == "__main__":
    sys.exit(main())
