"""The client side of the relay's wire API (SPEC.md §10.7) over HTTP, with httpx.

:class:`RelayClient` holds one connection pool for every device of a process;
:meth:`RelayClient.connect` is a :data:`~e2e.client.transport.Connector`. Each request body is
a :mod:`e2e.platform.wire` body, signed as the device (``authorization: E2E-Device ...``);
an error answer is raised as the typed error its code names (``StaleDeviceList`` with its
missing and extra devices, ``WindowClosed``, ...). Mailbox fetches may long-poll
(``wait_ms``): the relay answers as soon as mail arrives.

Retries: a request that fails in transport (connection refused or reset, timeout) is retried
with the same body -- every operation of the API is idempotent for a repeated body (SPEC
§10.7) -- up to ``retries`` times with a short back-off.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import httpx

from e2e.attachment.transfer import BlobTransport
from e2e.client.transport import Transport
from e2e.errors import DecodeError, E2EError, TransferError, TransferInterrupted, WireFailure
from e2e.keys import KeyPair, Rng
from e2e.platform import wire
from e2e.platform.policy import MessageClass, Template
from e2e.platform.templates import CatalogueEntry, TemplateSpec, TemplateState, entries_of
from e2e.platform.wire import Path
from e2e.store import Address

if TYPE_CHECKING:
    from e2e.relay.app import RelayApp

__all__ = ["RelayClient", "HttpTransport", "HttpBlobs"]

_B = TypeVar("_B")
_KINDS: Final = {"customer": 0, "business": 1}
_CONTROL: Final = {"block": wire.Control.BLOCK, "limit": wire.Control.LIMIT,
                   "opt_in": wire.Control.OPT_IN}  # fmt: skip


class RelayClient:
    """A relay service at ``base_url`` (``http://127.0.0.1:8080``), shared by devices."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        rng: Rng = os.urandom,
        clock: Callable[[], int] = lambda: int(time.time()),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.retries = retries
        self.rng = rng
        #: Unix seconds for request signatures (the relay allows a few minutes of skew).
        self.clock = clock
        self._timeout = timeout
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._app: RelayApp | None = None

    @classmethod
    def in_process(cls, db: str, *, secret_key: bytes | None = None, **kwargs: Any) -> RelayClient:
        """The relay service on ``db`` (a SQLite path or a PostgreSQL DSN) inside this
        process: the same app, service and store that ``python -m e2e relay serve`` runs,
        reached over httpx's ASGI transport instead of a socket, on the caller's event loop.
        ``secret_key`` seals the relay's secrets at rest (SPEC §10.8). For examples, tests
        and single-process deployments; :meth:`aclose` closes the store too."""
        from e2e.relay.app import create_app

        return cls.serving(create_app(db, secret_key=secret_key), **kwargs)

    @classmethod
    def serving(cls, app: RelayApp, **kwargs: Any) -> RelayClient:
        """A client of the relay ``app`` (:func:`e2e.relay.create_app`) running in this
        process, as :meth:`in_process` makes one: for a caller that configures the app
        itself (its policy, clock, tap, rate limit). :meth:`aclose` closes the app too."""
        relay = cls("http://relay.in-process", transport=httpx.ASGITransport(app=app), **kwargs)
        relay._app = app
        return relay

    @property
    def app(self) -> RelayApp | None:
        """The relay app this client runs in its process (None: a relay over HTTP)."""
        return self._app

    async def http(self) -> httpx.AsyncClient:
        """The shared connection pool, made on first use off the event loop (building its
        TLS context alone takes tens of milliseconds of CPU)."""
        if self._http is None:

            def make() -> httpx.AsyncClient:
                return httpx.AsyncClient(
                    base_url=self.base_url,
                    timeout=httpx.Timeout(
                        self._timeout, read=self._timeout + wire.MAX_WAIT_MS / 1e3
                    ),
                    transport=self._transport,
                    limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                )

            made = await asyncio.get_running_loop().run_in_executor(None, make)
            if self._http is None:
                self._http = made
            else:  # another task made one meanwhile
                await made.aclose()
        return self._http

    async def provision_fetch(self, provisioning_id: bytes) -> bytes:
        """(A new device, no account yet) the sealed grant waiting under the id, or empty
        (SPEC §10.1, linking)."""
        req = wire.ProvisionFetch(provisioning_id)
        return (await self._open(Path.PROVISION_FETCH, req, wire.Provisioned)).sealed

    async def recovery_fetch(self, account: str, proof: Callable[[int, bytes], bytes]
                             ) -> wire.Recovered:  # fmt: skip
        """(A new device, every device of the account lost) the sealed account key, for
        ``proof(time, nonce)``: the recovery key's signature (SPEC §10.1, recovery)."""
        now, nonce = self.clock(), self.rng(16)
        req = wire.RecoveryFetch(account.encode(), now, nonce, proof(now, nonce))
        return await self._open(Path.RECOVERY_FETCH, req, wire.Recovered)

    async def _open(self, path: str, body: Any, resp: type[_B]) -> _B:
        nobody = HttpTransport(self, Address("-", 0), KeyPair.from_stored(bytes(32), bytes(32)))
        return await nobody._post(path, body, resp, auth=False)

    def connect(self, addr: Address, identity: KeyPair) -> Transport:
        """The transport of device ``addr`` signing with ``identity``."""
        return HttpTransport(self, addr, identity)

    async def aclose(self) -> None:
        """Close the connection pool (and an in-process relay's service and store)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        app, self._app = self._app, None
        if app is not None:
            await app.aclose()


class HttpTransport(Transport):
    """:class:`~e2e.client.transport.Transport` of one device over :class:`RelayClient`."""

    def __init__(self, relay: RelayClient, addr: Address, identity: KeyPair) -> None:
        self._relay = relay
        self.addr = addr
        self._identity = identity
        #: The account key pair, needed only to register the account.
        self.account_key: KeyPair | None = None

    async def _post(self, path: str, body: Any, resp: type[_B], *, auth: bool = True) -> _B:
        raw = body.to_bytes()
        last: Exception | None = None
        for attempt in range(self._relay.retries + 1):
            headers = {"content-type": wire.CONTENT_TYPE}
            if auth:
                headers["authorization"] = wire.sign_request(
                    self._identity, self.addr.account, self.addr.device, "POST", path, raw,
                    self._relay.clock(), self._relay.rng,
                )  # fmt: skip
            try:
                http = await self._relay.http()
                r = await http.post(path, content=raw, headers=headers)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                last = exc
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            if r.status_code == 200:
                return resp.from_bytes(r.content)  # type: ignore[attr-defined,no-any-return]
            try:
                err = wire.WireError.from_bytes(r.content)
            except E2EError:
                raise WireFailure(f"relay answered {r.status_code} without an error body") from None
            raise err.to_error()
        raise WireFailure(f"relay unreachable: {type(last).__name__}")

    async def register_account(self, kind: str, identity: KeyPair, tier: int = 0) -> None:
        req = wire.RegisterAccount.create(
            self.addr.account, _KINDS[kind], identity, tier, self._relay.rng
        )
        await self._post(Path.ACCOUNT_REGISTER, req, wire.Ok, auth=False)

    async def register_device(self, certificate: bytes, device_list: bytes | None = None) -> None:
        req = wire.RegisterDevice(certificate, device_list)
        await self._post(Path.DEVICE_REGISTER, req, wire.Ok)

    async def publish_devices(self, device_list: bytes) -> None:
        await self._post(Path.DEVICE_PUBLISH, wire.PublishDevices(device_list), wire.Ok)

    async def provision_send(self, provisioning_id: bytes, sealed: bytes) -> None:
        await self._post(Path.PROVISION_SEND, wire.ProvisionSend(provisioning_id, sealed), wire.Ok)

    async def set_recovery(self, auth_key: bytes, sealed: bytes) -> None:
        await self._post(Path.RECOVERY_SET, wire.SetRecovery(auth_key, sealed), wire.Ok)

    async def delete_account(self, device_list: bytes) -> None:
        await self._post(Path.ACCOUNT_DELETE, wire.DeleteAccount(device_list), wire.Ok)

    async def upload_prekeys(self, one_time: list[bytes], last_resort: bytes) -> int:
        count = 0
        step = wire.MAX_PREKEYS_PER_UPLOAD
        for i in range(0, max(len(one_time), 1), step):
            req = wire.UploadPrekeys(tuple(one_time[i : i + step]), last_resort)
            count = (await self._post(Path.PREKEY_UPLOAD, req, wire.PrekeyCount)).one_time
        return count

    async def prekey_count(self) -> int:
        return (await self._post(Path.PREKEY_COUNT, wire.CountPrekeys(), wire.PrekeyCount)).one_time

    async def fetch_devices(
        self, account: str, chat: str | None = None
    ) -> tuple[bytes, list[bytes], bytes]:
        req = wire.ListDevices(account.encode(), None if chat is None else chat.encode())
        got = await self._post(Path.DEVICE_LIST, req, wire.DeviceList)
        return got.identity, list(got.certificates), got.device_list

    async def fetch_bundle(self, device: Address) -> bytes:
        req = wire.ClaimPrekey(device.account, device.device)
        return (await self._post(Path.PREKEY_CLAIM, req, wire.ClaimedPrekey)).bundle

    async def log_head(self) -> bytes:
        return (await self._post(Path.LOG_HEAD, wire.LogHeadQuery(), wire.LogHead)).head

    async def log_vrf_key(self) -> tuple[bytes, bytes]:
        got = await self._post(Path.LOG_HEAD, wire.LogHeadQuery(), wire.LogHead)
        return got.vrf_key, got.vrf_signature

    async def log_open(self, index: int, size: int) -> tuple[bytes, bytes]:
        got = await self._post(Path.LOG_OPEN, wire.LogOpen(index, size), wire.LogEntry)
        return got.entry, got.proof

    async def business_certificate(self, account: str) -> bytes | None:
        req = wire.BusinessCertQuery(account.encode())
        got = await self._post(Path.BUSINESS_CERT, req, wire.BusinessCert)
        return got.certificate or None

    async def log_lookup(self, account: str, size: int) -> tuple[bytes, bytes]:
        got = await self._post(
            Path.LOG_LOOKUP, wire.LogLookup(account.encode(), size), wire.LogEntry
        )
        return got.entry, got.proof

    async def log_consistency(self, size1: int, size2: int) -> bytes:
        req = wire.LogConsistencyQuery(size1, size2)
        return (await self._post(Path.LOG_CONSISTENCY, req, wire.LogConsistency)).proof

    async def log_entries(self, start: int, size: int) -> list[tuple[bytes, bytes]]:
        got = await self._post(Path.LOG_ENTRIES, wire.LogEntriesQuery(start, size), wire.LogEntries)
        return list(zip(got.entries, got.proofs, strict=True))

    async def precheck(self, cls: MessageClass, to: str, dests: list[Address],
                       template_id: bytes | None = None) -> None:  # fmt: skip
        req = wire.Precheck.of(int(cls), to.encode(), [d.wire for d in dests], template_id)
        await self._post(Path.MESSAGE_PRECHECK, req, wire.Ok)

    async def submit(self, envelopes: list[bytes], entry: bytes | None = None) -> wire.Receipt:
        req = wire.Submit(tuple(envelopes), entry)
        return await self._post(Path.MESSAGE_SUBMIT, req, wire.Receipt)

    async def resend(self, envelopes: list[bytes]) -> wire.Receipt:
        return await self._post(Path.MESSAGE_RESEND, wire.Resend(tuple(envelopes)), wire.Receipt)

    async def fetch(self, wait_ms: int = 0) -> list[bytes]:
        req = wire.Fetch(self.addr.account, self.addr.device, min(wait_ms, wire.MAX_WAIT_MS))
        return list((await self._post(Path.MAILBOX_FETCH, req, wire.Mailbox)).deliveries)

    async def ack(self, seqs: list[int]) -> None:
        step = wire.MAX_FETCH
        for i in range(0, len(seqs), step):
            req = wire.Ack(self.addr.account, self.addr.device, tuple(seqs[i : i + step]))
            await self._post(Path.MAILBOX_ACK, req, wire.Ok)

    async def set_route(self, customer: str, devices: list[int]) -> None:
        await self._post(Path.CHAT_ROUTE, wire.Route(customer.encode(), tuple(devices)), wire.Ok)

    async def set_designated(self, devices: list[int]) -> None:
        await self._post(Path.DEVICE_DESIGNATE, wire.Designate(tuple(devices)), wire.Ok)

    async def control(self, op: str, business: str, on: bool) -> None:
        await self._post(Path.CHAT_CONTROL, wire.Control(_CONTROL[op], business.encode(), on),
                         wire.Ok)  # fmt: skip

    async def report(self, report: bytes, block: bool) -> int:
        return len((await self.report_verdict(report, block)).message_ids)

    async def report_verdict(self, report: bytes, block: bool) -> wire.ReportVerdict:
        return await self._post(Path.REPORT, wire.SubmitReport(report, block), wire.ReportVerdict)

    def blobs(self) -> HttpBlobs:
        return HttpBlobs(self)

    async def register_template(self, template_id: bytes, cls: MessageClass, text: bytes) -> None:
        await self._post(
            Path.TEMPLATE_REGISTER, wire.RegisterTemplate(template_id, int(cls), text), wire.Ok
        )

    async def templates(self, business: str) -> dict[bytes, Template]:
        got = await self._post(
            Path.TEMPLATE_LIST, wire.ListTemplates(business.encode()), wire.TemplateList
        )
        try:
            return {
                tid: Template(tid, MessageClass(cls), digest)
                for tid, cls, digest in zip(
                    got.template_ids, got.classes, got.text_hashes, strict=True
                )
            }
        except ValueError:
            raise DecodeError("template list names an unknown class") from None

    async def register_catalogue(self, spec: TemplateSpec) -> CatalogueEntry:
        req = wire.RegisterCatalogue(
            spec.name.encode(), spec.language.encode(), int(spec.category), spec.text.encode(),
            bytes(spec.params),
        )  # fmt: skip
        got = await self._post(Path.CATALOGUE_REGISTER, req, wire.CatalogueAnswer)
        try:
            state = TemplateState(got.state)
        except ValueError:
            raise DecodeError("unknown template state") from None
        return CatalogueEntry(spec, got.version, state, got.reason.decode(errors="replace"))

    async def catalogue(self, business: str) -> list[CatalogueEntry]:
        got = await self._post(
            Path.CATALOGUE_LIST, wire.ListCatalogue(business.encode()), wire.Catalogue
        )
        return entries_of(got.names, got.languages, got.versions, got.categories, got.states,
                          got.texts, got.params)  # fmt: skip

    async def tier(self) -> wire.TierInfo:
        return await self._post(Path.BUSINESS_TIER, wire.TierQuery(), wire.TierInfo)

    async def notices(self, after: int) -> wire.Notices:
        return await self._post(Path.BUSINESS_NOTICES, wire.NoticeQuery(after), wire.Notices)

    async def report_class(self, item: bytes) -> MessageClass:
        got = await self._post(Path.CLASS_REPORT, wire.SubmitClassReport(item), wire.ClassVerdict)
        return MessageClass(got.content)

    async def bill(self) -> wire.BillLines:
        """(Business) the caller's billing summary."""
        return await self._post(Path.BILL, wire.BillQuery(), wire.BillLines)

    async def window_open(self, peer: str) -> bool:
        """Is the 24 h window of this account's chat with ``peer`` open?"""
        got = await self._post(Path.CHAT_WINDOW, wire.WindowQuery(peer.encode()), wire.WindowState)
        return got.open

    async def aclose(self) -> None:
        return None


class HttpBlobs(BlobTransport):
    """The relay's blob store as one device sees it: a
    :class:`~e2e.attachment.transfer.BlobTransport` over the wire API (SPEC §10.7, §10.12).

    A dropped connection, a timeout or a relay that cannot be reached is
    :class:`~e2e.errors.TransferInterrupted` (the transfer asks the offset and goes on); a
    refusal is its typed error (``QuotaExceeded``, ``BlobTooLarge``, ``NoSuchBlob``, ...).
    Every request is signed as the device: an upload request over
    :func:`~e2e.platform.wire.patch_descriptor`, a download over the empty body."""

    def __init__(self, transport: HttpTransport) -> None:
        self._t = transport

    def _auth(self, method: str, path: str, signed: bytes) -> str:
        t, relay = self._t, self._t._relay
        return wire.sign_request(t._identity, t.addr.account, t.addr.device, method, path,
                                 signed, relay.clock(), relay.rng)  # fmt: skip

    async def create(self, length: int | None) -> bytes:
        got = await self._t._post(Path.BLOB_CREATE, wire.CreateBlob(length or 0), wire.BlobCreated)
        return got.blob_id

    async def offset(self, blob_id: bytes) -> int:
        try:
            got = await self._t._post(Path.BLOB_STATUS, wire.BlobStatusQuery(blob_id),
                                      wire.BlobState)  # fmt: skip
        except WireFailure as exc:
            raise TransferInterrupted(str(exc)) from None
        return got.offset

    async def append(
        self, blob_id: bytes, offset: int, data: bytes | memoryview, length: int | None
    ) -> int:
        path = wire.blob_path(blob_id)
        headers = {
            "content-type": wire.OFFSET_CONTENT_TYPE,
            "upload-offset": str(offset),
            "authorization": self._auth(
                "PATCH", path, wire.patch_descriptor(blob_id, offset, len(data), length or 0)
            ),
        }
        if length:
            headers["upload-length"] = str(length)
        headers["content-length"] = str(len(data))
        try:
            http = await self._t._relay.http()
            # A stream, not the bytes: httpx's request and response objects refer to each
            # other, so bytes handed to them stay alive until the garbage collector runs; the
            # stream's generator lets go of them as soon as it is done.
            r = await http.patch(path, content=_pieces(data), headers=headers)
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise TransferInterrupted(f"upload request cut: {type(exc).__name__}") from None
        if r.status_code != 200:
            raise _refusal(r.status_code, r.content)
        return wire.BlobState.from_bytes(r.content).offset

    async def read(self, blob_id: bytes, start: int) -> AsyncIterator[bytes]:
        path = wire.blob_path(blob_id)
        headers = {"authorization": self._auth("GET", path, b"")}
        if start:
            headers["range"] = f"bytes={start}-"
        try:
            http = await self._t._relay.http()
            async with http.stream("GET", path, headers=headers) as r:
                if r.status_code not in (200, 206):
                    raise _refusal(r.status_code, await r.aread())
                if start and not r.headers.get("content-range", "").startswith(f"bytes {start}-"):
                    raise TransferError("the relay sent another range than the one asked")
                async for piece in r.aiter_raw():
                    yield piece
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise TransferInterrupted(f"download cut: {type(exc).__name__}") from None


async def _pieces(data: bytes | memoryview) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for at in range(0, len(view), 1 << 20):
        yield bytes(view[at : at + (1 << 20)])


def _refusal(status: int, content: bytes) -> E2EError:
    """The typed error of an error answer; one that a retry can get past (the relay busy or
    rate-limiting) is an interruption of the transfer, which waits and goes on."""
    try:
        err = wire.WireError.from_bytes(content).to_error()
    except E2EError:
        err = WireFailure(f"relay answered {status} without an error body")
    return TransferInterrupted(str(err)) if err.retryable else err
