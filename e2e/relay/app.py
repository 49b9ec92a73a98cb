"""The relay as an ASGI application (SPEC.md §10.7).

:func:`create_app` returns a plain ASGI callable (HTTP and lifespan) that any ASGI server can
serve (``python -m e2e relay serve`` uses uvicorn) and any ASGI application can mount under a
path prefix (the relay routes on ``scope["path"]`` with ``scope["root_path"]`` removed).

Per request: the body is read up to the size cap (413), decoded strictly (400), the device
signature checked (401/403), the device's rate limit applied (429), and then the handler runs
with the nonce check inside one store transaction on a worker thread. A refused request commits
nothing. Logging goes to the ``e2e.relay`` logger: method, path, status, time and refusal
codes, never a body, key or header value.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from e2e.errors import (
    DecodeError,
    E2EError,
    LimitExceeded,
    NoSuchEndpoint,
    RateLimited,
    Unauthenticated,
)
from e2e.platform import wire
from e2e.platform.wire import (
    CONTENT_TYPE,
    MAX_REQUEST_BYTES,
    Fetch,
    Mailbox,
    Ok,
    Path,
    WireError,
    parse_auth,
)
from e2e.relay.service import RelayService
from e2e.relay.store import Tx
from e2e.relay.tap import Tap

__all__ = ["create_app", "RelayApp", "RateLimit"]

log = logging.getLogger("e2e.relay")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_NO_AUTH: Final = 0
_DEVICE: Final = 1
_CERT: Final = 2


@dataclass(frozen=True, slots=True)
class _Route:
    body: type[Any]
    handler: str
    auth: int
    #: A service method run on the request before its transaction (the checks that need no
    #: store): ``prepare(caller, req, body)`` -> what the handler is given instead of ``req``.
    prepare: str | None = None
    #: The request needs every franking key, including ones another relay process made since
    #: this one loaded its own (a report's tags may be under any of them).
    franking: bool = False


_ROUTES: Final = {
    Path.ACCOUNT_REGISTER: _Route(wire.RegisterAccount, "register_account", _NO_AUTH),
    Path.DEVICE_REGISTER: _Route(wire.RegisterDevice, "register_device", _CERT),
    Path.DEVICE_REMOVE: _Route(wire.RemoveDevice, "remove_device", _DEVICE),
    Path.DEVICE_LIST: _Route(wire.ListDevices, "list_devices", _DEVICE),
    Path.CHAT_ROUTE: _Route(wire.Route, "set_route", _DEVICE),
    Path.DEVICE_DESIGNATE: _Route(wire.Designate, "designate", _DEVICE),
    Path.PREKEY_UPLOAD: _Route(wire.UploadPrekeys, "upload_prekeys", _DEVICE),
    Path.PREKEY_COUNT: _Route(wire.CountPrekeys, "count_prekeys", _DEVICE),
    Path.PREKEY_CLAIM: _Route(wire.ClaimPrekey, "claim_prekey", _DEVICE),
    Path.MESSAGE_PRECHECK: _Route(wire.Precheck, "precheck", _DEVICE),
    Path.MESSAGE_SUBMIT: _Route(wire.Submit, "submit", _DEVICE, prepare="prepare_submit"),
    Path.MAILBOX_FETCH: _Route(wire.Fetch, "fetch", _DEVICE),
    Path.MAILBOX_ACK: _Route(wire.Ack, "ack", _DEVICE),
    Path.CHAT_CONTROL: _Route(wire.Control, "control", _DEVICE),
    Path.CHAT_WINDOW: _Route(wire.WindowQuery, "window", _DEVICE),
    Path.REPORT: _Route(wire.SubmitReport, "report", _DEVICE, franking=True),
    Path.BILL: _Route(wire.BillQuery, "bill", _DEVICE),
    Path.TEMPLATE_REGISTER: _Route(wire.RegisterTemplate, "register_template", _DEVICE),
    Path.TEMPLATE_LIST: _Route(wire.ListTemplates, "list_templates", _DEVICE),
    Path.CLASS_REPORT: _Route(wire.SubmitClassReport, "report_class", _DEVICE, franking=True),
    Path.LOG_HEAD: _Route(wire.LogHeadQuery, "log_head", _DEVICE),
    Path.LOG_LOOKUP: _Route(wire.LogLookup, "log_lookup", _DEVICE),
    Path.LOG_CONSISTENCY: _Route(wire.LogConsistencyQuery, "log_consistency", _DEVICE),
    Path.LOG_ENTRIES: _Route(wire.LogEntriesQuery, "log_entries", _DEVICE),
    Path.BUSINESS_CERT: _Route(wire.BusinessCertQuery, "business_certificate", _DEVICE),
}


class RateLimit:
    """The per-device request limit: ``rate`` requests per second, bursts of ``burst``.

    The limit holds across every relay process on one database: each device's token bucket
    is a row of the relay store, taken from in a request's own transaction
    (:meth:`~e2e.relay.store.Tx.take_token`, Unix time from ``clock``), so a refused request
    changes nothing. A request for which its process holds no token of the device
    (:meth:`spend`) takes ``lease`` tokens at once if the bucket holds that many (else one),
    and its process keeps the rest (:meth:`keep`) for the device's next requests, which then
    touch no bucket row. Every request admitted anywhere has taken a token from the shared
    bucket, so N processes admit at most the rate in all; tokens a process holds for a device
    it no longer hears from are at most ``lease - 1`` per process, and make up for themselves
    as the bucket refills. Each process also keeps the same bucket in memory (:meth:`take`),
    checked before any store work, so a flood from one device into one process is refused
    without a transaction."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.time,
                 lease: int | None = None) -> None:  # fmt: skip
        if not rate > 0 or not burst >= 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.lease = lease if lease is not None else max(1, min(int(burst) // 8, int(rate) // 10))
        if not 1 <= self.lease <= burst:
            raise ValueError("a lease is between 1 and the burst")
        self._buckets: dict[tuple[bytes, int], tuple[float, float]] = {}
        self._held: dict[tuple[bytes, int], int] = {}

    def take(self, key: tuple[bytes, int], now: float) -> bool:
        """This process's bucket (``now`` from a monotonic clock)."""
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > 100_000:  # bounded: forget idle devices
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
        return True

    def spend(self, key: tuple[bytes, int]) -> bool:
        """Use one token this process took from the device's bucket before, if it holds one
        (the request then takes none in its transaction); :meth:`keep` it back if the
        request is refused."""
        held = self._held.get(key, 0)
        if held < 1:
            return False
        if held == 1:
            del self._held[key]
        else:
            self._held[key] = held - 1
        return True

    def keep(self, key: tuple[bytes, int], tokens: int) -> None:
        """Hold ``tokens`` the device's committed requests took from its bucket and did not
        use."""
        if tokens > 0:
            if len(self._held) > 100_000:  # bounded: forgetting only ever admits less
                self._held.clear()
            self._held[key] = self._held.get(key, 0) + tokens


class RelayApp:
    """The ASGI application. One per process; it owns its worker threads."""

    def __init__(
        self,
        service: RelayService,
        *,
        max_body: int = MAX_REQUEST_BYTES,
        rate_limit: RateLimit | None = None,
        tap: Tap | None = None,
        workers: int = 8,
        purge_seconds: float = 60.0,
    ) -> None:
        self.service = service
        self.store = service.store
        self.max_body = max_body
        self.rate_limit = rate_limit or RateLimit(200.0, 400.0)
        self.tap = tap
        self.purge_seconds = purge_seconds
        self.counters: Counter[str] = Counter()
        #: Seconds spent per phase of authenticated requests (worker time, summed).
        self.timers: dict[str, float] = {
            "lookup": 0.0,
            "verify": 0.0,
            "decode": 0.0,
            "transaction": 0.0,
        }
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="relay")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[tuple[bytes, int], asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------------

    def _start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self.store.listen(self._wake_threadsafe)
        self._tasks.append(self._loop.create_task(self._upkeep()))
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

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._executor.shutdown(wait=True)
        self.store.close()
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
        status, body, ctype = await self._handle(scope, receive, method, path)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        if self.tap is not None:
            self.tap(f"send:{path}", body)
        log.debug("%s %s %d %.1fms", method, path, status, (time.perf_counter() - started) * 1e3)

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

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_body:
                        raise LimitExceeded("request body too large")
                except ValueError:
                    raise DecodeError("bad content-length") from None
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise DecodeError("client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise LimitExceeded("request body too large")
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    def _refused(self, exc: E2EError, path: str) -> tuple[int, bytes, str]:
        status, err = WireError.of(exc)
        self.counters[f"refused:{err.code}"] += 1
        log.info("refused %s %d %s", path, status, err.code)
        return status, err.to_bytes(), CONTENT_TYPE

    async def _handle(
        self, scope: Scope, receive: Receive, method: str, path: str
    ) -> tuple[int, bytes, str]:
        try:
            if method == "GET" and path == Path.HEALTH:
                await self._run(self.store.ping)
                return 200, Ok().to_bytes(), CONTENT_TYPE
            if method == "GET" and path == Path.METRICS:
                text = await self._run(self.metrics_text)
                return 200, text.encode(), "text/plain; version=0.0.4"
            if method == "POST" and path == Path.NOOP:
                await self._read_body(scope, receive)
                return 200, Ok().to_bytes(), CONTENT_TYPE
            route = _ROUTES.get(path)
            if route is None:
                raise NoSuchEndpoint("no such endpoint")
            if method != "POST":
                raise NoSuchEndpoint("method not allowed")
            body = await self._read_body(scope, receive)
            if self.tap is not None:
                self.tap(f"recv:{path}", body)
            header = None
            for name, value in scope.get("headers", []):
                if name == b"authorization":
                    header = value.decode("latin-1")
            out = await self._dispatch(route, method, path, body, header)
            return 200, out, CONTENT_TYPE
        except E2EError as exc:
            return self._refused(exc, path)
        except Exception:
            self.counters["error:internal"] += 1
            log.exception("internal error on %s", path)
            return 500, WireError("internal", "internal error").to_bytes(), CONTENT_TYPE

    async def _dispatch(
        self, route: _Route, method: str, path: str, body: bytes, header: str | None
    ) -> bytes:
        service = self.service
        handler = getattr(service, route.handler)
        if route.auth == _NO_AUTH:
            req = route.body.from_bytes(body)
            result = await self.store.run_async(lambda tx: handler(tx, req), self._executor)
            self.counters[f"accepted:{route.handler}"] += 1
            return bytes(result.to_bytes())
        token = parse_auth(header)
        caller = (token.account, token.device_id)
        service.check_time(token)
        expected: bytes | None
        if route.auth == _CERT:
            # The key to check is the one the certificate in the body vouches for.
            req = route.body.from_bytes(body)
            identity = service.certificate_of(req).identity
            expected = None
            await self._run(lambda: token.verify(identity, method, path, body))
        else:
            # Authenticate before decoding: an unauthenticated body is never parsed. The
            # signature is checked on the loop (one Ed25519 verification, cheaper than a
            # thread hand-off) against the remembered key, else the stored one.
            t0 = time.perf_counter()
            known = service.known_identity(caller)
            if known is not None:
                try:
                    token.verify(known, method, path, body)
                except Unauthenticated:
                    service.forget_identity(caller)
                    known = None
            if known is None:
                t1 = time.perf_counter()
                known = await self._run(lambda: service.identity_of(token))
                t0 += time.perf_counter() - t1
                self.timers["lookup"] += time.perf_counter() - t1
                token.verify(known, method, path, body)
            expected = known
            t2 = time.perf_counter()
            req = route.body.from_bytes(body)
            self.timers["verify"] += t2 - t0
            self.timers["decode"] += time.perf_counter() - t2
        if not self.rate_limit.take(caller, time.monotonic()):
            raise RateLimited("device rate limit exceeded")
        if route.prepare is not None:
            t4 = time.perf_counter()
            req = getattr(service, route.prepare)(caller, req, body)
            self.timers["decode"] += time.perf_counter() - t4
        if route.franking:
            await self._run(service.refresh_franking_keys)

        limit = self.rate_limit
        now = limit.clock()
        held = limit.spend(caller)
        want = 0 if held else limit.lease
        taken = 0

        def step(tx: Tx) -> Any:
            nonlocal taken  # the run that commits is the last one (a group may run it again)
            taken = service.admit(tx, token, expected, now, limit.rate, limit.burst, want)
            return handler(tx, caller, req)

        t3 = time.perf_counter()
        try:
            result = await self.store.run_async(step, self._executor)
        except E2EError:
            # Refused, or the group failed: nothing was applied, the token was not used. (Not
            # on cancellation, when the transaction may still commit: then it counts as used.)
            if held:
                limit.keep(caller, 1)
            raise
        limit.keep(caller, taken - 1)
        self.timers["transaction"] += time.perf_counter() - t3
        if isinstance(req, Fetch) and isinstance(result, Mailbox):
            result = await self._long_poll(req, caller, result)
        self.counters[f"accepted:{route.handler}"] += 1
        if route.handler == "submit":
            self.counters["messages_accepted"] += 1
        return bytes(result.to_bytes())

    async def _long_poll(self, req: Fetch, caller: tuple[bytes, int], first: Mailbox) -> Mailbox:
        """Hold an empty fetch until mail arrives or its wait ends (push by long-poll)."""
        if first.deliveries or req.wait_ms <= 0:
            return first
        deadline = time.monotonic() + req.wait_ms / 1000
        event = self._waiters.setdefault(caller, asyncio.Event())
        result = first
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return result
                event.clear()
                # A bounded wait: wake-ups from processes that cannot notify are seen by a poll.
                poll = left if self.store.cross_process_wakeups else min(left, 0.5)
                try:
                    await asyncio.wait_for(event.wait(), poll)
                except TimeoutError:
                    if self.store.cross_process_wakeups:
                        return result
                result = await self._run(
                    lambda: self.store.read(lambda tx: self.service.fetch(tx, caller, req))
                )
                assert isinstance(result, Mailbox)
                if result.deliveries:
                    return result
        finally:
            if not event.is_set() and self._waiters.get(caller) is event:
                self._waiters.pop(caller, None)

    def metrics_text(self) -> str:
        """Counters in Prometheus text format: accepted by endpoint, refused by code, queue."""
        depth = self.store.read(lambda tx: tx.count_mail())
        lines = ["# TYPE e2e_relay_requests_total counter"]
        for key, value in sorted(self.counters.items()):
            kind, _, label = key.partition(":")
            if kind == "accepted":
                lines.append(f'e2e_relay_requests_total{{endpoint="{label}"}} {value}')
        lines.append("# TYPE e2e_relay_refused_total counter")
        for key, value in sorted(self.counters.items()):
            kind, _, label = key.partition(":")
            if kind == "refused":
                lines.append(f'e2e_relay_refused_total{{code="{label}"}} {value}')
        lines.append("# TYPE e2e_relay_messages_accepted_total counter")
        lines.append(f"e2e_relay_messages_accepted_total {self.counters['messages_accepted']}")
        lines.append("# TYPE e2e_relay_internal_errors_total counter")
        lines.append(f"e2e_relay_internal_errors_total {self.counters['error:internal']}")
        lines.append("# TYPE e2e_relay_seconds_total counter")
        for phase, seconds in sorted(self.timers.items()):
            lines.append(f'e2e_relay_seconds_total{{phase="{phase}"}} {seconds:.6f}')
        lines.append("# TYPE e2e_relay_queue_depth gauge")
        lines.append(f"e2e_relay_queue_depth {depth}")
        return "\n".join(lines) + "\n"


def create_app(db: str, **kwargs: Any) -> RelayApp:
    """A relay app on the store at ``db`` (a SQLite path or a PostgreSQL DSN)."""
    from e2e.relay.backends import open_store

    service_kw = {
        k: kwargs.pop(k) for k in ("config", "clock", "share", "secret_key") if k in kwargs
    }
    return RelayApp(RelayService(open_store(db), **service_kw), **kwargs)
