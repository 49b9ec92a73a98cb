"""``python -m e2e bench [--peers]``: e2e's workloads against their primitive-only floors.

Runs every workload of benches/workloads.py and its floor (benches/floor.py) in interleaved
rounds (benches/interleave.py, the method CI uses) and prints median microseconds per message,
the median per-round ratio to the floor with its 99 % interval, and the verdict against the
bound written in benches/bounds.json. ``--peers`` instead runs
benches/peers.py: e2e against vodozemac's Python bindings and python-doubleratchet (installed
beside e2e in a venv of their own, measured in one process) and python-axolotl (in its own
interpreter, alternating batches), interleaved the same way.

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
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="measuring time per case before deciding"
    )
    parser.add_argument("--only", default="", help="run cases whose name contains this")
    args = parser.parse_args(argv)
    try:
        if args.peers:
            peers = _benches("peers")
            result: int = peers.main(["--seconds", str(args.seconds)])
            return result
        workloads = _benches("workloads")
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2

    interleave = _benches("interleave")
    bounds = json.loads((_ROOT / "benches" / "bounds.json").read_text())["ratios"]
    head = f"{'workload':28} {'e2e us':>10} {'floor us':>10} {'ratio':>6} {'99% CI':>11}"
    print(f"{head} {'bound':>6}")
    over = 0
    for workload, suite, size in workloads.cases():
        name = workloads.case_name(workload, suite, size)
        if args.only not in name:
            continue
        w = workloads.WORKLOADS[workload]
        n = workloads.SIZES[size]
        bound = bounds.get(name)
        r = interleave.measure(
            interleave.side(*w.e2e(suite, n)),
            interleave.side(*w.floor(suite, n)),
            bound,
            budget=args.seconds,
            cap=4 * args.seconds,
        )
        e2e = sorted(r.a)[len(r.a) // 2] / w.messages
        floor = sorted(r.b)[len(r.b) // 2] / w.messages
        mark = {"FAIL": "  over"}.get(r.verdict, "  undecided" if "warning" in r.verdict else "")
        over += mark == "  over"
        shown = "" if bound is None else f"{bound:.2f}"
        ci = f"{r.low:.2f}-{r.high:.2f}"
        print(
            f"{name:28} {e2e * 1e6:10.1f} {floor * 1e6:10.1f} {r.median:6.2f} {ci:>11} "
            f"{shown:>6}{mark}"
        )
    print(f"{over} over their bound (one run; CI runs benches/check_ratios.py)")
    return 0
