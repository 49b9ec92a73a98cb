"""Crashes: kill -9 of the relay process under load, restarted on the same database, again and
again. Every submission answered with success is delivered, stored once (retries with the same
message id after a crash add nothing), and once acknowledged is never delivered again.

``E2E_RELAY_CRASH_ITERS`` sets the number of kills (default 4 here; .ci/run runs 50 per backend
with ``-m crash``).
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import httpx
import pytest
from relayhelp import Dev, Refused, RelayProcess, new_device

from e2e.platform.envelope import Delivery
from e2e.platform.policy import MessageClass

CUSTOMER, BUSINESS = 0, 1
ITERS = int(os.environ.get("E2E_RELAY_CRASH_ITERS", "4"))


@pytest.mark.crash
def test_kill_9_under_load(relay_db: str, tmp_path: Path) -> None:
    proc = RelayProcess(relay_db, log_path=tmp_path / "relay.log", extra=["--rate", "10000"])
    proc.start()
    url = proc.url
    stop = threading.Event()
    lock = threading.Lock()
    succeeded: set[bytes] = set()
    attempted: set[bytes] = set()
    fetched: list[tuple[int, bytes]] = []  # (seq, message id) in fetch order
    acked_then_seen: list[int] = []
    acked: set[int] = set()
    errors: list[BaseException] = []
    try:
        with httpx.Client(base_url=url, timeout=10) as c:
            biz = new_device(c, b"shop", BUSINESS)
            senders = [new_device(c, b"cust%d" % i, CUSTOMER) for i in range(3)]

        def send_loop(dev: Dev) -> None:
            with httpx.Client(base_url=url, timeout=5) as c:
                dev.http = c
                while not stop.is_set():
                    envs = dev.envelopes(b"shop", [biz.addr], MessageClass.SERVICE)
                    mid = next(reversed(dev.sent))
                    with lock:
                        attempted.add(mid)
                    while True:  # retry the same submission until it is answered with success
                        try:
                            dev.submit(envs)
                            break
                        except (httpx.HTTPError, Refused) as exc:
                            if isinstance(exc, Refused) and exc.status < 500:
                                errors.append(exc)
                                return
                            time.sleep(0.02)
                    with lock:
                        succeeded.add(mid)

        def receive_loop(final: bool = False) -> None:
            with httpx.Client(base_url=url, timeout=5) as c:
                biz.http = c
                while final or not stop.is_set():
                    try:
                        box = biz.fetch()
                        items = [Delivery.from_bytes(d) for d in box.deliveries]
                        with lock:
                            for d in items:
                                if d.seq in acked:
                                    acked_then_seen.append(d.seq)
                                fetched.append((d.seq, d.open_envelope().message_id))
                        if final and not items:
                            return
                        biz.ack([d.seq for d in items])
                        with lock:
                            acked.update(d.seq for d in items)
                    except (httpx.HTTPError, Refused) as exc:
                        if isinstance(exc, Refused) and exc.status < 500:
                            errors.append(exc)
                            return
                        time.sleep(0.02)

        threads = [threading.Thread(target=send_loop, args=(d,)) for d in senders]
        threads.append(threading.Thread(target=receive_loop))
        for t in threads:
            t.start()
        rnd = random.Random(7)
        for _ in range(ITERS):
            time.sleep(rnd.uniform(0.1, 0.25))
            proc.kill()
            proc.start()
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        receive_loop(final=True)
    finally:
        stop.set()
        proc.stop()
    assert errors == []
    assert len(succeeded) >= ITERS  # there was load
    ids = [mid for _, mid in fetched]
    seqs_by_id: dict[bytes, set[int]] = {}
    for seq, mid in fetched:
        seqs_by_id.setdefault(mid, set()).add(seq)
    assert set(ids) >= succeeded  # every success was delivered
    assert set(ids) <= attempted
    assert all(len(s) == 1 for s in seqs_by_id.values())  # each message stored once
    assert acked_then_seen == []  # acknowledged deliveries never come back
