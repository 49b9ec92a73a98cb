"""Accounts over several PostgreSQL clusters (SPEC §10.14): a submission commits on its chat's
home cluster, its copies for other clusters go through the home's outbox and are applied
exactly once however the outbox relay is killed, and a cluster that is down refuses (typed,
retryable) only the requests that need it and loses nothing acknowledged.

Each "cluster" is a database of its own on the test server (a router only sees DSNs); the
one that goes down is reached through a TCP gate that cuts every connection and refuses new
ones, as a crashed or unreachable server does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from relayhelp import ROOT, drop_pg_db, fresh_pg_db, pg_or_skip

from e2e.errors import DecodeError, DuplicateSubmission, StoreUnavailable
from e2e.platform.policy import MessageClass
from e2e.relay.backends import open_router
from e2e.relay.cluster import ClusterRouter, Copy, OutboxRelay, Submission, submission_digest
from e2e.relay.placement import PlacementMap, begin_move, cluster_of, initial, slot_of
from e2e.relay.store import BUSINESS, CUSTOMER, Quota

pytestmark = pytest.mark.pg
T = TypeVar("T")

SEED = b"cluster-test-sd!"
QUOTA = Quota(10_000, 1 << 30, 10_000, 1 << 30)


def name_on(pmap: PlacementMap, cluster: str, prefix: bytes) -> bytes:
    """An account name that ``pmap`` places on ``cluster``."""
    for i in range(10_000):
        name = prefix + b"-%d" % i
        if cluster_of(pmap, name) == cluster:
            return name
    raise AssertionError("no name found")


def message(sender: bytes, kind: int, peer: bytes, n: int,
            copies: list[tuple[bytes, int]]) -> Submission:  # fmt: skip
    mid = sender[:4] + n.to_bytes(12, "big")
    cs = tuple(Copy(a, d, b"env:" + mid + bytes([d]), b"t" * 32) for a, d in copies)
    return Submission(
        sender, kind, peer, mid, MessageClass.SERVICE, cs, submission_digest(sender, mid, cs)
    )


@pytest.fixture
def dbs() -> Iterator[dict[str, str]]:
    base = pg_or_skip()
    made = {name: fresh_pg_db(base) for name in ("a", "b")}
    try:
        yield made
    finally:
        for db in made.values():
            with contextlib.suppress(Exception):
                drop_pg_db(base, db)


def mailbox(router: ClusterRouter, account: bytes, device: int) -> list[bytes]:
    # Every copy, however many a fast machine sent (the submitters stop below the quota).
    return [m.envelope for m in router.fetch(account, device, limit=1_000_000)]


def test_a_cross_cluster_submission_is_applied_once_however_the_relay_dies(
    dbs: dict[str, str],
) -> None:
    pmap = initial(["a", "b"], SEED)
    router = open_router(pmap, dbs, QUOTA)
    try:
        cust = name_on(pmap, "a", b"cust")
        biz = name_on(pmap, "b", b"biz")
        # A customer's message: two copies for the business (on b), one for the customer's
        # own second device (on a, the chat's home).
        sub = message(cust, CUSTOMER, biz, 1, [(biz, 1), (biz, 2), (cust, 2)])
        receipt = router.submit(sub)
        assert (receipt.home, receipt.copies, receipt.forwarded) == ("a", 3, 2)
        assert mailbox(router, cust, 2) == [sub.copies[2].envelope]  # committed on the home
        assert mailbox(router, biz, 1) == [] and router.outbox_size("a") == 2
        # A retry gets the same receipt and forwards nothing again; a reuse is refused.
        again = router.submit(sub)
        assert (again.received_at, again.forwarded) == (receipt.received_at, 0)
        assert router.outbox_size("a") == 2
        other = message(cust, CUSTOMER, biz, 1, [(biz, 1)])
        with pytest.raises(DuplicateSubmission):
            router.submit(other)

        # Killed after taking, before applying: nothing happened.
        OutboxRelay(router, "a").take()
        assert mailbox(router, biz, 1) == []
        # Killed after applying, before clearing: the rows are still in the outbox...
        first = OutboxRelay(router, "a")
        delivered, stored = first.apply(first.take())
        assert stored == 2 and len(delivered) == 2 and router.outbox_size("a") == 2
        # ... and the next relay delivers them again, and the destination skips them.
        assert OutboxRelay(router, "a").pump() == 0
        assert router.outbox_size("a") == 0
        for device in (1, 2):
            assert mailbox(router, biz, device) == [sub.copies[device - 1].envelope]
        # Counted in the destination mailbox's usage, as a local delivery is.
        usage = router.run("b", lambda tx: tx.mailbox_usage(biz, 1))
        assert usage == (1, len(sub.copies[0].envelope))
        # The business answers: the chat's home is still the customer's cluster; its copy
        # for the customer is local there, its copy for its own device 2 goes to b.
        reply = message(biz, BUSINESS, cust, 2, [(cust, 1), (biz, 2)])
        assert router.submit(reply).forwarded == 1
        assert OutboxRelay(router, "a").pump() == 1
        assert mailbox(router, biz, 2)[-1] == reply.copies[1].envelope
        # Applied records are kept a day, then forgotten once the outbox is past them.
        relay = OutboxRelay(router, "a")
        assert relay.forget_applied("b") == 0
        router.clock = lambda: time.time() + 2 * 86_400
        assert relay.forget_applied("b") == 3
    finally:
        router.close()


def _pump_process(map_path: Path, dbs: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "e2e.relay.cluster_serve", "outbox", "--placement", str(map_path),
            "--origin", "a", "--batch", "7", "--idle", "0.01"]  # fmt: skip
    for name, dsn in dbs.items():
        args += ["--cluster", f"{name}={dsn}"]
    with log.open("ab") as out:
        return subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def test_outbox_relay_processes_killed_at_random_deliver_each_copy_once(
    dbs: dict[str, str], tmp_path: Path
) -> None:
    n = int(os.environ.get("E2E_CLUSTER_KILL_MESSAGES", "200"))
    pmap = initial(["a", "b"], SEED)
    map_path = tmp_path / "placement.json"
    map_path.write_text(pmap.to_json())
    router = open_router(pmap, dbs, QUOTA)
    try:
        custs = [name_on(pmap, "a", b"c%d" % i) for i in range(4)]
        biz = name_on(pmap, "b", b"biz")
        sent = [
            message(custs[i % 4], CUSTOMER, biz, i, [(biz, 1)]).copies[0].envelope for i in range(n)
        ]

        def send(k: int) -> None:  # four senders at once: their submissions share commits
            for i in range(k, n, 4):
                router.submit(message(custs[k], CUSTOMER, biz, i, [(biz, 1)]))

        senders = [threading.Thread(target=send, args=(k,)) for k in range(4)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        assert router.outbox_size("a") == n
        # Relay processes SIGKILLed mid-stream (two at once), as soon as they make progress.
        mid_stream = rounds = 0
        while (left := router.outbox_size("a")) and rounds < 2:
            procs = [_pump_process(map_path, dbs, tmp_path / "pump.log") for _ in range(2)]
            deadline = time.monotonic() + 30
            while router.outbox_size("a") == left and time.monotonic() < deadline:
                time.sleep(0.005)
            for proc in procs:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            mid_stream += router.outbox_size("a") > 0
            rounds += 1
        assert mid_stream >= 1, "no relay process was killed with rows left to move"
        OutboxRelay(router, "a").pump()
        while router.outbox_size("a"):
            OutboxRelay(router, "a").pump()
        got = Counter(mailbox(router, biz, 1))
        assert got == Counter(sent)  # every copy, each once
    finally:
        router.close()


class Gate:
    """A TCP forwarder to ``port`` that can go down: :meth:`down` resets every connection
    and answers new ones with a reset until :meth:`up`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.is_down = False
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.listen_port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _reset(s: socket.socket) -> None:
        # shutdown() first: close() alone would wait for the pipe thread blocked in recv().
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.is_down:
                self._reset(client)
                continue
            server = socket.create_connection(("127.0.0.1", self.port))
            with self.lock:
                self.conns += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        self._reset(dst)

    def down(self) -> None:
        self.is_down = True
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            self._reset(s)

    def up(self) -> None:
        self.is_down = False

    def close(self) -> None:
        self.down()
        self.sock.close()


@pytest.fixture
def gated(dbs: dict[str, str]) -> Iterator[tuple[ClusterRouter, Gate]]:
    """A router over clusters a and b, b reached through a :class:`Gate`."""
    params = conninfo_to_dict(dbs["b"])
    gate = Gate(int(params.get("port") or 5432))
    params.update(host="127.0.0.1", port=str(gate.listen_port), connect_timeout="5")
    dsns = {"a": dbs["a"], "b": make_conninfo(**params)}  # type: ignore[arg-type]
    router = open_router(initial(["a", "b"], SEED), dsns, QUOTA)
    try:
        router.store("b")  # opened while up (opening waits for a pooled connection)
        yield router, gate
    finally:
        router.close()
        gate.close()


def test_a_cluster_down_refuses_only_what_needs_it_and_loses_nothing_acknowledged(
    gated: tuple[ClusterRouter, Gate],
) -> None:
    router, gate = gated
    pmap = router.pmap
    cust_a, cust_b = name_on(pmap, "a", b"ca"), name_on(pmap, "b", b"cb")
    biz_a, biz_b = name_on(pmap, "a", b"ba"), name_on(pmap, "b", b"bb")
    acked: list[tuple[bytes, int, bytes]] = []

    def send(sub: Submission) -> None:
        router.submit(sub)
        acked.extend((c.account, c.device_id, c.envelope) for c in sub.copies)

    send(message(cust_b, CUSTOMER, biz_a, 0, [(biz_a, 1)]))  # home b, while up
    gate.down()
    # Needs only a: accepted, copies for b wait in a's outbox.
    send(message(cust_a, CUSTOMER, biz_b, 1, [(biz_b, 1)]))
    send(message(biz_b, BUSINESS, cust_a, 2, [(cust_a, 1), (biz_b, 2)]))
    send(message(cust_a, CUSTOMER, biz_a, 3, [(biz_a, 1)]))
    assert mailbox(router, biz_a, 1)[-1].startswith(b"env:")
    # Needs b (the chat's home, or the mailbox read): refused, typed and retryable.
    blocked = message(cust_b, CUSTOMER, biz_a, 4, [(biz_a, 1)])
    for attempt in (lambda: router.submit(blocked), lambda: router.fetch(biz_b, 1)):
        with pytest.raises(StoreUnavailable) as err:
            attempt()
        assert err.value.retryable and "cluster b" in str(err.value)
    # The outbox relay cannot deliver to b: its rows stay; b's own relay cannot run.
    assert OutboxRelay(router, "a").pump() == 0
    assert router.outbox_size("a") == 2
    with pytest.raises(StoreUnavailable):
        OutboxRelay(router, "b").pump()
    gate.up()
    deadline = time.monotonic() + 20
    while True:  # the refused submission, sent again once b is back
        try:
            send(blocked)
            break
        except StoreUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert OutboxRelay(router, "a").pump() == 2
    assert OutboxRelay(router, "b").pump() == 2  # b's customer's messages to biz_a
    stored = Counter(
        (account, device, env)
        for account, device in {(a, d) for a, d, _ in acked}
        for env in mailbox(router, account, device)
    )
    assert stored == Counter(acked)  # everything acknowledged, each once


def test_an_account_being_moved_refuses_writes_retryably(dbs: dict[str, str]) -> None:
    pmap = initial(["a", "b"], SEED)
    router = open_router(pmap, dbs, QUOTA)
    try:
        cust, other = name_on(pmap, "a", b"c"), name_on(pmap, "a", b"d")
        biz = name_on(pmap, "a", b"b")
        assert len({slot_of(SEED, n) for n in (cust, other, biz)}) == 3
        router.set_map(begin_move(pmap, [slot_of(SEED, cust)]))
        with pytest.raises(StoreUnavailable, match="moved") as err:
            router.submit(message(cust, CUSTOMER, biz, 1, [(biz, 1)]))
        assert err.value.retryable
        assert router.submit(message(other, CUSTOMER, biz, 1, [(biz, 1)])).home == "a"
        # A copy for an account being moved waits in the outbox, even on its own cluster.
        sub = message(biz, BUSINESS, other, 2, [(other, 1), (cust, 1)])
        assert router.submit(sub).forwarded == 1
        assert OutboxRelay(router, "a").pump() == 0  # held until the move ends
        assert router.outbox_size("a") == 1
        with pytest.raises(DecodeError, match="not newer"):
            router.set_map(pmap)
    finally:
        router.close()


def test_submissions_in_flight_when_a_cluster_fails_are_delivered_once_when_retried(
    gated: tuple[ClusterRouter, Gate],
) -> None:
    """Submitters keep sending while cluster b goes down and comes back (twice), and send
    each refused submission again once b is back, as a client does. A refused submission may
    have been committed (its answer lost with the connection): its retry gets the original
    receipt. In the end every copy of every submission is in its mailbox exactly once."""
    router, gate = gated
    pmap = router.pmap
    custs = [name_on(pmap, c, b"c%d" % i) for i, c in enumerate("abab")]
    bizs = [name_on(pmap, c, b"b%d" % i) for i, c in enumerate("baba")]
    acked: list[Submission] = []
    refused: list[Submission] = []
    stop = threading.Event()

    def submitter(i: int) -> None:
        n = 0
        while not stop.is_set() and n < 4_000:  # below QUOTA's 10,000 per mailbox
            n += 1
            sub = message(custs[i], CUSTOMER, bizs[i], n, [(bizs[i], 1), (custs[i], 2)])
            try:
                router.submit(sub)
            except StoreUnavailable:
                refused.append(sub)
                continue
            acked.append(sub)

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for _ in range(2):
        time.sleep(0.4)
        gate.down()
        time.sleep(0.4)
        gate.up()
    time.sleep(0.4)
    stop.set()
    for t in threads:
        t.join(30)
    assert refused, "b's failure should have refused some submissions"
    assert len(acked) > 20
    deadline = time.monotonic() + 30

    def until_up(fn: Callable[[], T]) -> T:
        while True:
            try:
                return fn()
            except StoreUnavailable:  # b's first statements after the outage
                assert time.monotonic() < deadline
                time.sleep(0.05)

    for sub in refused:
        until_up(lambda sub=sub: router.submit(sub))
    for origin in ("a", "b"):
        while until_up(lambda origin=origin: router.outbox_size(origin)):
            until_up(lambda origin=origin: OutboxRelay(router, origin).pump())
    sent = [c for sub in acked + refused for c in sub.copies]
    stored: Counter[tuple[bytes, int, bytes]] = Counter()
    for account, device in {(c.account, c.device_id) for c in sent}:
        got = until_up(lambda a=account, d=device: mailbox(router, a, d))
        stored.update((account, device, env) for env in got)
    assert stored == Counter((c.account, c.device_id, c.envelope) for c in sent)
