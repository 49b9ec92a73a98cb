"""Client processes killed with SIGKILL, for real (SPEC.md §10.11): a customer's process sending
and a business bot's process receiving, each killed again and again at random moments while the
relay process runs, each started again from its store. Their applications keep what they learnt
in a file with the event position it reached (one appended line per event), the exactly-once
pattern: in the end the bot's application has every message exactly once and the customer's
application one fate for each of its sends."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from relayhelp import ROOT, RelayProcess

from e2e.client import Client
from e2e.client.http import RelayClient
from e2e.store.sqlite import SqliteStore

pytestmark = [pytest.mark.fault, pytest.mark.crash]

#: One device's process: ``send`` sends the intents it has no fate for (under the
#: application's own message ids), ``recv`` syncs; both write every event to the ledger.
CHILD = r"""
import asyncio, os, sys
from e2e.client import Client, MessageReceived, MessageSent, SendRefused
from e2e.client.http import RelayClient
from e2e.errors import E2EError
from e2e.store.sqlite import SqliteStore

mode, url, db, ledger = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[5]
key = bytes.fromhex(sys.argv[4])

def read_ledger():
    position, lines = 0, []
    if os.path.exists(ledger):
        for line in open(ledger).read().split("\n")[:-1]:  # a cut last line is not there
            seq, kind, mid = line.split()
            position = int(seq)
            lines.append((kind, mid))
    return position, lines

def record(ev, kind, mid, fd):
    os.write(fd, f"{ev.seq} {kind} {mid}\n".encode())

async def drain(client, position, fd):
    while True:
        batch = await client.read_events(after=position)
        if not batch:
            return position
        for ev in batch:
            if isinstance(ev, MessageReceived):
                record(ev, "received", ev.message.message_id.hex(), fd)
            elif isinstance(ev, MessageSent):
                record(ev, "sent", ev.message.message_id.hex(), fd)
            elif isinstance(ev, SendRefused):
                record(ev, "refused", ev.message_id.hex(), fd)
            else:
                record(ev, "other", "-", fd)
            position = ev.seq
        await client.ack(position)

async def main():
    net = RelayClient(url, retries=2)
    while True:
        try:
            client = await Client.open(lambda: SqliteStore(db, key), net.connect)
            break
        except E2EError:
            await asyncio.sleep(0.1)
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    position, lines = read_ledger()
    position = await drain(client, position, fd)
    print("up", flush=True)
    if mode == "send":
        intents = open(sys.argv[6]).read().split()
        fated = {mid for kind, mid in read_ledger()[1] if kind in ("sent", "refused")}
        for i, mid in enumerate(intents):
            if mid in fated:
                continue
            try:
                await client.send("acme", f"m{i}", message_id=bytes.fromhex(mid))
            except E2EError:
                pass
            position = await drain(client, position, fd)
            print("sent", i, flush=True)
            await asyncio.sleep(0.05)  # an application's pace: the kills land mid-conversation
        print("done", flush=True)
    else:
        want = int(sys.argv[6])
        while sum(1 for kind, _ in read_ledger()[1] if kind == "received") < want:
            try:
                await client.sync(wait_ms=300)
            except E2EError:
                pass
            position = await drain(client, position, fd)
            print("synced", flush=True)
        print("done", flush=True)
    await client.aclose()
    await net.aclose()

asyncio.run(main())
"""


def _ledger(path: Path) -> list[tuple[int, str, str]]:
    out = []
    for line in path.read_text().split("\n")[:-1]:
        seq, kind, mid = line.split()
        out.append((int(seq), kind, mid))
    return out


def test_client_processes_killed_again_and_again(tmp_path: Path) -> None:
    relay = RelayProcess(str(tmp_path / "relay.sqlite"), log_path=tmp_path / "relay.log").start()
    keys = {"carol": os.urandom(32), "acme": os.urandom(32)}
    dbs = {name: str(tmp_path / f"{name}.db") for name in keys}
    total, kills = 100, 0
    rng = random.Random(os.urandom(8))
    intents = [rng.randbytes(16).hex() for _ in range(total)]
    (tmp_path / "intents").write_text(" ".join(intents))

    async def setup() -> None:
        net = RelayClient(relay.url)
        for name, kind in (("carol", "customer"), ("acme", "business")):
            key = keys[name]
            c = await Client.create_account(lambda n=name, k=key: SqliteStore(dbs[n], k),
                                            net.connect, name, kind)  # fmt: skip
            await c.aclose()
        await net.aclose()

    asyncio.run(setup())

    def start(mode: str) -> subprocess.Popen[str]:
        name = "carol" if mode == "send" else "acme"
        arg = str(tmp_path / "intents") if mode == "send" else str(total)
        cmd = [sys.executable, "-c", CHILD, mode, relay.url, dbs[name], keys[name].hex(),
               str(tmp_path / f"{name}.ledger"), arg]  # fmt: skip
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip

    try:
        procs = {mode: start(mode) for mode in ("send", "recv")}
        while kills < 20 and any(p.poll() is None for p in procs.values()):
            mode = rng.choice([m for m, p in procs.items() if p.poll() is None])
            proc = procs[mode]
            assert proc.stdout is not None
            while (line := proc.stdout.readline()) and line.strip() != "up":
                pass  # started, and caught up with its events
            time.sleep(rng.uniform(0.0, 0.3))  # mid-send or mid-sync
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                kills += 1
                procs[mode] = start(mode)
        for mode, proc in procs.items():
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, (mode, err[-2000:])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        relay.stop()
    assert kills >= 8  # (fewer when a loaded machine lets the processes finish first)
    sent = _ledger(tmp_path / "carol.ledger")
    got = _ledger(tmp_path / "acme.ledger")
    for ledger in (sent, got):
        assert [s for s, _, _ in ledger] == sorted({s for s, _, _ in ledger})  # none repeated
    fates = [(kind, mid) for _, kind, mid in sent if kind in ("sent", "refused")]
    assert sorted(fates) == sorted(("sent", mid) for mid in intents)  # one fate per send
    received = [mid for _, kind, mid in got if kind == "received"]
    assert sorted(received) == sorted(intents)  # each message once
