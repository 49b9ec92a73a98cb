"""The relay as an ASGI application (SPEC.md §10.7).

:func:`create_app` returns a plain ASGI callable (HTTP and lifespan) that any ASGI server can
serve (``python -m e2e relay serve`` uses uvicorn) and any ASGI application can mount under a
path prefix (the relay routes on ``scope["path"]`` with ``scope["root_path"]`` removed).

Per request: it is routed (404); then the steps of :mod:`e2e.relay.pipeline` run in SPEC
§10.7's order (header, signature, rate, body read, decode, checks without the store, one
transaction), each timed by :meth:`RelayApp._dispatch` (the metrics'
``e2e_relay_seconds_total``); a fetch with a wait is held until mail arrives. The body is read
only by the pipeline's read step, once the caller is authenticated, at most the endpoint's
largest body (413) and within the budget of body bytes in flight (503), SPEC §10.13; a request
whose body was not read is answered with ``connection: close``. A refused request commits
nothing and is answered with its error's code (:mod:`e2e.platform.wire.errors`), 429 and 503
with ``retry-after``.
Logging goes to the ``e2e.relay`` logger, one record per request with the fields of
:mod:`e2e.relay.observe` (a request id, also answered as ``x-request-id``; method, path,
status, time and refusal code; never an account, device, address, body, key or header value):
refused requests at INFO, internal errors at ERROR, accepted ones at DEBUG. The metrics
(:class:`~e2e.relay.observe.Metrics`) are served only with the operator's bearer token.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from e2e.errors import (
    DecodeError,
    E2EError,
    LimitExceeded,
    MailboxFull,
    NoSuchEndpoint,
    Overloaded,
    Unauthenticated,
)
from e2e.platform.wire import (
    BLOB_PATH,
    CONTENT_TYPE,
    DEVICE,
    Fetch,
    Mailbox,
    Ok,
    Path,
    WireError,
)
from e2e.relay.blobio import BlobIO
from e2e.relay.config import Edge
from e2e.relay.edge import EdgeState
from e2e.relay.observe import Metrics, metrics_allowed, new_request_id
from e2e.relay.pipeline import CERTIFIED_STEPS, OPEN_STEPS, ROUTES, STEPS, Call, Pipeline
from e2e.relay.ratelimit import RateLimit
from e2e.relay.service import RelayService
from e2e.relay.tap import Tap

__all__ = ["create_app", "RelayApp"]

log = logging.getLogger("e2e.relay")

Scope = MutableMapping[str, Any]
Header = tuple[bytes, bytes]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Largest body of the unauthenticated no-op (the load bench's baseline).
NOOP_BODY: Final = 64 * 1024
#: Seconds between two looks at the mailbox table for deliveries by other relay processes,
#: on a backend that cannot notify across processes (SQLite): one query per process per tick,
#: whatever the number of long-polls held.
MAIL_TICK: Final = 0.5
#: Seconds a sender is told to wait after a full mailbox (its recipient must fetch first).
RETRY_AFTER_FULL: Final = 60
#: Bodies read before their sender is known (account and device registration, provisioning
#: and recovery fetches) may reserve at most this share of the in-flight budget (1/4), so
#: clients that are nobody cannot fill it for devices that signed (SPEC §10.13).
UNSIGNED_SHARE: Final = 4


class _Incoming:
    """One HTTP request's body as the app reads it: its declared length, and whether it has
    been read to its end (else the connection is closed after the answer)."""

    __slots__ = ("scope", "receive", "length", "chunked", "done", "reserved", "unsigned", "code")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.length: int | None = None
        self.chunked = False
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    self.length = int(value)
                except ValueError:
                    self.length = -1
            elif name == b"transfer-encoding":
                self.chunked = True
        self.done = not self.chunked and not self.length
        self.reserved = 0
        #: What of ``reserved`` was reserved before the sender was known.
        self.unsigned = 0
        #: The refusal's code, if the request was refused.
        self.code: str | None = None


class RelayApp:
    """The ASGI application. One per process; it owns its worker threads."""

    def __init__(
        self,
        service: RelayService,
        *,
        edge: Edge | None = None,
        rate_limit: RateLimit | None = None,
        tap: Tap | None = None,
        workers: int = 8,
        purge_seconds: float = 60.0,
        metrics_token: str = "",
    ) -> None:
        self.service = service
        self.store = service.store
        #: The edge limits the app applies itself (SPEC §10.13); the connection-level ones
        #: are :mod:`e2e.relay.edge`'s.
        self.edge = edge or Edge()
        self.rate_limit = rate_limit or RateLimit(200.0, 400.0)
        self.tap = tap
        self.purge_seconds = purge_seconds
        self.metrics = Metrics()
        self.counters: Counter[str] = self.metrics.counters
        #: The bearer token ``/v1/metrics`` asks for (none: metrics are not served).
        self.metrics_token = metrics_token
        #: Seconds spent in each step of the request path (:data:`~e2e.relay.pipeline.STEPS`),
        #: summed over requests (wall time, waits included).
        self.timers: dict[str, float] = dict.fromkeys((*STEPS, *CERTIFIED_STEPS, *OPEN_STEPS), 0.0)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="relay")
        self.pipeline = Pipeline(service, self.rate_limit, self._executor)
        self.blob_io = BlobIO(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[tuple[bytes, int], asyncio.Event] = {}
        #: Long-polls waiting now, in all and by device.
        self._polls = 0
        self._polls_by: Counter[tuple[bytes, int]] = Counter()
        #: Body bytes reserved by requests being read (SPEC §10.13).
        self.inflight = 0
        #: ... of which by requests whose sender is not known yet (:data:`UNSIGNED_SHARE`).
        self.unsigned_inflight = 0
        self.stopping = False
        #: The connection-level front's state, when the app is served with it (metrics).
        self.edge_state: EdgeState | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------------

    def _start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self.store.listen(self._wake_threadsafe)
        self._tasks.append(self._loop.create_task(self._upkeep()))
        if not self.store.cross_process_wakeups:
            self._tasks.append(self._loop.create_task(self._watch_mail()))
        log.info("relay started")

    async def _upkeep(self) -> None:
        while True:
            await asyncio.sleep(self.purge_seconds)
            try:
                await self._run(lambda: self.service.purge())
                await self._run(self._purge_rate_buckets)
                await self._run(self.service.refresh_franking_keys)
            except E2EError as exc:
                log.warning("upkeep failed: %s", type(exc).__name__)

    async def _watch_mail(self) -> None:
        """Wake the long-polls of devices that got mail from another relay process: every
        :data:`MAIL_TICK`, one read of the deliveries numbered above the last look (only the
        highest number while nobody waits). This process's own deliveries wake at once."""
        last: int | None = None
        while True:
            await asyncio.sleep(MAIL_TICK)
            since = last if self._waiters else None
            try:
                last, woken = await self._run(functools.partial(self._mail_since, since))
            except E2EError as exc:
                log.warning("mail watch failed: %s", type(exc).__name__)
                continue
            if woken:
                self._wake(woken)

    def _mail_since(self, seq: int | None) -> tuple[int, list[tuple[bytes, int]]]:
        return self.store.read(lambda tx: tx.mail_since(seq))

    def _purge_rate_buckets(self) -> None:
        now = self.rate_limit.clock()
        self.store.run(lambda tx: tx.purge_rate_buckets(now))

    async def aclose(self) -> None:
        """:meth:`close` from the app's event loop: its tasks are cancelled there, the rest
        runs off the loop (a group of requests the store runs on this loop may still need
        the loop to finish before the store can close)."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def drain(self) -> None:
        """The server is stopping: every long-poll answers now, new ones do not wait, and
        new requests are refused (503)."""
        self.stopping = True
        for event in self._waiters.values():
            event.set()

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._executor.shutdown(wait=True)
        self.service.close()
        log.info("relay stopped")

    def _wake_threadsafe(self, woken: Sequence[tuple[bytes, int]]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake, woken)

    def _wake(self, woken: Sequence[tuple[bytes, int]]) -> None:
        for device in woken:
            event = self._waiters.get(device)
            if event is not None:
                event.set()

    async def _run(self, fn: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    # -- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # pragma: no cover - websockets are not served
            return
        self._start()
        started = time.perf_counter()
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        method = scope.get("method", "")
        request_id = new_request_id()
        if path.startswith(BLOB_PATH) and method in ("PATCH", "GET"):
            answered: list[int] = []

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    answered.append(message["status"])
                    tagged = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                    message = {**message, "headers": tagged}
                await send(message)

            await self.blob_io.serve(scope, receive, send_with_id, method, path)
            status = answered[0] if answered else 0
            self.metrics.observe("blob", time.perf_counter() - started)
            self._log_request(request_id, method, BLOB_PATH + "(blob)", status, started,
                              None if status < 400 else "refused")  # fmt: skip
            return
        incoming = _Incoming(scope, receive)
        try:
            status, body, ctype, extra = await self._handle(incoming, method, path)
        finally:
            self.inflight -= incoming.reserved
            self.unsigned_inflight -= incoming.unsigned
            incoming.reserved = incoming.unsigned = 0
        headers = [
            (b"content-type", ctype.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            *extra,
        ]
        if not incoming.done:
            headers.append((b"connection", b"close"))  # the unread body is never read
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if self.tap is not None:
            self.tap(f"send:{path}", body)
        route = ROUTES.get(path)
        self.metrics.observe(route.handler if route is not None else "other",
                             time.perf_counter() - started)  # fmt: skip
        known = route is not None or path in (Path.HEALTH, Path.METRICS, Path.NOOP,
                                              Path.AD_CONVERSIONS)  # fmt: skip
        self._log_request(request_id, method, path if known else "(other)", status, started,
                          incoming.code)  # fmt: skip

    @staticmethod
    def _log_request(request_id: str, method: str, path: str, status: int, started: float,
                     code: str | None) -> None:  # fmt: skip
        """One request's record (SPEC §10.9): refused at info, internal errors at error,
        accepted at debug; ``path`` as it may be logged (no blob id, no unknown path)."""
        level = logging.ERROR if status >= 500 and status != 503 else (
            logging.INFO if code else logging.DEBUG)  # fmt: skip
        if log.isEnabledFor(level):
            fields = {"request_id": request_id, "method": method[:8], "path": path,
                      "status": status, "ms": round((time.perf_counter() - started) * 1e3, 2),
                      "code": code}  # fmt: skip
            log.log(level, "request", extra=fields)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read_body(self, req: _Incoming, cap: int, signed: bool = True) -> bytes:
        """Read the body: 413 if it is (or declares to be) larger than ``cap`` or the edge's
        largest body, 503 if the bytes of bodies being read would exceed their budget (the
        request reserves its declared length, or ``cap`` if it declares none), or, for a body
        read before its sender is known (not ``signed``), their share of it."""
        cap = min(cap, self.edge.max_body)
        if req.length is not None and (req.length < 0 or req.length > cap):
            raise LimitExceeded("request body too large")
        want = cap if req.length is None else req.length
        if self.inflight + want > self.edge.max_inflight_bytes:
            raise Overloaded("too many request bodies in flight")
        if not signed:
            if self.unsigned_inflight + want > self.edge.max_inflight_bytes // UNSIGNED_SHARE:
                raise Overloaded("too many unsigned request bodies in flight")
            self.unsigned_inflight += want
            req.unsigned += want
        self.inflight += want
        req.reserved += want
        chunks: list[bytes] = []
        size = 0
        more = not req.done
        while more:
            message = await req.receive()
            if message["type"] == "http.disconnect":
                raise DecodeError("client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise LimitExceeded("request body too large")
            chunks.append(chunk)
            more = message.get("more_body", False)
        req.done = True
        return b"".join(chunks)

    def _refused(self, exc: E2EError, req: _Incoming | None = None
                 ) -> tuple[int, bytes, str, list[Header]]:  # fmt: skip
        """The answer to a refused request (429 and 503 with ``retry-after``); its code is
        noted on ``req`` for the request's log record."""
        status, err = WireError.of(exc)
        self.counters[f"refused:{err.code}"] += 1
        if req is not None:
            req.code = err.code
        extra = []
        if status in (429, 503):
            wait = RETRY_AFTER_FULL if isinstance(exc, MailboxFull) else 1
            extra.append((b"retry-after", str(wait).encode()))
        return status, err.to_bytes(), CONTENT_TYPE, extra

    async def _handle(
        self, req: _Incoming, method: str, path: str
    ) -> tuple[int, bytes, str, list[Header]]:
        try:
            if method == "GET" and path == Path.HEALTH:
                await self._run(self.store.ping)
                return 200, Ok().to_bytes(), CONTENT_TYPE, []
            if method == "GET" and path == Path.METRICS:
                if not metrics_allowed(self.metrics_token, req.scope.get("headers", [])):
                    raise Unauthenticated("metrics need the operator's token")
                text = await self._run(self.metrics_text)
                return 200, text.encode(), "text/plain; version=0.0.4", []
            if method == "GET" and path == Path.AD_CONVERSIONS:
                return await self._conversions(req)
            if self.stopping:
                raise Overloaded("the relay is stopping")
            if method == "POST" and path == Path.NOOP:
                await self._read_body(req, NOOP_BODY)
                return 200, Ok().to_bytes(), CONTENT_TYPE, []
            route = ROUTES.get(path)
            if route is None:
                raise NoSuchEndpoint("no such endpoint")
            if method != "POST":
                raise NoSuchEndpoint("method not allowed")
            header = None
            for name, value in req.scope.get("headers", []):
                if name == b"authorization":
                    header = value.decode("latin-1")

            signed = route.endpoint.auth == DEVICE  # else read before its sender is known

            async def reader(cap: int) -> bytes:
                body = await self._read_body(req, cap, signed)
                if self.tap is not None:
                    self.tap(f"recv:{path}", body)
                return body

            client = req.scope.get("client") or ("", 0)
            call = Call(route, method, path, header, reader, address=str(client[0]))
            out = await self._dispatch(call)
            return 200, out, CONTENT_TYPE, []
        except E2EError as exc:
            return self._refused(exc, req)
        except Exception:
            self.counters["error:internal"] += 1
            req.code = "internal"
            log.exception("internal error")
            return 500, WireError("internal", "internal error").to_bytes(), CONTENT_TYPE, []

    async def _conversions(self, req: _Incoming) -> tuple[int, bytes, str, list[Header]]:
        """``GET /v1/ads/conversions?after=N`` (SPEC §17.4): the ad service's conversions,
        only with ``ads.report_token`` as the bearer token (401 otherwise, and always on a
        relay without one)."""
        token = self.service.settings.ads.report_token
        if not metrics_allowed(token, req.scope.get("headers", [])):
            raise Unauthenticated("conversions need the ad service's token")
        query = req.scope.get("query_string", b"").decode("latin-1")
        after = 0
        if query:
            name, _, value = query.partition("=")
            if name != "after" or not (value.isascii() and value.isdigit()) or len(value) > 18:
                raise DecodeError("the query is after=<cursor>")
            after = int(value)
        answer = await self._run(lambda: self.service.ad_conversions(after))
        return 200, answer.to_bytes(), CONTENT_TYPE, []

    async def _dispatch(self, call: Call) -> bytes:
        """Run the request's steps (:mod:`e2e.relay.pipeline`, in SPEC §10.7's order), timing
        each under its name: the measurement is this loop, not a line inside any step."""
        route = call.route
        timers = self.timers
        for name, step in self.pipeline.steps(route):
            started = time.perf_counter()
            await step(call)
            timers[name] += time.perf_counter() - started
        result = call.result
        if isinstance(call.request, Fetch) and isinstance(result, Mailbox):
            result = await self._long_poll(call.request, call.caller, result)
        self.counters[f"accepted:{route.handler}"] += 1
        if route.handler == "submit":
            self.counters["messages_accepted"] += 1
        return bytes(result.to_bytes())

    async def _long_poll(self, req: Fetch, caller: tuple[bytes, int], first: Mailbox) -> Mailbox:
        """Hold an empty fetch until mail arrives or its wait ends (push by long-poll). The
        wait is at most the edge's ``max_wait_ms``; beyond ``max_long_polls`` waiting in all,
        or ``max_long_polls_per_device`` for the caller, a fetch answers at once; when the
        relay stops, every wait ends (SPEC §10.13)."""
        wait_ms = min(req.wait_ms, self.edge.max_wait_ms)
        if first.deliveries or wait_ms <= 0 or self.stopping:
            return first
        edge = self.edge
        if self._polls >= edge.max_long_polls or self._polls_by[caller] >= (
            edge.max_long_polls_per_device
        ):
            self.counters["long_poll_refused"] += 1
            return first
        deadline = time.monotonic() + wait_ms / 1000
        event = self._waiters.setdefault(caller, asyncio.Event())
        result = first
        self._polls += 1
        self._polls_by[caller] += 1
        # Mail committed between the first fetch and the registration above woke nobody (a
        # notification from another process found no waiter; on SQLite it may predate the
        # mail watch's next look): so the first wait ends at the next tick and fetches again;
        # later waits end on a wake-up or at the deadline, and a held poll costs no reads.
        first_tick = True
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or self.stopping:
                    return result
                wait = min(left, MAIL_TICK) if first_tick else left
                first_tick = False
                try:
                    # Not wait_for: it wraps the wait in a task of its own, about 1 KiB more
                    # per held poll (benches/README.md, "The relay at scale").
                    async with asyncio.timeout(wait):
                        await event.wait()
                except TimeoutError:
                    if wait >= left:
                        return result
                # Cleared before the fetch: a wake-up during it is kept for the next wait.
                event.clear()
                self.counters["long_poll_fetches"] += 1
                result = await self._run(
                    lambda: self.store.read(lambda tx: self.service.fetch(tx, caller, req))
                )
                assert isinstance(result, Mailbox)
                if result.deliveries:
                    return result
        finally:
            self._polls -= 1
            self._polls_by[caller] -= 1
            if not self._polls_by[caller]:
                # The device's last waiting fetch: its event goes (another shares it until then).
                del self._polls_by[caller]
                if self._waiters.get(caller) is event:
                    self._waiters.pop(caller, None)

    def metrics_text(self) -> str:
        """The metrics (:class:`~e2e.relay.observe.Metrics`) and the queue's depth."""
        depth = self.store.read(lambda tx: tx.count_mail())
        gauges = {
            "e2e_relay_queue_depth": ("Deliveries waiting in every mailbox.", float(depth)),
            "e2e_relay_long_polls": ("Fetches waiting for mail now.", float(self._polls)),
            "e2e_relay_body_bytes_in_flight": (
                "Body bytes reserved by requests being read.",
                float(self.inflight),
            ),  # fmt: skip
            "e2e_relay_prekey_drains_total": (
                "Claims answered with a last-resort bundle because the device's one-time"
                " prekeys were being claimed too fast.",
                float(self.service.drains),
            ),  # fmt: skip
        }
        return self.metrics.text(self.timers, gauges)


def create_app(db: str, **kwargs: Any) -> RelayApp:
    """A relay app on the store at ``db`` (a SQLite path or a PostgreSQL DSN), with its blob
    store beside it (``blob_limits``: a :class:`~e2e.relay.blobs.BlobLimits`)."""
    from e2e.relay.backends import open_blob_store, open_store

    service_kw = {
        k: kwargs.pop(k)
        for k in ("config", "clock", "share", "secret_key", "settings")
        if k in kwargs
    }
    blobs = open_blob_store(db, kwargs.pop("blob_limits", None))
    return RelayApp(RelayService(open_store(db), blobs=blobs, **service_kw), **kwargs)
