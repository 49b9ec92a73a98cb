"""Throughput of the relay's records over 1, 2 and 4 PostgreSQL clusters (SPEC §10.14), run by
hand (not part of the ratio gate):

    python benches/relay_clusters.py [--clusters 1 2 4] [--seconds 8] [--procs 2]
                                     [--threads 32] [--fsync]

It starts four throwaway PostgreSQL clusters on this machine (``initdb`` + ``pg_ctl``, each
its own data directory and port; ``synchronous_commit`` on, and ``fsync`` off unless
``--fsync``), then for each cluster count: a fresh database on each of the first N clusters,
a placement map over them, and ``procs`` load processes, each with its own
:class:`~e2e.relay.cluster.ClusterRouter` (one group-committing store per cluster, as a relay
process has) and ``threads`` closed-loop submitters. Each submitter owns one customer and
talks to its own business (``--businesses N``: one of N shared by all, which makes the
businesses' mailbox counters hot rows), alternating a customer message (one copy for the business's
device) and a business answer (one copy for the customer, one for the business's second
device). Each load process also runs the outbox relay of the origins ``i mod procs``.

It prints accepted submissions/s, p50/p99 latency, copies moved through outboxes per second,
the CPU time per accepted submission of the load processes (the routers, their stores'
writers and the outbox relays: what relay processes would spend) and of the PostgreSQL
servers,
and, after draining the outboxes, checks that every copy of every acknowledged submission is
in its mailbox exactly once. The store work is in process (no HTTP, no signatures): what is
measured is what partitioning changes. The machine's load average is printed with each row.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from e2e.errors import StoreUnavailable  # noqa: E402
from e2e.platform.policy import MessageClass  # noqa: E402
from e2e.relay.backends import open_router  # noqa: E402
from e2e.relay.cluster import (  # noqa: E402
    ClusterRouter,
    Copy,
    OutboxRelay,
    Submission,
    submission_digest,
)
from e2e.relay.placement import PlacementMap, initial  # noqa: E402
from e2e.relay.store import BUSINESS, CUSTOMER, Quota  # noqa: E402

QUOTA = Quota(10**9, 1 << 40, 10**9, 1 << 40)
BODY = 200  # bytes of envelope per copy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """A throwaway PostgreSQL cluster in ``root``."""

    def __init__(self, root: Path, fsync: bool) -> None:
        self.bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        self.dir = root
        self.port = _free_port()
        self.fsync = fsync
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []

    def start(self) -> PgCluster:
        self.dir.mkdir(parents=True)
        if self.run_as:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run([*self.run_as, str(self.bindir / "initdb"), "-D", str(self.dir / "data"),
                        "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"],
                       check=True, capture_output=True)  # fmt: skip
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir}"
                f" -c fsync={'on' if self.fsync else 'off'} -c max_connections=200")  # fmt: skip
        subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"),
                        "-l", str(self.dir / "server.log"), "-w", "-o", opts, "start"],
                       check=True, capture_output=True)  # fmt: skip
        return self

    def cpu_seconds(self) -> float:
        """CPU time of the server's processes: the postmaster's, its living children's, and
        that of its children that have exited."""
        pid = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                total += int(fields[11]) + int(fields[12])
            elif int(proc.name) == pid:  # with its children that have exited
                total += sum(int(f) for f in fields[11:15])
        return total / tick

    def dsn(self, db: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={db}"

    def create(self, db: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {db}")  # type: ignore[arg-type]
        return self.dsn(db)

    def stop(self) -> None:
        subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"),
                        "-m", "immediate", "stop"], capture_output=True)  # fmt: skip


def _worker(
    index: int, procs: int, threads: int, businesses: int, seconds: float, pmap_json: str,
    dsns: dict[str, str], start_at: float, out: Any,
) -> None:  # fmt: skip
    pmap = PlacementMap.from_json(pmap_json)
    router = open_router(pmap, dsns, QUOTA)
    for name in pmap.clusters:  # opened before the timed part (a busy machine: try again)
        for attempt in range(5):
            try:
                router.store(name)
                break
            except StoreUnavailable:
                if attempt == 4:
                    raise
                time.sleep(1)
    n_biz = businesses or threads
    stop = threading.Event()
    lat: list[float] = []
    accepted = refused = copies = 0
    lock = threading.Lock()

    def submitter(t: int) -> None:
        nonlocal accepted, refused, copies
        cust = b"cust-%d-%d" % (index, t)
        biz = b"biz-%d-%d" % (index if not businesses else 0, t % n_biz)
        mine: list[float] = []
        ok = bad = n_copies = 0
        n = 0
        body = os.urandom(BODY)
        while time.time() < start_at:
            time.sleep(0.01)
        deadline = start_at + seconds
        while time.time() < deadline:
            n += 1
            if n % 2:
                sender, kind, peer, dests = cust, CUSTOMER, biz, [(biz, 1)]
            else:
                sender, kind, peer, dests = biz, BUSINESS, cust, [(cust, 1), (biz, 2)]
            mid = cust[-8:].rjust(8, b"\0") + n.to_bytes(8, "big")
            cs = tuple(Copy(a, d, body, b"t" * 32) for a, d in dests)
            sub = Submission(sender, kind, peer, mid, MessageClass.SERVICE, cs,
                             submission_digest(sender, mid, cs))  # fmt: skip
            began = time.perf_counter()
            try:
                router.submit(sub)
            except StoreUnavailable:
                bad += 1
                continue
            mine.append(time.perf_counter() - began)
            ok += 1
            n_copies += len(cs)
        with lock:
            lat.extend(mine)
            accepted += ok
            refused += bad
            copies += n_copies

    moved = 0

    def relay(origin: str) -> None:
        nonlocal moved
        pump = OutboxRelay(router, origin, 512)
        while not stop.is_set():
            try:
                got = pump.pump()
            except StoreUnavailable:
                got = 0
            moved += got
            if not got:
                stop.wait(0.005)

    origins = [c for i, c in enumerate(pmap.clusters) if i % procs == index]
    relays = [threading.Thread(target=relay, args=(o,)) for o in origins]
    for r in relays:
        r.start()
    subs = [threading.Thread(target=submitter, args=(t,)) for t in range(threads)]
    while time.time() < start_at:
        time.sleep(0.005)
    cpu0 = time.process_time()
    for s in subs:
        s.start()
    for s in subs:
        s.join()
    cpu = time.process_time() - cpu0
    moved_in_window = moved
    stop.set()
    for r in relays:
        r.join()
    out.put((accepted, refused, copies, moved_in_window, lat, cpu))
    router.close()


def _drain_and_check(pmap: PlacementMap, dsns: dict[str, str], copies: int) -> tuple[int, int]:
    """Empty every outbox; (copies in mailboxes, outbox rows left)."""
    router: ClusterRouter = open_router(pmap, dsns, QUOTA)
    try:
        for origin in pmap.clusters:
            while OutboxRelay(router, origin, 2048).pump():
                pass
        stored = sum(
            int(router.run(c, lambda tx: tx.count_mail()))
            for c in pmap.clusters  # type: ignore[misc]
        )
        left = sum(router.outbox_size(c) for c in pmap.clusters)
        return stored, left
    finally:
        router.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clusters", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument(
        "--businesses",
        type=int,
        default=0,
        help="businesses shared by all submitters (0: one per submitter)",
    )
    ap.add_argument("--fsync", action="store_true", help="fsync on (durable on power loss)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="e2e-clusters-"))
    os.chmod(root, 0o755)
    servers: list[PgCluster] = []
    try:
        for i in range(max(args.clusters)):
            servers.append(PgCluster(root / f"pg{i}", args.fsync).start())
        print(f"{'clusters':>8} {'accepted/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'moved/s':>8} {'refused':>7} {'exactly-once':>12} {'relay ms/msg':>12} "
              f"{'pg ms/msg':>9} {'load':>5}")  # fmt: skip
        for run, n in enumerate(args.clusters):
            tag = f"run{run}_{n}"
            dsns = {f"c{i}": servers[i].create(tag) for i in range(n)}
            pmap = initial(list(dsns), os.urandom(16))
            ctx = mp.get_context("spawn")
            out = ctx.Queue()
            start_at = time.time() + 3.0 + n
            workers = [
                ctx.Process(target=_worker, args=(i, args.procs, args.threads, args.businesses,
                                                  args.seconds, pmap.to_json(), dsns, start_at,
                                                  out))
                for i in range(args.procs)
            ]  # fmt: skip
            for w in workers:
                w.start()
            while time.time() < start_at:
                time.sleep(0.005)
            pg0 = sum(s.cpu_seconds() for s in servers[:n])
            time.sleep(args.seconds)
            pg_cpu = sum(s.cpu_seconds() for s in servers[:n]) - pg0
            results = [out.get(timeout=120 + args.seconds) for _ in workers]
            for w in workers:
                w.join(30)
            load = os.getloadavg()[0]
            accepted = sum(r[0] for r in results)
            refused = sum(r[1] for r in results)
            copies = sum(r[2] for r in results)
            moved = sum(r[3] for r in results)
            lat = sorted(x for r in results for x in r[4])
            client_cpu = sum(r[5] for r in results)
            stored, left = _drain_and_check(pmap, dsns, copies)
            once = "yes" if stored == copies and left == 0 else f"NO {stored}/{copies}"
            p50 = statistics.median(lat) * 1e3 if lat else 0.0
            p99 = lat[int(len(lat) * 0.99)] * 1e3 if lat else 0.0
            per = 1e3 / max(1, accepted)
            print(f"{n:>8} {accepted / args.seconds:>10.0f} {p50:>7.1f} {p99:>7.1f} "
                  f"{moved / args.seconds:>8.0f} {refused:>7} {once:>12} "
                  f"{client_cpu * per:>12.3f} {pg_cpu * per:>9.3f} {load:>5.1f}",
                  flush=True)  # fmt: skip
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
