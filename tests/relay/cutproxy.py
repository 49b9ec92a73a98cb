"""A TCP proxy on loopback that cuts connections: the tests' way to drop an upload or a
download at a random byte, between a real client and a real relay process.

Each connection the proxy accepts is forwarded to the relay. While ``cuts`` is above zero,
every connection that forwards bytes in the direction under test (client to relay for
uploads, relay to client for downloads) gets a byte budget drawn from ``budget()``, counted
from there; when the bytes forwarded that way reach it, the proxy forwards exactly the bytes
up to the budget, then resets both sockets and counts one cut. With ``cuts`` at zero it
forwards everything.

While ``held`` is true the proxy forwards nothing, either way, on any connection (a network
that silently stops delivering: both ends' sends are still acknowledged, by the proxy's
kernel), and new connections are accepted but get nothing through; the held bytes go on once
``held`` is false again, as TCP would retransmit them after a partition heals.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

#: struct linger {on, 0 s}: close() sends a reset.
_LINGER_ZERO = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")


@dataclass
class CutProxy:
    target_port: int
    #: "up": count client-to-relay bytes; "down": relay-to-client bytes.
    direction: str = "up"
    cuts: int = 0
    budget: Callable[[], int] = field(default_factory=lambda: lambda: 1 << 20)
    port: int = 0
    done: int = 0
    held: bool = False
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arm(self, cuts: int, budget: Callable[[], int], direction: str) -> None:
        """Cut the next ``cuts`` connections, each after ``budget()`` bytes ``direction``."""
        self.cuts, self.budget, self.direction = cuts, budget, direction

    def start(self) -> CutProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            self._server = loop.run_until_complete(asyncio.start_server(self._serve, sock=sock))
            ready.set()
            loop.run_forever()
            self._server.close()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        state: dict[str, int | None] = {"left": None}

        def reset() -> None:
            for w in (writer, up_w):
                sock = w.get_extra_info("socket")
                if sock is not None:  # RST, not FIN: the peer sees a dropped connection
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
                w.close()

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, way: str) -> None:
            try:
                while True:
                    data = await src.read(65536)
                    while self.held:
                        await asyncio.sleep(0.02)
                    if not data:
                        break
                    left = state["left"]
                    counted = way == self.direction
                    if counted and left is None and self.cuts > 0:  # armed since: a budget
                        self.cuts -= 1
                        left = self.budget()
                    if counted and left is not None:
                        if len(data) >= left:
                            dst.write(data[:left])
                            with contextlib.suppress(OSError):
                                await dst.drain()
                            self.done += 1
                            state["left"] = None
                            reset()
                            return
                        state["left"] = left - len(data)
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(OSError):
                    dst.close()

        await asyncio.gather(pump(reader, up_w, "up"), pump(up_r, writer, "down"))


def uniform(rnd: random.Random, low: int, high: int) -> Callable[[], int]:
    return lambda: rnd.randint(low, high)
