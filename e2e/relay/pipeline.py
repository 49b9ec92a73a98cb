"""The path of one request through the relay (SPEC.md §10.7), top to bottom in the order of
its security checks. Measurement is not here: the app runs :data:`STEPS` and times each.

What comes before (:mod:`e2e.relay.edge`, SPEC §10.13): the connection is within the
connection caps, and the request line and headers arrived in time and within their size.

For a request of a registered device (every endpoint but account and device registration and
the provisioning and recovery fetches):

1. :meth:`Pipeline.header` -- the ``authorization`` header decodes, and its time is within
   the allowed skew (401);
2. :meth:`Pipeline.signature` -- its signature over the method, path and the body's digest the
   header declares verifies under the device's registered key (the key this process last
   read, else the stored one) (401): nothing of the body has been read yet;
3. :meth:`Pipeline.rate` -- this process's bucket for the device has a token (429), before
   any body or store work;
4. :meth:`Pipeline.read` -- the body is read, at most the endpoint's largest body (413), while
   the bytes of all bodies in flight stay within their budget (503), and its digest is the
   signed one (401);
5. :meth:`Pipeline.body` -- the body decodes strictly as the endpoint's request (400);
6. :meth:`Pipeline.prepare` -- the checks that need no store (a submission's envelopes:
   from the caller, agreeing on their metadata), and the franking keys a report needs;
7. :meth:`Pipeline.transaction` -- one store transaction: the device still has the key the
   signature verified under (401), its shared rate bucket has a token (429), the nonce is
   fresh (401, a replay), then the handler's own checks and writes (SPEC §10.8). A refusal
   anywhere rolls all of it back;
8. :meth:`Pipeline.after` -- for the few routes that have it, work outside the relay store
   that the committed transaction admitted (the blob store's, SPEC §10.12: it runs once, never
   again with a retried transaction).

Device registration's key is the one the certificate in its (small) body vouches for: it runs
header, read, signature, rate, body, prepare, transaction. Account registration, and the
provisioning and recovery fetches of a device that has no account yet, run
:meth:`Pipeline.admission` (their client address's bucket, 429), then read, body and
transaction (a registration carries its own proof of possession, and its transaction takes a
token of the relay-wide registration bucket, SPEC §10.13; a recovery fetch carries a proof of
the recovery key, a provisioning id is a random capability).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Final

from e2e.errors import E2EError, RateLimited, Unauthenticated
from e2e.platform import wire
from e2e.platform.wire import AuthToken, Path, parse_auth
from e2e.relay.lifecycle import Refusal
from e2e.relay.ratelimit import RateLimit
from e2e.relay.service import RelayService
from e2e.relay.store import Caller, Tx

__all__ = [
    "Route",
    "ROUTES",
    "Call",
    "Reader",
    "Pipeline",
    "STEPS",
    "CERTIFIED_STEPS",
    "OPEN_STEPS",
]


@dataclass(frozen=True, slots=True)
class Route:
    """How the service serves one endpoint of :data:`e2e.platform.wire.ENDPOINTS`."""

    endpoint: wire.Endpoint
    #: The :class:`~e2e.relay.service.RelayService` method run in the request's transaction.
    handler: str
    #: A service method run on the request before its transaction (the checks that need no
    #: store): ``prepare(caller, req, body)`` -> what the handler is given instead of ``req``.
    prepare: str | None = None
    #: The request needs every franking key, including ones another relay process made since
    #: this one loaded its own (a report's tags may be under any of them).
    franking: bool = False
    #: A service method run once the transaction committed: ``after(caller, req, result)``
    #: -> the answer (work outside the relay store, such as the blob store's).
    after: str | None = None
    #: ``prepare`` costs CPU (signatures): it runs on a worker thread, not the event loop.
    offload: bool = False


def _route(path: str, handler: str, **kw: Any) -> tuple[str, Route]:
    return path, Route(wire.BY_PATH[path], handler, **kw)


#: Path -> how the service serves it; every endpoint of the wire API has one.
ROUTES: Final = dict(
    (
        _route(Path.ACCOUNT_REGISTER, "register_account"),
        _route(Path.DEVICE_REGISTER, "register_device"),
        _route(Path.DEVICE_PUBLISH, "publish_devices"),
        _route(Path.ACCOUNT_DELETE, "delete_account", after="forget_blobs"),
        _route(Path.PROVISION_SEND, "provision_send"),
        _route(Path.PROVISION_FETCH, "provision_fetch"),
        _route(Path.RECOVERY_SET, "set_recovery"),
        _route(Path.RECOVERY_FETCH, "recovery_fetch"),
        _route(Path.DEVICE_LIST, "list_devices"),
        _route(Path.CHAT_ROUTE, "set_route"),
        _route(Path.DEVICE_DESIGNATE, "designate"),
        _route(Path.PREKEY_UPLOAD, "upload_prekeys", prepare="prepare_upload", offload=True),
        _route(Path.PREKEY_COUNT, "count_prekeys"),
        _route(Path.PREKEY_CLAIM, "claim_prekey"),
        _route(Path.MESSAGE_PRECHECK, "precheck"),
        _route(Path.MESSAGE_SUBMIT, "submit", prepare="prepare_submit"),
        _route(Path.MESSAGE_RESEND, "resend", prepare="prepare_resend"),
        _route(Path.MAILBOX_FETCH, "fetch"),
        _route(Path.MAILBOX_ACK, "ack"),
        _route(Path.CHAT_CONTROL, "control"),
        _route(Path.CHAT_WINDOW, "window"),
        _route(Path.REPORT, "report", franking=True, after="verify_attachments"),
        _route(Path.BILL, "bill"),
        _route(Path.TEMPLATE_REGISTER, "register_template"),
        _route(Path.TEMPLATE_LIST, "list_templates"),
        _route(Path.CLASS_REPORT, "report_class", franking=True),
        _route(Path.LOG_HEAD, "log_head"),
        _route(Path.LOG_LOOKUP, "log_lookup"),
        _route(Path.LOG_CONSISTENCY, "log_consistency"),
        _route(Path.LOG_ENTRIES, "log_entries"),
        _route(Path.LOG_OPEN, "log_open"),
        _route(Path.BUSINESS_CERT, "business_certificate"),
        _route(Path.BLOB_CREATE, "blob_admitted", after="create_blob"),
        _route(Path.BLOB_STATUS, "blob_admitted", after="blob_status"),
        _route(Path.CATALOGUE_REGISTER, "register_catalogue"),
        _route(Path.CATALOGUE_LIST, "list_catalogue"),
        _route(Path.BUSINESS_TIER, "business_tier"),
        _route(Path.BUSINESS_NOTICES, "business_notices"),
    )
)


#: Reads a request's body of at most the given number of bytes (the app's, SPEC §10.13).
Reader = Callable[[int], Awaitable[bytes]]


async def _no_body(cap: int) -> bytes:
    return b""


@dataclass(slots=True)
class Call:
    """One request on its way through the pipeline: what it brought, and what each step
    established."""

    route: Route
    method: str
    path: str
    header: str | None
    #: How the body is read (by :meth:`Pipeline.read`, once the caller is known).
    reader: Reader = _no_body
    body: bytes = field(default=b"", repr=False)
    token: AuthToken | None = None
    caller: Caller = (b"", 0)
    #: The key the signature verified under, compared with the stored one in the request's
    #: transaction (None: device registration, whose key is the body's certificate's).
    identity: bytes | None = None
    request: Any = None
    result: Any = None
    #: The client's address as the server saw it ("" if unknown), for account admission.
    address: str = ""


#: The steps of a registered device's request, in order (the app times each by its name).
STEPS: Final = ("header", "signature", "rate", "read", "body", "prepare", "transaction", "after")
#: The steps of device registration (the key is the body's certificate's).
CERTIFIED_STEPS: Final = (
    "header", "read", "signature", "rate", "body", "prepare", "transaction", "after",
)  # fmt: skip
#: The steps of account registration and of the provisioning and recovery fetches.
OPEN_STEPS: Final = ("admission", "read", "body", "transaction")
_STEPS: Final = {wire.DEVICE: STEPS, wire.CERTIFIED: CERTIFIED_STEPS, wire.NO_AUTH: OPEN_STEPS}


def address_key(address: str) -> bytes:
    """What an address is counted by: an IPv4 address, or an IPv6 address's /64 (one
    subscriber usually holds a whole /64); anything else as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address.encode()
    if isinstance(ip, ipaddress.IPv6Address):
        return ip.packed[:8] if ip.ipv4_mapped is None else ip.ipv4_mapped.packed
    return ip.packed


class Pipeline:
    """The steps of :data:`STEPS` over one service, its process's rate limit and the
    executor its blocking work runs on."""

    def __init__(self, service: RelayService, limit: RateLimit, executor: Executor) -> None:
        self.service = service
        self.store = service.store
        self.limit = limit
        self.executor = executor
        a = service.settings.admission
        #: Account registrations per client address, in this process (SPEC §10.13).
        self.addresses = RateLimit(a.address_per_hour / 3600, a.address_burst)
        #: Provisioning and recovery fetches per client address, in this process: a new
        #: device polls for its grant, so these have a bucket of their own.
        self.fetches = RateLimit(a.fetch_per_hour / 3600, a.fetch_burst)

    def steps(self, route: Route) -> tuple[tuple[str, Callable[[Call], Awaitable[None]]], ...]:
        names: tuple[str, ...] = _STEPS[route.endpoint.auth]
        if route.after is None:
            names = tuple(n for n in names if n != "after")
        return tuple((name, getattr(self, name)) for name in names)

    async def _run(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    # -- the steps, in order ---------------------------------------------------------------

    async def admission(self, c: Call) -> None:
        """0. A request without a device (account registration, provisioning and recovery
        fetches): its client address (an IPv6 address by its /64) has a token in this
        process's bucket of its kind (429), before its body is read."""
        key, now = (address_key(c.address), 0), time.monotonic()
        if c.route.endpoint.path == Path.ACCOUNT_REGISTER:
            if not self.addresses.take(key, now):
                raise RateLimited("too many accounts registered from this address")
        elif not self.fetches.take(key, now):
            raise RateLimited("too many provisioning or recovery fetches from this address")

    async def header(self, c: Call) -> None:
        """1. Who claims to ask, and when: a well-formed header within the time skew."""
        c.token = token = parse_auth(c.header)
        c.caller = (token.account, token.device_id)
        self.service.check_time(token)

    async def signature(self, c: Call) -> None:
        """2. The device's signature over this very request (its body as the header's digest
        names it: the body is not read yet, except a device registration's)."""
        token = c.token
        assert token is not None  # noqa: S101 - set by header()
        service, caller = self.service, c.caller
        if c.route.endpoint.auth == wire.CERTIFIED:
            # The key to check is the one the certificate in the (already read) body vouches for.
            c.request = c.route.endpoint.request.from_bytes(c.body)
            identity = service.certificate_of(c.request).identity
            await self._run(lambda: token.verify(identity, c.method, c.path))
            return
        # Checked on the loop (one verification, cheaper than a thread hand-off) against the
        # key this process remembers, else the stored one.
        known = service.known_identity(caller)
        if known is not None:
            try:
                token.verify(known, c.method, c.path)
            except Unauthenticated:
                service.forget_identity(caller)
                known = None
        if known is None:
            known = await self._run(lambda: service.identity_of(token))
            token.verify(known, c.method, c.path)
        c.identity = known

    async def rate(self, c: Call) -> None:
        """3. This process's bucket for the device, before any body or store work."""
        if not self.limit.take(c.caller, time.monotonic()):
            raise RateLimited("device rate limit exceeded")

    async def read(self, c: Call) -> None:
        """4. The body: at most the endpoint's largest, and the one the header signed."""
        c.body = await c.reader(c.route.endpoint.request.max_size())
        if c.token is not None:
            c.token.check_digest(wire.body_digest(c.body))

    async def body(self, c: Call) -> None:
        """5. The body, decoded strictly (only now that its sender is authenticated)."""
        if c.request is None:
            c.request = c.route.endpoint.request.from_bytes(c.body)

    async def prepare(self, c: Call) -> None:
        """6. What needs no store: a submission's own checks; a report's franking keys."""
        route = c.route
        if route.prepare is not None:
            prepare = getattr(self.service, route.prepare)
            caller, request, body = c.caller, c.request, c.body
            if route.offload:
                c.request = await self._run(lambda: prepare(caller, request, body))
            else:
                c.request = prepare(caller, request, body)
        if route.franking:
            await self._run(self.service.refresh_franking_keys)

    async def transaction(self, c: Call) -> None:
        """7. One store transaction: admission (the device's key unchanged, a token of its
        shared bucket, a fresh nonce), then the handler."""
        service = self.service
        handler = getattr(service, c.route.handler)
        req = c.request
        if c.token is None:  # account registration, provisioning and recovery fetches
            c.result = await self.store.run_async(lambda tx: handler(tx, req), self.executor)
            if isinstance(c.result, Refusal):
                raise c.result.error  # refused, with what the refusal records committed
            return
        token, caller, identity = c.token, c.caller, c.identity
        limit = self.limit
        now = limit.clock()
        held = limit.spend(caller)
        want = 0 if held else limit.lease
        taken = 0

        def step(tx: Tx) -> Any:
            nonlocal taken  # the run that commits is the last one (a group may run it again)
            taken = service.admit(tx, token, identity, now, limit.rate, limit.burst, want)
            return handler(tx, caller, req)

        envs = getattr(req, "envs", None)  # a submission: its recipient's writer (see run_async)
        key = envs[0].to_account if envs else None
        try:
            c.result = await self.store.run_async(step, self.executor, key)
        except E2EError:
            # Refused, or the group failed: nothing was applied, the token was not used. (Not
            # on cancellation, when the transaction may still commit: then it counts as used.)
            if held:
                limit.keep(caller, 1)
            raise
        limit.keep(caller, taken - 1)

    async def after(self, c: Call) -> None:
        """7. Once the transaction committed: the route's work outside the relay store."""
        method = getattr(self.service, c.route.after or "")
        c.result = await self._run(lambda: method(c.caller, c.request, c.result))
