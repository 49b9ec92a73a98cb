"""``python -m e2e bench [--peers]``: e2e's workloads against their primitive-only floors.

Runs every workload of benches/workloads.py and its floor (benches/floor.py), each floor
right after its workload, and prints median microseconds per message and the ratio to the
floor next to the bound written in benches/bounds.json. ``--peers`` instead runs
benches/peers.py: python-doubleratchet, python-axolotl and vodozemac's Python bindings on
the same workloads, installed into a venv of their own.

The benchmarks live in the source tree (benches/), not in the installed package, so this
command needs a checkout. CI checks the ratios with pytest-benchmark and
benches/check_ratios.py; this command only reports.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["main"]

_ROOT = Path(__file__).resolve().parent.parent


def _benches(name: str) -> ModuleType:
    if not (_ROOT / "benches" / "workloads.py").is_file():
        raise FileNotFoundError("benches/ not found: run from a source checkout of e2e")
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))
    return importlib.import_module(f"benches.{name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e bench", description=__doc__)
    parser.add_argument("--peers", action="store_true", help="compare with other libraries")
    parser.add_argument("--rounds", type=int, default=2000, help="timed calls per workload")
    parser.add_argument("--only", default="", help="run cases whose name contains this")
    args = parser.parse_args(argv)
    try:
        if args.peers:
            peers = _benches("peers")
            result: int = peers.main(["--rounds", str(args.rounds)])
            return result
        workloads = _benches("workloads")
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2

    bounds = json.loads((_ROOT / "benches" / "bounds.json").read_text())["ratios"]
    print(f"{'workload':28} {'e2e us':>10} {'floor us':>10} {'ratio':>6} {'bound':>6}")
    over = 0
    for workload, suite, size in workloads.cases():
        name = workloads.case_name(workload, suite, size)
        if args.only not in name:
            continue
        w = workloads.WORKLOADS[workload]
        rounds = max(20, args.rounds // 10) if workload == "setup" else args.rounds
        e2e = workloads.measure(w.e2e, suite, workloads.SIZES[size], rounds) / w.messages
        floor = workloads.measure(w.floor, suite, workloads.SIZES[size], rounds) / w.messages
        ratio = e2e / floor
        bound = bounds.get(name)
        mark = "  over" if bound is not None and ratio > bound else ""
        over += bool(mark)
        shown = "" if bound is None else f"{bound:.2f}"
        print(f"{name:28} {e2e * 1e6:10.1f} {floor * 1e6:10.1f} {ratio:6.2f} {shown:>6}{mark}")
    print(f"{over} over their bound (timings of one run; CI runs benches/check_ratios.py)")
    return 0
