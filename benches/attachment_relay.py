"""An attachment through the relay on loopback (SPEC.md §16, §10.12): upload and download
throughput and the memory both ends hold.

    python benches/attachment_relay.py [--mib 256] [--runs 3] [--pg-dsn DSN] [--http h11]

Starts ``python -m e2e relay serve`` (SQLite beside a temporary directory, or a fresh database
on the PostgreSQL cluster of ``--pg-dsn``), makes a customer and a business as e2e.client
devices over HTTP, writes a file of ``--mib`` MiB of random bytes, and per run times:

* ``send_attachment``: reading the file, encrypting it (256 KiB chunks, SHA-256 digest),
  uploading the blob in 4 MiB requests and sending the message, until the relay's receipt;
* ``download``: the business fetching the blob, verifying every chunk and the digest, and
  writing the file (synced, renamed);
* the same file's encryption alone (Encryptor over the file, no network), so the share of
  the transfer that is the format's own work shows.

Prints MiB/s per run (the median last), the client's peak resident memory above what it held
before the first transfer (VmHWM), and the relay process's peak (VmHWM of its pid). The
machine is shared: quote the figures with the load average, which is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "relay"))

from relayhelp import RelayProcess, drop_pg_db, fresh_pg_db  # noqa: E402

from e2e.attachment import Encryptor  # noqa: E402
from e2e.client import Client  # noqa: E402
from e2e.client.http import RelayClient  # noqa: E402
from e2e.store import MemoryStore  # noqa: E402


def _status(field: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _encrypt_only(path: Path) -> float:
    start = time.perf_counter()
    enc = Encryptor()
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            enc.update(piece)
    for _ in enc.finish():
        pass
    return time.perf_counter() - start


async def _run(url: str, path: Path, out: Path, runs: int) -> dict[str, list[float] | int]:
    net = RelayClient(url)
    cust = await Client.create_account(MemoryStore(), net.connect, "dana", "customer")
    shop = await Client.create_account(MemoryStore(), net.connect, "acme", "business", tier=1)
    await cust.send("acme", "hello")
    await shop.sync()
    base = _status("VmRSS")
    up: list[float] = []
    down: list[float] = []
    enc: list[float] = []
    for _ in range(runs):
        enc.append(_encrypt_only(path))
        start = time.perf_counter()
        await cust.send_attachment("acme", path, content_type="video/mp4")
        up.append(time.perf_counter() - start)
        (msg,) = [m for m in await shop.sync() if m.attachment]
        start = time.perf_counter()
        await shop.download(msg, out)
        down.append(time.perf_counter() - start)
        out.unlink()
    peak = _status("VmHWM") - base
    for c in (cust, shop):
        await c.aclose()
    await net.aclose()
    return {"up": up, "down": down, "encrypt": enc, "client_peak": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg-dsn", default=None)
    parser.add_argument("--http", default="auto", choices=["auto", "h11", "httptools"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "video.mp4"
        with open(path, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        db = fresh_pg_db(args.pg_dsn) if args.pg_dsn else str(Path(tmp) / "relay.db")
        relay = RelayProcess(db, log_path=Path(tmp) / "relay.log", extra=[
            "--http", args.http, "--blob-max-bytes", str(2 * (args.mib + 64) << 20),
            "--blob-quota-bytes", str(4 * args.runs * (args.mib + 64) << 20),
        ]).start()  # fmt: skip
        try:
            got = asyncio.run(_run(relay.url, path, Path(tmp) / "got.mp4", args.runs))
            assert relay.proc is not None
            relay_peak = _status("VmHWM", str(relay.proc.pid))
        finally:
            relay.stop()
            if args.pg_dsn:
                drop_pg_db(args.pg_dsn, db)
    mib = args.mib
    load = os.getloadavg()
    print(f"{mib} MiB attachment through the relay on loopback "
          f"({'PostgreSQL' if args.pg_dsn else 'SQLite + files'}, {args.http}); "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    for name in ("up", "down", "encrypt"):
        secs = got[name]
        assert isinstance(secs, list)
        rates = ", ".join(f"{mib / s:.0f}" for s in secs)
        print(f"  {name:8} MiB/s per run: {rates}; median {mib / statistics.median(secs):.0f}")
    print(f"  client peak memory above its start: {int(got['client_peak']) / 2**20:.1f} MiB")
    print(f"  relay process peak resident memory: {relay_peak / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
