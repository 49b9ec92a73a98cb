"""Interleaved measurement of two sides of one case (A = e2e, B = its floor; or a 100k-session
store and a 1k one; or e2e's provider choice and the other library).

One *round pair* times a batch of A calls and a batch of B calls back to back, the order
alternating between pairs (A B, then B A, ...), so a change of load or clock speed during a
case reaches both sides alike and drift within a pair cancels over two pairs. A batch is
``n`` calls (calibrated so one lasts about :data:`BATCH_SECONDS`); each call gets a fresh,
untimed ``setup()`` unless neither side needs one, in which case the batch is timed as one
loop. A round's value is its batch's mean seconds per call; the pair's ratio is A / B. Time
during which the scheduler ran another process is kept out (see :func:`_batch`), except for
the store, whose calls wait for I/O as part of their work.

After a first time budget the median ratio's confidence interval
(:func:`benches.check_ratios.decide`) is compared with the case's bound: wholly above fails,
wholly at or below passes, straddling measures another budget, up to a cap; still straddling
at the cap passes with a warning. benches/check_ratios.py re-reads the rounds from the JSON.

Proof only (benches/gate_proof.py): ``E2E_BENCH_INJECT=1.3`` slows side A of the cases whose
name contains ``E2E_BENCH_INJECT_CASE`` (all cases when unset) by a busy-wait of 0.3 times
each call's own measured time. Nothing sets it outside that proof.
"""

from __future__ import annotations

import ctypes
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benches.check_ratios import FAIL, MORE, PASS, WARN, decide

Setup = Callable[[], tuple[Any, ...]]
Target = Callable[..., object]

QUICK = os.environ.get("E2E_BENCH_QUICK", "") not in ("", "0")
#: Seconds of measuring before the first decision, and the cap when the interval straddles.
BUDGET = 0.8 if QUICK else 3.0
CAP = 3.2 if QUICK else 12.0
BATCH_SECONDS = 0.0005
MIN_PAIRS = 24
WARMUP_PAIRS = 4


def steady_allocator() -> None:
    """Keep freed memory at the top of the heap instead of handing it back to the kernel
    (glibc: M_TRIM_THRESHOLD 64 MiB, M_TOP_PAD 1 MiB). With glibc's defaults, whether a 64 KiB
    buffer page-faults depends on the heap's history: pq-decrypt-64KiB's ratio measured
    1.22-1.39 after the other cases had run in the process and 1.50-1.62 when it ran first,
    and 1.27-1.34 either way with these settings. Elsewhere (no glibc) this does nothing."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
    mallopt(-2, 1 << 20)  # M_TOP_PAD
    # Setting the trim threshold freezes glibc's otherwise adaptive mmap threshold at 128 KiB,
    # so a buffer of 128 KiB or more would be mapped and unmapped (and page-faulted) per call.
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (glibc's largest)


steady_allocator()


@dataclass(frozen=True)
class Side:
    """One side of a case: ``target(*setup())`` is one call; ``setup`` None means no setup."""

    setup: Setup | None
    target: Target
    #: the call waits for I/O as part of its work (the store): timed on the wall clock
    wall: bool = False


def side(setup: Setup, target: Target) -> Side:
    """A Side from a workload factory's (setup, target); a setup named ``_no_setup`` (the
    workloads' and floors' empty setup) is dropped so the batch can be timed as one loop."""
    return Side(None if getattr(setup, "__name__", "") == "_no_setup" else setup, target)


@dataclass
class Result:
    a: list[float] = field(default_factory=list)  # seconds per call, per round
    b: list[float] = field(default_factory=list)
    batch: int = 0
    verdict: str = PASS
    low: float = 0.0
    median: float = 0.0
    high: float = 0.0
    seconds: float = 0.0
    injected: float = 1.0
    timing: str = ""
    #: minor page faults per call of each side over the measured rounds: a memory-bound case
    #: whose ratio jumps between runs shows here whether its buffers were faulted in afresh
    faults: tuple[float, float] = (0.0, 0.0)

    def info(self, per_message: int = 1) -> dict[str, Any]:
        """The fields benches/check_ratios.py reads (seconds per message per round)."""
        return {
            "a": [x / per_message for x in self.a],
            "b": [x / per_message for x in self.b],
            "batch": self.batch,
            "verdict": self.verdict,
            "ratio_median": round(self.median, 4),
            "ratio_ci": [round(self.low, 4), round(self.high, 4)],
            "seconds": round(self.seconds, 3),
            "injected_slowdown": self.injected,
            "timing": self.timing,
            "faults_per_call": [round(x, 3) for x in self.faults],
        }


def injection(case: str) -> float:
    """The proof's slowdown factor for side A of ``case`` (1.0: none)."""
    factor = float(os.environ.get("E2E_BENCH_INJECT", "") or 1.0)
    only = os.environ.get("E2E_BENCH_INJECT_CASE", "")
    return factor if factor > 1.0 and (not only or only in case) else 1.0


def slowed(target: Target, factor: float) -> Target:
    """``target`` followed by a busy-wait of (factor - 1) times the call's own duration."""
    clock = time.perf_counter

    def call(*args: Any) -> object:
        start = clock()
        out = target(*args)
        end = start + (clock() - start) * factor
        while clock() < end:
            pass
        return out

    return call


#: Per-call timing of CPU-bound calls: a call this much slower than its batch's median lost the
#: CPU to another process (a time slice is 0.75 ms or more) and is left out of the batch.
PREEMPTED = 0.0002
#: CPU-bound calls at least this long are timed on the thread's CPU clock instead: its read
#: costs a few microseconds here, under 3 % of such a call, and it ignores preemption.
CPU_CLOCK_CALLS = 0.0001


@dataclass(frozen=True)
class Timing:
    """How a case's batches are timed (the same for both sides)."""

    loop: bool  # neither side needs a setup: time the batch as one loop
    cpu: bool  # CPU-bound in this thread (not the store): preemption must not count
    cpu_per_call: bool = False  # per call, on the thread's CPU clock


def _batch(s: Side, n: int, how: Timing) -> float:
    """Mean seconds per call of ``n`` calls of ``s``.

    A loop of a CPU-bound side is timed on the thread's CPU clock, so time spent preempted by
    other processes does not count. Per call (each with its untimed setup), CPU-bound calls
    are timed on the wall clock and the calls that lost the CPU (``PREEMPTED`` slower than the
    batch's median) are left out, or, when long, on the CPU clock. The store's calls wait for
    I/O as part of their work: wall clock, nothing left out.
    """
    target = s.target
    if how.loop:
        clock = time.thread_time if how.cpu else time.perf_counter
        start = clock()
        for _ in range(n):
            target()
        return (clock() - start) / n
    setup = s.setup or (lambda: ())
    clock = time.thread_time if how.cpu_per_call else time.perf_counter
    times = []
    for _ in range(n):
        args = setup()
        start = clock()
        target(*args)
        times.append(clock() - start)
    if how.cpu and not how.cpu_per_call and n >= 3:
        limit = sorted(times)[n // 2] + PREEMPTED
        times = [t for t in times if t <= limit]
    return sum(times) / len(times)


Batch = Callable[[int, "Timing"], float]


def _calibrate(batch: Batch, how: Timing) -> float:
    """Seconds per call once warm: the fastest of five batches of at least ~1 ms (the fastest,
    so a slow moment during calibration cannot change the batch size much)."""
    batch(3, how)
    n = 1
    while batch(n, how) * n < 0.001 and n < 4096:
        n *= 4
    return min(batch(n, how) for _ in range(5))


def measure(
    a: Side,
    b: Side,
    bound: float | None,
    *,
    budget: float = BUDGET,
    cap: float = CAP,
    inject: float = 1.0,
) -> Result:
    """Interleaved round pairs of ``a`` and ``b`` until the rule decides or ``cap`` seconds."""
    if inject > 1.0:
        a = Side(a.setup, slowed(a.target, inject), a.wall)
    how = Timing(loop=a.setup is None and b.setup is None, cpu=not (a.wall or b.wall))
    result = measure_batches(
        lambda n, h: _batch(a, n, h), lambda n, h: _batch(b, n, h), how, bound, budget, cap
    )
    result.injected = inject
    return result


def measure_batches(
    batch_a: Batch, batch_b: Batch, how: Timing, bound: float | None, budget: float, cap: float
) -> Result:
    """:func:`measure` on two batch functions (``batch(n, how)`` -> seconds per call), so one
    side may run in another process (benches/peers.py)."""
    clock = time.perf_counter
    began = clock()
    per_call = max(_calibrate(batch_a, how), _calibrate(batch_b, how))
    if how.cpu and not how.loop and per_call >= CPU_CLOCK_CALLS:
        how = Timing(loop=False, cpu=True, cpu_per_call=True)
    n = max(1, min(10_000, round(BATCH_SECONDS / max(per_call, 1e-9))))
    if how.cpu and not how.loop and not how.cpu_per_call:
        n = max(n, 5)  # enough calls for a batch median
    result = Result(batch=n, timing=_describe(how))
    for _ in range(WARMUP_PAIRS // 2):
        batch_a(n, how)
        batch_b(n, how)
    stop = clock() + budget
    deadline = began + cap
    pair = 0
    faults = [0, 0]

    def counted(side: int, batch: Batch) -> float:
        before = _minor_faults()
        t = batch(n, how)
        faults[side] += _minor_faults() - before
        return t

    while True:
        if pair % 2 == 0:
            ta = counted(0, batch_a)
            tb = counted(1, batch_b)
        else:
            tb = counted(1, batch_b)
            ta = counted(0, batch_a)
        result.a.append(ta)
        result.b.append(tb)
        pair += 1
        now = clock()
        if pair < MIN_PAIRS or pair % 2 or now < stop:
            continue
        ratios = [x / y for x, y in zip(result.a, result.b, strict=True)]
        d = decide(ratios, bound, final=now >= deadline)
        if d.verdict != MORE:
            break
        stop = min(deadline, now + budget)
    result.verdict, result.low, result.median, result.high = d.verdict, d.low, d.median, d.high
    result.seconds = clock() - began
    result.faults = (faults[0] / (pair * n), faults[1] / (pair * n))
    return result


def _minor_faults() -> int:
    """This process's minor page faults so far (read between batches, never inside one)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _describe(how: Timing) -> str:
    if how.loop:
        return "loop, thread CPU clock" if how.cpu else "loop, wall clock"
    if how.cpu_per_call:
        return "per call, thread CPU clock"
    return "per call, wall clock" + (", preempted calls left out" if how.cpu else "")


__all__ = [
    "FAIL", "MORE", "PASS", "WARN", "Result", "Side", "Timing", "injection", "measure",
    "measure_batches", "side",
]  # fmt: skip
