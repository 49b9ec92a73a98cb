"""The relay's HTTP front (SPEC.md §10.13): what a client that has not authenticated can hold.

uvicorn parses HTTP; this module wraps its protocol (one instance per connection) with the
limits uvicorn does not have, from :class:`~e2e.relay.config.Edge`:

* connections: at most ``max_connections`` open, ``max_connections_per_address`` from one IP
  address; a connection beyond either is answered 503 and closed before anything is read;
* headers: the request line and headers must arrive within ``header_timeout`` of the
  connection's opening or of the request's first byte (else 408 and close), in at most
  ``max_header_bytes`` bytes and ``max_headers`` lines (else 431 and close), so a slow or
  endless header costs a bounded buffer for a bounded time;
* bodies: at most ``body_timeout`` of silence while a body is read and ``body_deadline`` for
  the whole of it (else the connection is closed and the request fails);
* stopping: when the server stops, :meth:`EdgeState.begin_shutdown` runs the app's hooks (its
  long-polls answer at once) so the relay exits within ``shutdown_seconds``.

What the app does after the headers (authentication before any body is read, body sizes per
endpoint, the bytes of bodies in flight, long-poll caps) is :mod:`e2e.relay.app`'s.
The httptools parser (the default) gets every limit; the h11 fallback gets h11's own header
size limit instead of the line count.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar, Final

from e2e.errors import LimitExceeded
from e2e.platform.wire import CONTENT_TYPE, WireError
from e2e.relay.config import Edge

__all__ = ["EdgeState", "protocol_class", "raw_response"]

_HEAD: Final = 0
_BODY: Final = 1


def raw_response(status: int, reason: str, err: WireError, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 response with an error body that closes the connection."""
    body = err.to_bytes()
    head = [
        f"HTTP/1.1 {status} {reason}",
        f"content-type: {CONTENT_TYPE}",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


_FULL: Final = raw_response(
    503, "Service Unavailable", WireError("overloaded", "too many connections"), 1
)
_SLOW: Final = raw_response(408, "Request Timeout", WireError("timeout", "request too slow"))
_HUGE: Final = raw_response(
    431, "Request Header Fields Too Large", WireError.of(LimitExceeded("headers too large"))[1]
)


class EdgeState:
    """What every connection of one server shares: the open connections by address, the
    refusals by reason (for metrics) and what runs when the server stops."""

    def __init__(self, limits: Edge) -> None:
        self.limits = limits
        self.open = 0
        self.by_address: dict[str, int] = {}
        #: Connections refused or closed by the front, by reason.
        self.refused: Counter[str] = Counter()
        self.stopping = False
        self._hooks: list[Callable[[], None]] = []

    def on_shutdown(self, hook: Callable[[], None]) -> None:
        self._hooks.append(hook)

    def begin_shutdown(self) -> None:
        """The server stops: run the hooks once (the app ends its long-polls)."""
        if not self.stopping:
            self.stopping = True
            for hook in self._hooks:
                hook()

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; the reason it is refused, if it is."""
        if self.open >= self.limits.max_connections:
            return "connections"
        if self.by_address.get(address, 0) >= self.limits.max_connections_per_address:
            return "address"
        self.open += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1
        return None

    def release(self, address: str) -> None:
        self.open -= 1
        left = self.by_address[address] - 1
        if left:
            self.by_address[address] = left
        else:
            del self.by_address[address]


class _Guard:
    """The limits, as a mixin before a uvicorn HTTP protocol class (see :func:`protocol_class`).
    Its attributes are prefixed ``_g_`` so they never meet the protocol's own."""

    edge: ClassVar[EdgeState]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    flow: Any

    _g_address: str = ""
    _g_counted: bool = False
    _g_closed: bool = False
    _g_phase: int = _HEAD
    _g_head: int = 0
    _g_lines: int = 0
    _g_timer: asyncio.TimerHandle | None = None
    _g_deadline: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        peer = transport.get_extra_info("peername")
        self._g_address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        refused = self.edge.admit(self._g_address)
        if refused is not None or self.edge.stopping:
            self._g_close(_FULL, refused or "stopping")
            return
        self._g_counted = True
        self._g_arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._g_cancel()
        if self._g_counted:
            self._g_counted = False
            self.edge.release(self._g_address)
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._g_closed:
            return
        if self._g_phase == _HEAD:
            self._g_head += len(data)
            if self._g_timer is None:  # the first bytes of a request on a kept-alive connection
                self._g_arm_head()
        super().data_received(data)  # type: ignore[misc]
        self._g_after_data()
        if self._g_phase == _HEAD and self._g_head > self.edge.limits.max_header_bytes:
            self._g_close(_HUGE, "header_size")

    def shutdown(self) -> None:
        self.edge.begin_shutdown()
        super().shutdown()  # type: ignore[misc]

    def _g_after_data(self) -> None:
        """After the parser has run on new bytes (the h11 protocol tells its phase here)."""

    # -- phases ----------------------------------------------------------------------------

    def _g_headers_done(self) -> None:
        self._g_cancel()
        self._g_phase = _BODY
        limits = self.edge.limits
        self._g_timer = self.loop.call_later(limits.body_timeout, self._g_idle)
        self._g_deadline = self.loop.call_later(limits.body_deadline, self._g_expire, "body")

    def _g_body_data(self) -> None:
        if self._g_timer is not None:
            self._g_timer.cancel()
        self._g_timer = self.loop.call_later(self.edge.limits.body_timeout, self._g_idle)

    def _g_message_done(self) -> None:
        self._g_cancel()
        self._g_phase = _HEAD
        self._g_head = self._g_lines = 0

    def _g_arm_head(self) -> None:
        self._g_timer = self.loop.call_later(
            self.edge.limits.header_timeout, self._g_expire, "header"
        )

    def _g_cancel(self) -> None:
        for timer in (self._g_timer, self._g_deadline):
            if timer is not None:
                timer.cancel()
        self._g_timer = self._g_deadline = None

    def _g_idle(self) -> None:
        """No body bytes for ``body_timeout``: close, unless the app is the one not reading
        (the protocol paused reading because the app has not taken the body yet)."""
        self._g_timer = None
        if self.flow is not None and getattr(self.flow, "read_paused", False):
            self._g_body_data()
            return
        self._g_expire("body")

    def _g_expire(self, phase: str) -> None:
        self._g_close(_SLOW if phase == "header" else b"", f"{phase}_timeout")

    def _g_close(self, answer: bytes, reason: str) -> None:
        """Refuse: count the reason, answer if nothing was answered yet, and close."""
        self._g_cancel()
        if self._g_closed:
            return
        self._g_closed = True
        self.edge.refused[reason] += 1
        if not self.transport.is_closing():
            if answer:
                self.transport.write(answer)
            self.transport.close()

    # -- httptools parser callbacks (the h11 protocol has none) -----------------------------

    def on_message_begin(self) -> None:
        self._g_lines = 0
        super().on_message_begin()  # type: ignore[misc]

    def on_url(self, url: bytes) -> None:
        if not self._g_closed:
            super().on_url(url)  # type: ignore[misc]

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._g_closed:
            return
        self._g_lines += 1
        if self._g_lines > self.edge.limits.max_headers:
            self._g_close(_HUGE, "header_count")
            return
        super().on_header(name, value)  # type: ignore[misc]

    def on_headers_complete(self) -> None:
        if self._g_closed:
            return
        self._g_headers_done()
        super().on_headers_complete()  # type: ignore[misc]

    def on_body(self, body: bytes) -> None:
        if self._g_closed:
            return
        self._g_body_data()
        super().on_body(body)  # type: ignore[misc]

    def on_message_complete(self) -> None:
        if self._g_closed:
            return
        self._g_message_done()
        super().on_message_complete()  # type: ignore[misc]


class _H11Guard(_Guard):
    """The h11 protocol has no parser callbacks: its connection's state after each read tells
    the phase (IDLE: headers, SEND_BODY: body, DONE: read)."""

    conn: Any

    def _g_after_data(self) -> None:
        import h11

        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._g_phase == _HEAD:
                self._g_headers_done()
            else:
                self._g_body_data()
        elif state is h11.DONE and self._g_phase == _BODY:
            self._g_message_done()
        elif state is h11.DONE and self._g_timer is not None and self._g_phase == _HEAD:
            self._g_message_done()  # a request without a body: its headers came complete


def protocol_class(http: str, state: EdgeState) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol ``http`` ("httptools" or "h11") with the limits of ``state``;
    pass it as uvicorn's ``http`` setting."""
    if http == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        class RelayHttpTools(_Guard, HttpToolsProtocol):
            edge = state

        return RelayHttpTools
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class RelayH11(_H11Guard, H11Protocol):
        edge = state

    return RelayH11
