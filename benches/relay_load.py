"""Load bench of the relay service over HTTP on localhost (not part of the ratio gate).

    python benches/relay_load.py [--clients 100] [--seconds 8] [--procs 1 2]
                                 [--no-sqlite] [--pg-dsn DSN] [--ceiling]

For each backend (SQLite file; PostgreSQL if a DSN is given: use a cluster with durable
commits, i.e. without fsync=off) and each number of relay processes, it starts the relay(s)
with ``python -m e2e relay serve``, registers one business and ``clients`` customer devices,
then runs ``clients`` concurrent HTTP clients (one asyncio process, httpx) for ``seconds``:

* ``noop``: ``POST /v1/noop`` with a body of the same size (same server stack, no store);
* ``submit``: ``POST /v1/messages/submit`` of a signed one-copy service message.

Requests and signatures are made before the timed part, so the client process spends its time
on HTTP only (raw keep-alive HTTP/1.1 on asyncio streams). It prints accepted requests/s, p50
and p99 latency, the submit/no-op throughput ratio, and the relay's own split of server time
per submit (from its metrics).

``--ceiling`` runs the closed-loop submit against the no-op again with the signature check,
the store work, or both taken away (``benches/relay_ceiling.py``): what each row reaches is the
most that making the removed part cheaper could give.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "relay"))
sys.path.insert(0, str(ROOT / "benches"))

from relayhelp import Dev, RelayProcess, fresh_pg_db, new_device, relay_metrics  # noqa: E402

from e2e.platform import wire  # noqa: E402
from e2e.platform.policy import MessageClass  # noqa: E402


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
) -> bool:
    """One keep-alive HTTP/1.1 POST on raw streams (a general-purpose async HTTP client costs
    more CPU per request than the server under test); True if answered 200."""
    head = f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode() + body)
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status_line.split()[1] == b"200"


async def _drive(
    urls: list[str],
    jobs: list[tuple[str, bytes, dict[str, str]]],
    clients: int,
    seconds: float,
    repeat: bool = False,
) -> tuple[int, list[float], int]:
    """Run the jobs with ``clients`` concurrent keep-alive connections until time is up (or
    the jobs run out; ``repeat``: they are sent again and again, for a body-less endpoint);
    (accepted per second, latencies, refused). The load generator writes HTTP/1.1 requests
    on raw asyncio streams (a general-purpose async HTTP client costs more CPU per request
    than the server under test, and the machine has two cores)."""
    lat: list[float] = []
    ok = bad = 0
    it = itertools.cycle(jobs) if repeat else iter(jobs)
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal ok, bad
        host, port = urls[i % len(urls)].removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                try:
                    path, body, headers = next(it)
                except StopIteration:
                    return
                t = time.perf_counter()
                accepted = await _exchange(reader, writer, host, path, body, headers)
                lat.append(time.perf_counter() - t)
                ok += accepted
                bad += not accepted
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    return int(ok / elapsed), lat, bad


async def _drive_open(
    urls: list[str],
    jobs: list[tuple[str, bytes, dict[str, str]]],
    clients: int,
    rate: float,
    seconds: float,
) -> tuple[int, list[float], int]:
    """Open loop: ``clients`` connections, each sending at random (exponential) intervals so
    that together they offer ``rate`` requests/s, whatever the answers' speed. A request's
    latency counts from the moment it was due, so a late answer delays the next request of
    its client and that wait is counted too (no coordinated omission). (accepted/s,
    latencies, refused)."""
    import random

    lat: list[float] = []
    ok = bad = 0
    it = iter(jobs)
    rng = random.Random(7)
    start = time.perf_counter()
    deadline = start + seconds

    async def worker(i: int) -> None:
        nonlocal ok, bad
        host, port = urls[i % len(urls)].removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        due = start + rng.expovariate(rate / clients)
        try:
            while due < deadline:
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    path, body, headers = next(it)
                except StopIteration:
                    return
                accepted = await _exchange(reader, writer, host, path, body, headers)
                lat.append(time.perf_counter() - due)
                ok += accepted
                bad += not accepted
                due += rng.expovariate(rate / clients)
        finally:
            writer.close()

    await asyncio.gather(*(worker(i) for i in range(clients)))
    return int(ok / (time.perf_counter() - start)), lat, bad


def _pct(lat: list[float], q: float) -> float:
    if not lat:
        return float("nan")
    return statistics.quantiles(lat, n=100)[int(q) - 1] * 1000


def run_case(
    db: str,
    procs: int,
    clients: int,
    seconds: float,
    per_client: int,
    profile: str = "",
    rates: tuple[float, ...] = (),
    ceiling: str = "",
) -> dict[str, float]:
    # The default rate limit (200/s, bursts of 400, leases of 20): each client stays well
    # under it, and its bucket costs what it costs a deployment.
    extra = ["--log-level", "warning"]
    launcher = [str(ROOT / "benches" / "relay_ceiling.py"), ceiling] if ceiling else ["-m", "e2e"]
    relays = [RelayProcess(db, extra=extra, launcher=launcher) for _ in range(procs)]
    for r in relays:
        r.start()
    try:
        urls = [r.url for r in relays]
        with httpx.Client(base_url=urls[0], timeout=60) as c:
            biz = new_device(c, b"shop", 1)
            custs: list[Dev] = [new_device(c, b"c%d" % i, 0, one_time=1) for i in range(clients)]
        path = wire.Path.MESSAGE_SUBMIT

        def submit_jobs(n: int) -> list[tuple[str, bytes, dict[str, str]]]:
            jobs = []
            for i in range(n):
                cust = custs[i % len(custs)]
                envs = cust.envelopes(b"shop", [biz.addr], MessageClass.SERVICE, body=b"x" * 100)
                body = wire.Submit(tuple(envs)).to_bytes()
                auth = cust.sign(path, body)
                headers = {"content-type": wire.CONTENT_TYPE, "authorization": auth}
                jobs.append((path, body, headers))
            return jobs

        closed = submit_jobs(per_client * clients)
        noop_jobs = [(wire.Path.NOOP, b, {"content-type": wire.CONTENT_TYPE}) for _, b, _ in closed]
        out: dict[str, float] = {}
        for name, jobs in (("noop", noop_jobs), ("submit", closed), ("noop2", noop_jobs)):
            spy = None
            if profile and name == "submit":
                import subprocess

                assert relays[0].proc is not None
                spy = subprocess.Popen(
                    ["py-spy", "record", "-p", str(relays[0].proc.pid), "-d", str(int(seconds)),
                     "-f", "speedscope", "-o", profile, "--threads"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            # The no-op runs for the whole time (its requests are all alike); a submission
            # is sent once, so that phase ends when time is up or the submissions run out.
            repeat = name != "submit"
            rate, lat, bad = asyncio.run(_drive(urls, jobs, clients, seconds, repeat))
            if spy is not None:
                spy.wait()
            out[f"{name}_rps"] = rate
            out[f"{name}_p50"] = _pct(lat, 50)
            out[f"{name}_p99"] = _pct(lat, 99)
            out[f"{name}_bad"] = bad
        for rate in rates:
            for name, jobs in (
                ("noop", noop_jobs),
                ("submit", submit_jobs(int(rate * seconds * 1.2) + clients)),
            ):
                got, lat, bad = asyncio.run(_drive_open(urls, jobs, clients, rate, seconds))
                out[f"open{rate:g}_{name}_rps"] = got
                out[f"open{rate:g}_{name}_p50"] = _pct(lat, 50)
                out[f"open{rate:g}_{name}_p99"] = _pct(lat, 99)
                out[f"open{rate:g}_{name}_bad"] = bad
        metrics = relay_metrics(urls[0])
        served = 1.0
        for line in metrics.splitlines():
            if line.startswith('e2e_relay_requests_total{endpoint="submit"}'):
                served = max(float(line.split()[-1]), 1.0)
        for line in metrics.splitlines():
            if line.startswith("e2e_relay_seconds_total") and not rates:
                phase = line.split('"')[1]
                out[f"t_{phase}"] = float(line.split()[-1]) / served
        return out
    finally:
        for r in relays:
            r.stop()


def _ceiling(ns: argparse.Namespace, per_client: int) -> int:
    """What a submit reaches with its signature check, its store work, or both taken away."""
    from relay_ceiling import MODES

    tmp = tempfile.mkdtemp(prefix="relay-ceiling-")
    backends = ([] if ns.no_sqlite else [("sqlite", "")]) + (
        [("postgresql", ns.pg_dsn)] if ns.pg_dsn else []
    )
    print(f"{'backend':<11} {'procs':>5} {'taken away':<10} | {'no-op/s':>8} | "
          f"{'submit/s':>8} {'p50':>6} {'p99':>6} | {'ratio':>5}")  # fmt: skip
    for name, dsn in backends:
        for procs in ns.procs:
            for mode in MODES:
                db = fresh_pg_db(dsn) if dsn else str(Path(tmp) / f"relay-{procs}-{mode}.db")
                r = run_case(db, procs, ns.clients, ns.seconds, per_client, ceiling=mode)
                noop = max(r["noop_rps"], r["noop2_rps"])
                away = {"full": "nothing", "nosig": "signature", "nostore": "store",
                        "neither": "both"}[mode]  # fmt: skip
                print(
                    f"{name:<11} {procs:>5} {away:<10} | {noop:>8.0f} | {r['submit_rps']:>8.0f} "
                    f"{r['submit_p50']:>6.1f} {r['submit_p99']:>6.1f} | "
                    f"{r['submit_rps'] / noop:>5.2f}",
                    flush=True,
                )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--pg-dsn", default=os.environ.get("E2E_BENCH_PG_DSN"))
    ap.add_argument("--no-sqlite", action="store_true")
    ap.add_argument("--profile", default="", help="py-spy the first relay during submit")
    ap.add_argument(
        "--rates",
        type=float,
        nargs="*",
        default=[100.0, 200.0, 400.0, 800.0],
        help="offered loads (requests/s over all clients) of the open-loop runs",
    )
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="instead: submit against the no-op with parts of a submission taken away"
        " (benches/relay_ceiling.py), on each backend and number of processes",
    )
    ns = ap.parse_args()
    per_client = 100
    if ns.ceiling:
        return _ceiling(ns, per_client)
    backends: list[tuple[str, str]] = []
    tmp = tempfile.mkdtemp(prefix="relay-bench-")
    if not ns.no_sqlite:
        backends.append(("sqlite", ""))
    if ns.pg_dsn:
        backends.append(("postgresql", ns.pg_dsn))
    print(
        f"{'backend':<11} {'procs':>5} {'clients':>7} | {'no-op/s':>8} {'p50':>6} {'p99':>6} |"
        f" {'submit/s':>8} {'p50':>6} {'p99':>6} | {'ratio':>5} | server time per submit"
    )
    results: list[tuple[str, int, dict[str, float]]] = []
    for name, dsn in backends:
        for procs in ns.procs:
            db = fresh_pg_db(dsn) if dsn else str(Path(tmp) / f"relay-{procs}.db")
            r = run_case(db, procs, ns.clients, ns.seconds, per_client, ns.profile, tuple(ns.rates))
            results.append((name, procs, r))
            noop = max(r["noop_rps"], r["noop2_rps"])
            split = ", ".join(
                f"{k[2:]} {v * 1000:.2f} ms"
                for k, v in sorted(r.items()) if k.startswith("t_")
            )  # fmt: skip
            print(
                f"{name:<11} {procs:>5} {ns.clients:>7} | {noop:>8.0f} {r['noop_p50']:>6.1f} "
                f"{r['noop_p99']:>6.1f} | {r['submit_rps']:>8.0f} {r['submit_p50']:>6.1f} "
                f"{r['submit_p99']:>6.1f} | {r['submit_rps'] / noop:>5.2f} | {split}"
                + (f"  (refused: {r['submit_bad']:.0f})" if r["submit_bad"] else "")
            )
    if ns.rates:
        print(
            f"\nopen loop ({ns.clients} clients sending at random times; latency from when"
            " each request was due)"
        )
        print(
            f"{'backend':<11} {'procs':>5} {'offered/s':>9} | {'no-op/s':>8} {'p50':>6} {'p99':>6}"
            f" | {'submit/s':>8} {'p50':>6} {'p99':>6}"
        )
        for name, procs, r in results:
            for rate in ns.rates:
                k = f"open{rate:g}"
                print(
                    f"{name:<11} {procs:>5} {rate:>9.0f} | {r[k + '_noop_rps']:>8.0f} "
                    f"{r[k + '_noop_p50']:>6.1f} {r[k + '_noop_p99']:>6.1f} | "
                    f"{r[k + '_submit_rps']:>8.0f} {r[k + '_submit_p50']:>6.1f} "
                    f"{r[k + '_submit_p99']:>6.1f}"
                    + (f"  (refused: {r[k + '_submit_bad']:.0f})" if r[k + "_submit_bad"] else "")
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
