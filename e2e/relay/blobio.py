"""The blob store's data plane (SPEC.md §10.7, §10.12): a blob's bytes, streamed.

``PATCH /v1/blobs/<id>`` appends the request's bytes at its ``upload-offset``; ``GET
/v1/blobs/<id>`` sends the blob (or, with ``range: bytes=N-``, its bytes from N: 206). Both run
the request path's first steps as every other request (:mod:`e2e.relay.pipeline`): the
header and its time, the signature (over :func:`~e2e.platform.wire.patch_descriptor` for a
``PATCH``, the empty body for a ``GET``), this process's rate, and the admission transaction
(the device's key unchanged, a token of its bucket, a fresh nonce); only then is a byte read
or sent.

An upload's bytes go to the blob's writer as they arrive, in 1 MiB writes on the worker
threads, and are synced when the request ends — also when the client goes away mid-request:
what arrived is kept, and the next request continues from the durable offset. Bodies are
capped at :data:`~e2e.platform.wire.MAX_PATCH_BYTES` (413) before a byte is read.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, Final, Protocol

from e2e.errors import DecodeError, E2EError, LimitExceeded, NoSuchEndpoint
from e2e.platform import wire
from e2e.platform.wire import (
    BLOB_CONTENT_TYPE,
    CONTENT_TYPE,
    MAX_PATCH_BYTES,
    BlobState,
    WireError,
    parse_blob_path,
    parse_range,
    patch_descriptor,
)
from e2e.relay.blobs import BlobWriter
from e2e.relay.pipeline import Call, Pipeline, Route
from e2e.relay.service import RelayService
from e2e.relay.tap import Tap

__all__ = ["BlobIO"]

log = logging.getLogger("e2e.relay")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: Bytes gathered from the connection before one write on a worker thread.
_WRITE: Final = 1 << 20
#: The route the data plane's steps run as (a device's request; admission only in its
#: transaction).
_ROUTE: Final = Route(wire.Endpoint(wire.BLOB_PATH, wire.Ok, wire.BlobState), "blob_admitted")


def _header(scope: MutableMapping[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _int_header(scope: MutableMapping[str, Any], name: bytes, default: int | None) -> int:
    raw = _header(scope, name)
    if raw is None:
        if default is None:
            raise DecodeError(f"missing {name.decode()} header")
        return default
    if not raw.isdigit() or len(raw) > 19:
        raise DecodeError(f"bad {name.decode()} header")
    return int(raw)


class Host(Protocol):
    """What the data plane uses of its :class:`~e2e.relay.app.RelayApp`."""

    pipeline: Pipeline
    service: RelayService
    timers: dict[str, float]
    counters: Counter[str]
    tap: Tap | None

    async def _run(self, fn: Callable[[], Any]) -> Any: ...

    def _refused(self, exc: E2EError) -> tuple[int, bytes, str, list[tuple[bytes, bytes]]]: ...


class BlobIO:
    """``PATCH`` and ``GET`` of blob bytes, for one :class:`~e2e.relay.app.RelayApp`."""

    def __init__(self, app: Host) -> None:
        self.app = app
        self.pipeline = app.pipeline

    async def _admit(self, c: Call) -> None:
        for step in ("header", "signature", "rate", "transaction"):
            started = time.perf_counter()
            await getattr(self.pipeline, step)(c)
            self.app.timers[step] += time.perf_counter() - started
            if step == "signature":  # the signed digest is the descriptor's (or the empty body's)
                assert c.token is not None  # noqa: S101 - set by header()
                c.token.check_digest(wire.body_digest(c.body))

    async def serve(
        self, scope: MutableMapping[str, Any], receive: Receive, send: Send, method: str,
        path: str,
    ) -> None:  # fmt: skip
        """Answer one blob data request (any refusal with its error body)."""
        try:
            blob_id = parse_blob_path(path)
        except DecodeError:
            await self._answer(send, *self.app._refused(NoSuchEndpoint("no such blob path")))
            return
        try:
            if method == "PATCH":
                status, body = await self._patch(scope, receive, blob_id, path)
                await self._answer(send, status, body, CONTENT_TYPE)
            elif method == "GET":
                await self._get(scope, receive, send, blob_id, path)
            else:
                raise NoSuchEndpoint("method not allowed")
        except E2EError as exc:
            await self._answer(send, *self.app._refused(exc))
        except _Gone:
            pass
        except Exception:
            self.app.counters["error:internal"] += 1
            log.exception("internal error on a blob")
            await self._answer(send, 500, WireError("internal", "internal error").to_bytes(),
                               CONTENT_TYPE)  # fmt: skip

    async def _answer(self, send: Send, status: int, body: bytes, ctype: str,
                      extra: list[tuple[bytes, bytes]] | None = None) -> None:  # fmt: skip
        try:
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()),
                *(extra or []),
            ]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
        except OSError:
            log.debug("a blob answer found its client gone")

    # -- PATCH ----------------------------------------------------------------------------

    async def _patch(
        self, scope: MutableMapping[str, Any], receive: Receive, blob_id: bytes, path: str
    ) -> tuple[int, bytes]:
        offset = _int_header(scope, b"upload-offset", None)
        count = _int_header(scope, b"content-length", None)
        length = _int_header(scope, b"upload-length", 0)
        if count > MAX_PATCH_BYTES:
            raise LimitExceeded("upload request larger than MAX_PATCH_BYTES")
        c = Call(_ROUTE, "PATCH", path, _header(scope, b"authorization"),
                 body=patch_descriptor(blob_id, offset, count, length))  # fmt: skip
        await self._admit(c)
        account = c.caller[0]
        blobs = self.app.service.blobs
        run = self.app._run
        writer: BlobWriter = await run(lambda: blobs.writer(blob_id, account, offset))
        tap = self.app.tap
        got = 0
        buf = bytearray()
        gone = False
        try:
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    break
                chunk = message.get("body", b"")
                got += len(chunk)
                if got > count:
                    raise DecodeError("more bytes than content-length")
                if tap is not None and chunk:
                    tap(f"recv:{path}", chunk)
                buf += chunk
                more = message.get("more_body", False)
                if len(buf) >= _WRITE or (not more and buf):
                    data, buf = bytes(buf), bytearray()
                    await run(functools.partial(writer.write, data))
            if buf:  # what arrived before the client went away
                data = bytes(buf)
                await run(lambda: writer.write(data))
            if not gone and length:
                await run(lambda: writer.set_length(length))
        except BaseException:
            await run(lambda: writer.close(self.app.service.clock()))
            raise
        durable = await run(lambda: writer.close(self.app.service.clock()))
        self.app.counters["accepted:blob_patch"] += 1
        if gone:
            raise _Gone
        info = await run(lambda: blobs.status(blob_id, account))
        return 200, BlobState(durable, info.complete, info.length or 0).to_bytes()

    # -- GET ------------------------------------------------------------------------------

    async def _get(
        self, scope: MutableMapping[str, Any], receive: Receive, send: Send, blob_id: bytes,
        path: str,
    ) -> None:  # fmt: skip
        c = Call(_ROUTE, "GET", path, _header(scope, b"authorization"))
        await self._admit(c)
        account = c.caller[0]
        blobs = self.app.service.blobs
        run = self.app._run
        info = await run(lambda: blobs.readable(blob_id, account))
        try:
            span = parse_range(_header(scope, b"range"), info.offset)
        except DecodeError as exc:
            err = WireError("malformed", str(exc)).to_bytes()
            await self._answer(send, 416, err, CONTENT_TYPE)
            return
        start, end = span if span is not None else (0, info.offset)
        headers = [
            (b"content-type", BLOB_CONTENT_TYPE.encode()),
            (b"content-length", str(end - start).encode()),
            (b"accept-ranges", b"bytes"),
        ]
        if span is not None:
            headers.append((b"content-range", f"bytes {start}-{end - 1}/{info.offset}".encode()))
        pieces: Iterator[bytes] = await run(lambda: blobs.read(info, start, end))
        tap = self.app.tap
        gone = asyncio.Event()

        async def watch() -> None:  # a client that goes away stops the reading
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 206 if span else 200,
                        "headers": headers})  # fmt: skip
            while not gone.is_set():
                piece = await run(lambda: next(pieces, None))
                if piece is None:
                    break
                if tap is not None:
                    tap(f"send:{path}", piece)
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except OSError:
            pass  # the client went away mid-download; it resumes with a range
        except E2EError as exc:
            # the response has started: the client sees it cut short and asks again (an
            # expired blob is then a 404)
            log.info("blob read stopped: %s", type(exc).__name__)
        finally:
            watcher.cancel()
            close = getattr(pieces, "close", None)
            if close is not None:
                await run(close)
        self.app.counters["accepted:blob_get"] += 1


class _Gone(Exception):
    """The client went away during an upload request: its bytes are kept, nobody to answer."""
