"""Prove the benchmark gate: run CI's bench step many times as it is, and many times with an
artificial slowdown of e2e's side, and count passes and catches.

    source .ci/postgres.sh && e2e_pg_setup        # for the store rows (or --no-store)
    python benches/gate_proof.py --runs 20 [--inject 1.3] [--out proof.json]

Each run is exactly CI's bench step (``E2E_BENCH_QUICK=1 pytest benches/ --benchmark-only``,
then ``benches/check_ratios.py``) in a fresh process. The clean runs count passes (a flake is
any failing run). The injected runs set ``E2E_BENCH_INJECT`` (read only by
benches/interleave.py, never set outside this script), which makes every case's side A (e2e's
workload, the 100k-session store, e2e's provider choice) busy-wait for ``inject - 1`` times
each call's own duration; a case is *caught* in a run when check_ratios fails it. A slowdown
can only be caught where it lifts the ratio over the bound (ratio x inject > bound), so the
summary lists, per bounded case, its catches and the headroom bound / clean median ratio.
The load average of the machine before and after every run is recorded: the proof is only as
good as the conditions it ran in, and those are reported, not assumed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benches.check_ratios import collect, load_bounds, ratios_of  # noqa: E402


def _load() -> float:
    return os.getloadavg()[0]


def run_step(env_extra: dict[str, str], select: list[str], part: bool = False) -> dict[str, Any]:
    """One CI bench step; its exit code, failed and warned case names, ratios, load. With
    ``part`` (a subset of the cases selected) only the cases that ran can fail it."""
    env = {**os.environ, "E2E_BENCH_QUICK": "1", **env_extra}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "bench.json"
        load_before, began = _load(), time.monotonic()
        bench = subprocess.run(
            [sys.executable, "-m", "pytest", "benches/", "--benchmark-only", "-q",
             f"--benchmark-json={report}", "-p", "no:cacheprovider", *select],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        check = subprocess.run(
            [sys.executable, "benches/check_ratios.py", str(report)],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        ratios: dict[str, float] = {}
        if report.exists():
            cases, _, providers = collect(json.loads(report.read_text()))
            for info in cases + providers:
                name = info.get("case") or info["provider_case"]
                ratios[name] = statistics.median(ratios_of(info)[2])
    failed = sorted(set(re.findall(r"^FAIL (\S+?):", check.stderr, re.M)))
    if part:
        failed = [case for case in failed if case in ratios]
    warned = sorted(set(re.findall(r"^WARNING (\S+?):", check.stderr, re.M)))
    return {
        "rc": bench.returncode or (int(bool(failed)) if part else check.returncode),
        "bench_rc": bench.returncode,
        "failed": failed,
        "warned": warned,
        "ratios": ratios,
        "seconds": round(time.monotonic() - began, 1),
        "load": [round(load_before, 2), round(_load(), 2)],
        "tail": (bench.stdout + bench.stderr).strip().splitlines()[-1:] if bench.returncode else [],
    }


def summary(clean: list[dict[str, Any]], injected: list[dict[str, Any]], factor: float) -> str:
    bounds = load_bounds()
    listed = {**bounds["ratios"], **bounds.get("providers", {})}
    bounded = {case: bound for case, bound in listed.items() if bound is not None}
    lines = []
    passes = sum(1 for r in clean if r["rc"] == 0)
    streak = best = 0
    for r in clean:
        streak = streak + 1 if r["rc"] == 0 else 0
        best = max(best, streak)
    loads = [x for r in clean + injected for x in r["load"]]
    secs = [r["seconds"] for r in clean]
    lines.append(
        f"clean runs: {passes}/{len(clean)} passed (longest run of passes {best}); "
        f"warnings in {sum(1 for r in clean if r['warned'])} runs; "
        f"step {min(secs, default=0):.0f}-{max(secs, default=0):.0f} s"
    )
    for r in clean:
        if r["rc"]:
            lines.append(f"  clean failure: {r['failed'] or r['tail']} (load {r['load']})")
    if injected:
        lines.append(
            f"injected x{factor}: {sum(1 for r in injected if r['rc'])}/{len(injected)} runs failed"
        )
    if loads:
        lines.append(f"1-minute load average during the proof: {min(loads):.1f}-{max(loads):.1f}")
    lines.append("")
    lines.append(f"| case | bound | clean median ratio (min-max) | headroom | caught x{factor} |")
    lines.append("|---|---:|---:|---:|---:|")
    for case in sorted(bounded):
        seen = [r["ratios"][case] for r in clean if case in r["ratios"]]
        if not seen:
            continue
        med = statistics.median(seen)
        ran = [r for r in injected if case in r["ratios"]]
        caught = sum(1 for r in ran if case in r["failed"])
        lines.append(
            f"| {case} | {bounded[case]} | {med:.2f} ({min(seen):.2f}-{max(seen):.2f}) "
            f"| {bounded[case] / med:.2f} | {f'{caught}/{len(ran)}' if ran else 'not run'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", type=Path, default=None, help="summarize a --out file")
    parser.add_argument("--runs", type=int, default=20, help="clean runs (and injected runs)")
    parser.add_argument("--injected-runs", type=int, default=None)
    parser.add_argument("--inject", type=float, default=1.3, help="slowdown factor of side A")
    parser.add_argument("--only", default="", help="inject only cases containing this")
    parser.add_argument("--no-store", action="store_true", help="skip the store rows")
    parser.add_argument(
        "--injected-k", default="", help="injected runs: only the cases pytest -k selects"
    )
    parser.add_argument("--k", default="", help="all runs: only the cases pytest -k selects")
    parser.add_argument("--out", type=Path, default=None, help="write every run as JSON")
    args = parser.parse_args(argv)
    if args.summary:
        runs = json.loads(args.summary.read_text())
        print(summary(runs["clean"], runs["injected"], args.inject))
        return 0
    select = ["--deselect", "benches/bench_store.py"] if args.no_store else []
    part = bool(args.k or args.no_store)
    select += ["-k", args.k] if args.k else []
    injected_runs = args.runs if args.injected_runs is None else args.injected_runs
    clean: list[dict[str, Any]] = []
    injected: list[dict[str, Any]] = []
    # alternate clean and injected runs so both meet the same changing conditions
    for i in range(max(args.runs, injected_runs)):
        if i < args.runs:
            clean.append(run_step({}, select, part))
            print(f"clean {i + 1}: rc {clean[-1]['rc']} {clean[-1]['failed']}", flush=True)
        if i < injected_runs:
            env = {"E2E_BENCH_INJECT": str(args.inject), "E2E_BENCH_INJECT_CASE": args.only}
            extra = ["-k", args.injected_k] if args.injected_k else []
            injected.append(run_step(env, select + extra, True))
            print(f"injected {i + 1}: rc {injected[-1]['rc']} {injected[-1]['failed']}", flush=True)
        if args.out:
            args.out.write_text(json.dumps({"clean": clean, "injected": injected}, indent=1))
    print(summary(clean, injected, args.inject))
    return 0


if __name__ == "__main__":
    sys.exit(main())
