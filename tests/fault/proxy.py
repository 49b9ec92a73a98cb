"""A fault proxy between clients and relay processes (HTTP/1.1 aware): every request it
passes may be dropped, reset, delayed, duplicated, or answered by the relay and then cut before
the answer reaches the client. Relay processes behind it may die (kill -9) and come back: a
request finds a live one, or its connection is reset.

Faults are drawn per request from :class:`Faults` with the proxy's own seeded random source, so
a schedule's seed decides them (in the order requests arrive)."""

from __future__ import annotations

import asyncio
import collections
import random
import socket
import struct
from dataclasses import dataclass, field

#: What the proxy can do to one request.
KINDS = ("drop", "reset", "cut", "partial", "delay", "duplicate")


@dataclass
class Faults:
    """Per-request probabilities of each fault (the rest pass untouched)."""

    drop: float = 0.0
    reset: float = 0.0
    cut: float = 0.0
    partial: float = 0.0
    delay: float = 0.0
    duplicate: float = 0.0
    #: Longest delay, in seconds.
    max_delay: float = 0.03

    def draw(self, rng: random.Random) -> str | None:
        x = rng.random()
        for kind in KINDS:
            p = getattr(self, kind)
            if x < p:
                return kind
            x -= p
        return None


@dataclass
class Stats:
    requests: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Requests that found no live relay (their connection was reset).
    no_relay: int = 0


class _Closed(Exception):
    pass


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 message: (head, body), by Content-Length (the relay and httpx send it)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
        raise _Closed from exc
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    try:
        body = await reader.readexactly(length) if length else b""
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise _Closed from exc
    return head, body


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class FaultProxy:
    """Listens on a loopback port and forwards each request to one of ``upstreams`` (ports
    of relay processes; :meth:`down` and :meth:`up` say which are alive)."""

    def __init__(self, upstreams: list[int], seed: int = 0) -> None:
        self.upstreams = list(upstreams)
        self.alive = set(upstreams)
        self.faults = Faults()
        self.rng = random.Random(seed)
        self.stats = Stats()
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._turn = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._idle: dict[int, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()  # the handlers see the connection closed and end
        for port in list(self._idle):
            for _, writer in self._idle.pop(port):
                writer.transport.abort()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._server = None

    def seed(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def down(self, port: int) -> None:
        self.alive.discard(port)
        for _, writer in self._idle.pop(port, []):
            writer.transport.abort()

    def up(self, port: int) -> None:
        self.alive.add(port)

    def _pick(self) -> int | None:
        live = [p for p in self.upstreams if p in self.alive]
        if not live:
            return None
        self._turn += 1
        return live[self._turn % len(live)]

    async def _exchange(self, port: int, head: bytes, body: bytes) -> tuple[bytes, bytes]:
        """One request to one relay (on a kept-alive connection if one is idle): its answer."""
        idle = self._idle.setdefault(port, [])
        while True:
            fresh = not idle
            if fresh:
                try:
                    conn = await asyncio.open_connection("127.0.0.1", port)
                except OSError as exc:
                    self.down(port)  # refused: that relay process is gone
                    raise _Closed from exc
            else:
                conn = idle.pop()
            reader, writer = conn
            try:
                writer.write(head + body)
                await writer.drain()
                answer = await _read_message(reader)
            except (_Closed, ConnectionError, OSError) as exc:
                writer.transport.abort()
                if fresh:
                    raise _Closed from exc
                continue  # a kept connection the relay had closed (or died on): a new one
            if port in self.alive and not writer.is_closing():
                idle.append(conn)
            else:
                writer.transport.abort()
            return answer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                try:
                    head, body = await _read_message(reader)
                except _Closed:
                    break
                if not await self._one(head, body, writer):
                    break
        finally:
            if task is not None:
                self._tasks.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    async def _one(self, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        """Handle one request; False once the client connection is closed."""
        self.stats.requests += 1
        fault = self.faults.draw(self.rng)
        if fault is not None:
            self.stats.faults[fault] += 1
        if fault == "drop":
            writer.transport.abort()
            return False
        if fault == "reset":
            _reset(writer)
            return False
        if fault == "delay":
            await asyncio.sleep(self.rng.random() * self.faults.max_delay)
        answer: tuple[bytes, bytes] | None = None
        for _ in range(len(self.upstreams)):
            port = self._pick()
            if port is None:
                break
            try:
                if fault == "duplicate":
                    other = self._pick() or port
                    first, second = await asyncio.gather(
                        self._exchange(port, head, body), self._exchange(other, head, body),
                        return_exceptions=True,
                    )  # fmt: skip
                    got = first if not isinstance(first, BaseException) else second
                    if isinstance(got, BaseException):
                        raise _Closed from got
                    answer = got
                else:
                    answer = await self._exchange(port, head, body)
                break
            except _Closed:
                continue
        if answer is None:
            self.stats.no_relay += 1
            _reset(writer)
            return False
        if fault == "cut":  # the relay has answered (and committed): the client never hears
            writer.transport.abort()
            return False
        out = answer[0] + answer[1]
        if fault == "partial":
            writer.write(out[: max(1, len(out) // 2)])
            await writer.drain()
            writer.transport.abort()
            return False
        try:
            writer.write(out)
            await writer.drain()
        except ConnectionError:
            return False
        return True
