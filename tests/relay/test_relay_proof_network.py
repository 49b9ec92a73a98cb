"""The confidentiality proof through the network relay: clients (e2e.client over HTTP, each on
its own encrypted store) talk through ``python -m e2e relay serve`` running as a separate
process with its tap on, on SQLite and on PostgreSQL. Nothing the relay received or sent (the
tap), stored (its whole database) or logged holds a message text or a franking key, except the
texts and keys a customer revealed in a spam report; the reported messages verify after a
relay restart."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relayhelp import RelayProcess, relay_bytes

from e2e.client import Client
from e2e.client.http import RelayClient
from e2e.platform.policy import MessageClass
from e2e.store.sqlite import SqliteStore


def test_relay_sees_no_text_or_key(relay_db: str, tmp_path: Path) -> None:
    tap = tmp_path / "tap.bin"
    log = tmp_path / "relay.log"
    extra = ["--tap", str(tap), "--log-level", "debug", "--rate", "10000"]
    proc = RelayProcess(relay_db, log_path=log, extra=extra)
    proc.start()
    keys: dict[str, bytes] = {}

    def store(name: str) -> Callable[[], Any]:
        key = keys.setdefault(name, os.urandom(32))
        return lambda: SqliteStore(tmp_path / f"{name}.db", key)

    texts: list[bytes] = []
    reported: list[bytes] = []
    fks: list[bytes] = []
    reported_fks: list[bytes] = []

    async def run() -> None:
        net = RelayClient(proc.url)
        c = net.connect
        cust = await Client.create_account(store("cust"), c, "dana", "customer")
        other = await Client.create_account(store("cust2"), c, "erik", "customer")
        admin = await Client.create_account(store("admin"), c, "acme", "business", tier=1)
        for i in range(4):
            t = f"customer secret {i} {os.urandom(6).hex()}".encode()
            texts.append(t)
            await cust.send("acme", t)
            t2 = f"second customer {i} {os.urandom(6).hex()}".encode()
            texts.append(t2)
            await other.send("acme", t2)
            await admin.sync()
            r = f"agent reply {i} {os.urandom(6).hex()}".encode()
            texts.append(r)
            await admin.send("dana", r)
            await admin.send("erik", r + b"!")
            texts.append(r + b"!")
        await cust.opt_in("acme")
        spam = f"buy now {os.urandom(6).hex()}".encode()
        await admin.send("dana", spam, MessageClass.MARKETING)
        await cust.sync()
        await other.sync()
        # The relay restarts before the report: franking keys are persisted.
        proc.stop()
        proc.start()
        received = [m for m in await cust.history("acme") if not m.outgoing]
        reported.extend(m.body for m in received[-5:])
        reported_fks.extend(m.franking_key for m in received[-5:])
        for client in (cust, other):
            for m in await client.history("acme"):
                if m.franking_key:
                    fks.append(m.franking_key)
        assert await cust.report_spam("acme") == len(reported)
        texts.append(spam)
        for client in (cust, other, admin):
            await client.aclose()
        await net.aclose()

    try:
        asyncio.run(run())
    finally:
        proc.stop()
    seen_by_relay = tap.read_bytes() + relay_bytes(relay_db)
    logged = log.read_bytes()
    assert len(texts) >= 17 and len(fks) >= 9
    for t in texts:
        assert t not in logged
        if t in reported:
            assert t in seen_by_relay  # revealed in the report: the relay does see those
        else:
            assert t not in seen_by_relay, t
    for fk in fks:
        assert fk not in logged and fk.hex().encode() not in logged
        if fk not in reported_fks:
            assert fk not in seen_by_relay
