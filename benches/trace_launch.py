"""Start ``python -m e2e ...`` under tracemalloc, for relay_polls.py ``--trace`` (a bench tool,
never used to serve).

The first SIGUSR1 takes a snapshot; the second takes another and writes the allocations that
grew between them (their total, the top 30 source lines, the top 15 files) to the file named by
``E2E_BENCH_TRACE_OUT``. ``E2E_BENCH_TRACE_FRAMES`` frames are kept per allocation (1: the
line that allocated; more: grouped by the whole traceback's first frames)."""

from __future__ import annotations

import os
import runpy
import signal
import sys
import tracemalloc
from types import FrameType

FRAMES = int(os.environ.get("E2E_BENCH_TRACE_FRAMES", "1"))
OUT = os.environ.get("E2E_BENCH_TRACE_OUT", "trace.txt")
_first: list[tracemalloc.Snapshot] = []


def _snapshot(signum: int, frame: FrameType | None) -> None:
    snap = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__),)
    )
    if not _first:
        _first.append(snap)
        return
    key = "traceback" if FRAMES > 1 else "lineno"
    diff = snap.compare_to(_first[0], key)
    grown = sum(d.size_diff for d in diff)
    lines = [f"memory allocated between the snapshots: {grown / 2**20:.1f} MiB"]
    for d in diff[:30]:
        where = " <- ".join(str(f) for f in d.traceback[:FRAMES])
        lines.append(f"{d.size_diff / 1024:10.1f} KiB {d.count_diff:+8d} blocks  {where}")
    lines.append("by file:")
    for d in snap.compare_to(_first[0], "filename")[:15]:
        lines.append(f"{d.size_diff / 1024:10.1f} KiB {d.count_diff:+8d} blocks  {d.traceback[0]}")
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR1, _snapshot)
    sys.argv = ["e2e", *sys.argv[1:]]
    runpy.run_module("e2e", run_name="__main__", alter_sys=True)
