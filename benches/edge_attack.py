"""The relay's edge under attack (SPEC §10.13; not part of the ratio gate, not a CI gate):

    python benches/edge_attack.py [--slow 2000] [--bodies 200] [--requests 400] [--seconds 30]

starts ``python -m e2e relay serve`` on a fresh SQLite file with its default edge settings,
registers one honest device, and measures its request latency (``/v1/prekeys/count``, signed,
one at a time) first on a quiet relay, then while an attacker process holds against it:

* ``--slow`` slowloris connections: each sends half a request header, then a byte every
  second, and is reopened as soon as the relay cuts it (so the number held stays up);
* ``--bodies`` connections each sending a body of the largest request size (4 MiB) to
  ``/v1/messages/submit`` under a made-up signature, 64 KiB every 0.1 s, reopened a second
  after the relay answers or cuts it (a relay that buffers bodies before authenticating holds
  up to 800 MiB of them).

The attack's connections come from 127.0.0.2 upwards, at most 200 per address (any 127/8
address is loopback), so they stay under the per-address cap and the relay must hold them
(its total cap, 4096, is above what is sent). It prints the honest p50/p90/max latency and
errors, quiet and attacked, the relay's resident memory (quiet, and the largest seen during
the attack), and how the attacker's connections ended (the relay's status codes, or cut).
``run`` is also what ``tests/relay/test_relay_edge.py`` runs, small, to check the refusals.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "relay"))

from relayhelp import RelayProcess, new_device  # noqa: E402

from e2e.platform import wire  # noqa: E402

PER_ADDRESS = 200
#: Seconds an attacker's connection waits before reopening once the relay has cut it (a
#: held connection, not a connection flood).
REOPEN = 1.0


def _address(i: int) -> str:
    return f"127.0.0.{2 + i // PER_ADDRESS}"


Play = Callable[[asyncio.StreamReader, asyncio.StreamWriter, float], Awaitable[bytes]]


async def _held(play: Play, port: int, source: str, outcomes: Counter[str], stop: float) -> None:
    """One attacker connection from ``source``, played by ``play`` (which returns the first
    line of the relay's answer), reopened a second after the relay answers or cuts it, until
    ``stop``; each ending counted by status code, or as cut."""
    while time.monotonic() < stop:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        except OSError:
            outcomes["connect failed"] += 1
            await asyncio.sleep(0.5)
            continue
        try:
            line = await play(r, w, stop)
            if line:
                outcomes[line.split(b" ")[1].decode() if line.startswith(b"HTTP/") else "cut"] += 1
        except (OSError, IndexError):
            outcomes["cut"] += 1
        finally:
            w.close()
        await asyncio.sleep(REOPEN)


async def _slow(r: asyncio.StreamReader, w: asyncio.StreamWriter, stop: float) -> bytes:
    """Slowloris: half a request header, then a byte a second."""
    w.write(b"POST /v1/mailbox/fetch HTTP/1.1\r\nhost: x\r\n")
    await w.drain()
    while time.monotonic() < stop:
        try:
            return await asyncio.wait_for(r.readline(), 1.0)
        except TimeoutError:
            w.write(b"x")  # a header line that never ends
            await w.drain()
    return b""


_SIZE: Final = wire.MAX_REQUEST_BYTES
_BODY_HEAD: Final = (
    f"POST {wire.Path.MESSAGE_SUBMIT} HTTP/1.1\r\nhost: x\r\ncontent-length: {_SIZE}\r\n"
    f"authorization: E2E-Device {'A' * 200}\r\n\r\n"
).encode()


async def _body(r: asyncio.StreamReader, w: asyncio.StreamWriter, stop: float) -> bytes:
    """A body of the largest request size (4 MiB) under a made-up signature, 64 KiB every
    0.1 s, then the wait for the answer."""
    chunk = b"\0" * 65536
    w.write(_BODY_HEAD)
    sent, wait = 0, 0.1
    while time.monotonic() < stop:
        if sent < _SIZE:
            w.write(chunk[: _SIZE - sent])
            sent += min(len(chunk), _SIZE - sent)
            await w.drain()
        else:
            wait = stop - time.monotonic()
        try:
            return await asyncio.wait_for(r.readline(), max(wait, 0.01))
        except TimeoutError:
            continue
    return b""


def _attack(port: int, slow: int, bodies: int, seconds: float, out: Any) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> Counter[str]:
        outcomes: Counter[str] = Counter()
        stop = time.monotonic() + seconds
        tasks = [_held(_slow, port, _address(i), outcomes, stop) for i in range(slow)]
        tasks += [_held(_body, port, _address(slow + i), outcomes, stop) for i in range(bodies)]
        await asyncio.gather(*tasks)
        return outcomes

    out.put(dict(asyncio.run(main())))


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _honest(dev: Any, n: int, pause: float = 0.0) -> tuple[list[float], int]:
    times, errors = [], 0
    for _ in range(n):
        started = time.perf_counter()
        try:
            dev.call(wire.Path.PREKEY_COUNT, wire.CountPrekeys(), wire.PrekeyCount)
            times.append(time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - a failed honest request is what is counted
            errors += 1
        time.sleep(pause)
    return times, errors


def run(slow: int, bodies: int, requests: int, seconds: float, env: dict[str, str] | None = None,
        settle: float = 3.0) -> dict[str, Any]:  # fmt: skip
    """Quiet and attacked honest latency, relay memory and the attack's outcomes."""
    with tempfile.TemporaryDirectory() as tmp:
        relay = RelayProcess(str(Path(tmp) / "relay.db"), env=env or {}).start()
        assert relay.proc is not None
        pid = relay.proc.pid
        try:
            with httpx.Client(base_url=relay.url, timeout=30) as c:
                dev = new_device(c, b"honest", 0)
                _honest(dev, 20)
                quiet, quiet_errors = _honest(dev, requests)
                quiet_rss = _rss(pid)
                q: Any = mp.get_context("spawn").Queue()
                attacker = mp.get_context("spawn").Process(
                    target=_attack, args=(relay.port, slow, bodies, seconds, q))  # fmt: skip
                attacker.start()
                peak = [quiet_rss]
                done = threading.Event()

                def watch() -> None:
                    while not done.wait(0.25):
                        peak[0] = max(peak[0], _rss(pid))

                watcher = threading.Thread(target=watch)
                watcher.start()
                time.sleep(settle)  # the connections are opened and held
                pause = max(0.0, (seconds - settle - 2) / requests - 0.002)
                attacked, attacked_errors = _honest(dev, requests, pause)
                outcomes = q.get(timeout=seconds + 60)
                attacker.join(30)
                done.set()
                watcher.join()
        finally:
            relay.stop()
    return {
        "quiet": quiet, "quiet_errors": quiet_errors, "attacked": attacked,
        "attacked_errors": attacked_errors, "quiet_rss": quiet_rss, "peak_rss": peak[0],
        "outcomes": outcomes,
    }  # fmt: skip


def _ms(xs: list[float], q: float) -> str:
    if not xs:
        return "-"
    xs = sorted(xs)
    return f"{xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slow", type=int, default=2000)
    ap.add_argument("--bodies", type=int, default=200)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--seconds", type=float, default=30.0)
    ns = ap.parse_args()
    r = run(ns.slow, ns.bodies, ns.requests, ns.seconds)
    print(f"attack: {ns.slow} slow connections, {ns.bodies} oversized bodies, {ns.seconds:.0f} s")
    print("honest requests   p50 ms  p90 ms  max ms  errors")
    for name in ("quiet", "attacked"):
        xs = r[name]
        print(f"  {name:<15} {_ms(xs, 0.5):>6}  {_ms(xs, 0.9):>6}  {_ms(xs, 1.0):>6}"
              f"  {r[name + '_errors']}/{len(xs) + r[name + '_errors']}")  # fmt: skip
    print(f"relay RSS: quiet {r['quiet_rss'] / 2**20:.0f} MiB, "
          f"attacked peak {r['peak_rss'] / 2**20:.0f} MiB")  # fmt: skip
    print("attack's connections ended:", dict(sorted(r["outcomes"].items())))
    print(f"p50 ratio attacked/quiet: "
          f"{statistics.median(r['attacked']) / statistics.median(r['quiet']):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
