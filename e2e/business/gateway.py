"""The business API gateway (SPEC.md §17.2): a business's device on the business's side,
with a local HTTP JSON API for its own systems and signed webhooks to them.

End-to-end encryption ends here: the gateway holds the device's keys and store, decrypts what
customers send and encrypts what the business's systems ask it to send. What it hands them
(API answers, webhooks) is plaintext on the business's own network, protected by the bearer
token and the webhook signature, not by the protocol.

API (JSON bodies, ``Authorization: Bearer <token>`` on every path but ``/v1/health``):

* ``POST /v1/messages`` ``{"to", "text"}`` or ``{"to", "template": {"name", "language",
  "params": [...]}}``, with an optional ``Idempotency-Key`` header -> ``{"message_id"}``;
* ``POST /v1/assign`` ``{"customer", "devices": [...]}`` -> ``{}``;
* ``GET /v1/history?customer=NAME`` -> ``{"messages": [...]}``;
* ``GET /v1/conversations``, ``GET /v1/bill``, ``GET /v1/tier``, ``GET /v1/templates``,
  ``POST /v1/templates``
  ``{"name", "language", "category", "text", "params": [...]}``;
* ``GET /v1/health`` -> ``{"account", "device"}``.

Errors: ``{"error": code, "message": text}``, statuses and codes as the relay's (SPEC §10.7):
400 ``malformed``, 401 (the token), 404, 409 ``conflict`` (an idempotency key reused for
another request), 413, 422 (the relay's policy refusal), and 502 ``relay_unavailable`` (the
relay unreachable: retry with the same idempotency key).

Logs, as the relay's (SPEC §10.9): every answer carries an ``x-request-id`` the gateway made,
and each request is one record (``request_id``, ``method``, ``path`` if it is one of the API's,
``status``, ``ms``, ``code``; refusals at info, failures at error, the rest at debug) with no
account name, query, header value or body: ``python -m e2e business gateway`` writes them as
JSON lines.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qs

from e2e.business.webhooks import Deliverer, message_json, payload
from e2e.client import Client
from e2e.errors import (
    Conflict,
    DecodeError,
    E2EError,
    LimitExceeded,
    NoSuchEndpoint,
    Unauthenticated,
)
from e2e.platform import wire
from e2e.platform.envelope import MESSAGE_ID_LEN
from e2e.platform.policy import MessageClass
from e2e.platform.templates import Category, ParamType
from e2e.platform.wire import error_for
from e2e.relay.observe import new_request_id
from e2e.store import StoreTransaction

__all__ = ["Gateway", "MAX_BODY"]

log = logging.getLogger("e2e.business")

#: Largest API request body.
MAX_BODY: Final = 64 * 1024
#: Seconds between two requests for the relay's notices (SPEC §17.2).
NOTICE_SECONDS: Final = 2.0
#: Idempotency records (``g/idem/<SHA-256 of the key>``), kept for this many seconds.
_IDEM: Final = "g/idem/"
IDEM_SECONDS: Final = 7 * 24 * 3600
#: Sends between two prunings of old idempotency records.
_PRUNE_EVERY: Final = 256
MAX_KEY: Final = 200

#: The API's paths: logged as they are (any other path is logged as ``(other)``).
PATHS: Final = frozenset(
    ("/v1/health", "/v1/messages", "/v1/assign", "/v1/history", "/v1/conversations",
     "/v1/bill", "/v1/tier", "/v1/templates")
)  # fmt: skip

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _status(exc: E2EError) -> tuple[int, str]:
    """The API's (HTTP status, code) for an error: the relay's mapping (SPEC §10.7), except
    that a retryable failure (the relay unreachable) is 502."""
    if exc.retryable:
        return 502, "relay_unavailable"
    return wire.error_status(exc)


def _str(obj: dict[str, Any], key: str, limit: int = 4096) -> str:
    v = obj.get(key)
    if type(v) is not str or not 0 < len(v) <= limit:
        raise DecodeError(f"{key}: a string of 1 to {limit} characters")
    return v


class Gateway:
    """One business device (``client``) served to the business's systems: :meth:`app` is the
    ASGI application of the API, :meth:`pump` turns the device's events into webhooks."""

    def __init__(self, client: Client, token: str, deliverer: Deliverer | None,
                 notice_seconds: float = NOTICE_SECONDS) -> None:  # fmt: skip
        self.client = client
        self._token = token.encode()
        self.deliverer = deliverer
        #: How often the relay is asked for customers' controls and reports (and the
        #: longest a long-poll for messages waits, so those events go out as soon).
        self.notice_seconds = notice_seconds
        self._send_lock = asyncio.Lock()
        self._sends = 0

    # -- webhooks -------------------------------------------------------------------------

    async def pump(self) -> None:
        """For ever: each device event, in order, as a webhook; the event is acknowledged
        (the durable cursor moves) only after the receiver answered 2xx. Beside it, every
        :attr:`notice_seconds`, the relay's notices of customers' blocks, limits, opt-ins
        and spam reports become events too (:meth:`~e2e.client.Client.sync_notices`)."""
        if self.deliverer is None:
            return
        notices = asyncio.create_task(self._poll_notices())
        prefix = f"{self.client.profile.account}/{self.client.profile.device}/"
        try:
            async for event in self.client.events(wait_ms=int(self.notice_seconds * 1000)):
                await self.deliverer.deliver(prefix + str(event.seq), payload(event))
                await self.client.ack(event)
        finally:
            notices.cancel()
            await asyncio.gather(notices, return_exceptions=True)

    async def _poll_notices(self) -> None:
        while True:
            try:
                await self.client.sync_notices()
            except E2EError as exc:  # the relay unreachable: asked again next time
                log.info("notices failed: %s", type(exc).__name__)
            await asyncio.sleep(self.notice_seconds)

    # -- sending with idempotency keys -----------------------------------------------------

    async def send(self, req: dict[str, Any], key: str | None) -> dict[str, Any]:
        to = _str(req, "to", 64)
        template = req.get("template")
        if template is not None and not isinstance(template, dict):
            raise DecodeError("template: an object")
        if template is None:
            text = _str(req, "text", 60_000)
        else:
            params = template.get("params", [])
            if not isinstance(params, list) or not all(type(p) is str for p in params):
                raise DecodeError("template params: a list of strings")
        digest = hashlib.sha256(json.dumps(req, sort_keys=True).encode()).hexdigest()
        async with self._send_lock:  # one send at a time: a key's record, then its send
            self._sends += 1
            if self._sends % _PRUNE_EVERY == 1:
                await self.prune()
            message_id = await self._claim(key, digest)
            if isinstance(message_id, dict):
                return message_id  # the answer a first request with this key got
            try:
                if template is None:
                    sent = await self.client.send(to, text, message_id=message_id)
                else:
                    sent = await self.client.send_template(
                        to, _str(template, "name", 20), _str(template, "language", 6),
                        params, message_id=message_id,
                    )  # fmt: skip
            except E2EError as exc:
                if not exc.retryable:  # for good: a retry gets the same answer
                    code = _status(exc)[1]
                    await self._answer(key, digest, {"error": code, "message": str(exc)})
                raise
            answer = {"message_id": sent.message_id.hex()}
            await self._answer(key, digest, answer)
            return answer

    async def _claim(self, key: str | None, digest: str) -> bytes | dict[str, Any]:
        """The message id to send under (the key's, if the key was seen with this request),
        or the answer the key already has."""
        if key is None:
            return os.urandom(MESSAGE_ID_LEN)
        if not 0 < len(key) <= MAX_KEY:
            raise DecodeError(f"Idempotency-Key: 1 to {MAX_KEY} characters")
        rec = _IDEM + hashlib.sha256(key.encode()).hexdigest()
        fresh = os.urandom(MESSAGE_ID_LEN)

        def claim(tx: StoreTransaction) -> dict[str, Any]:
            raw = tx.app_get(rec)
            if raw is not None:
                held: dict[str, Any] = json.loads(raw)
                return held
            held = {"digest": digest, "message_id": fresh.hex(), "at": int(time.time())}
            tx.app_put(rec, json.dumps(held).encode())
            return held

        held = await self.client.transaction(claim)
        if not hmac.compare_digest(held["digest"], digest):
            raise Conflict("this idempotency key was used for another request")
        if "answer" in held:
            answer: dict[str, Any] = held["answer"]
            if "error" in answer:
                raise error_for(answer["error"], answer["message"])
            return answer
        # Claimed but not answered (a crash in between): the send under the same message id
        # is the client's idempotent send, which returns a message already sent, submits one
        # still in the outbox and seals only an unknown id, so nothing is sent twice.
        return bytes.fromhex(held["message_id"])

    async def prune(self, now: int | None = None) -> int:
        """Delete the idempotency records older than :data:`IDEM_SECONDS` (a key is only
        answered again within that time); how many. Run at the first send and every
        ``_PRUNE_EVERY`` sends, so the records stay bounded by the sends of a week."""
        cutoff = (int(time.time()) if now is None else now) - IDEM_SECONDS

        def prune(tx: StoreTransaction) -> int:
            gone = 0
            for k in tx.app_keys(_IDEM):
                raw = tx.app_get(k)
                if raw is not None and json.loads(raw).get("at", 0) < cutoff:
                    tx.app_delete(k)
                    gone += 1
            return gone

        return await self.client.transaction(prune)

    async def _answer(self, key: str | None, digest: str, answer: dict[str, Any]) -> None:
        if key is None:
            return
        rec = _IDEM + hashlib.sha256(key.encode()).hexdigest()

        def put(tx: StoreTransaction) -> None:
            raw = tx.app_get(rec)
            held = json.loads(raw) if raw is not None else {"digest": digest}
            held["answer"] = answer
            tx.app_put(rec, json.dumps(held).encode())

        await self.client.transaction(put)

    # -- the other endpoints ---------------------------------------------------------------

    async def handle(self, method: str, path: str, query: str, body: bytes,
                     headers: dict[str, str]) -> dict[str, Any]:  # fmt: skip
        c = self.client
        if (method, path) == ("GET", "/v1/health"):
            return {"account": c.profile.account, "device": c.profile.device}
        auth = headers.get("authorization", "")
        if not hmac.compare_digest(auth.encode(), b"Bearer " + self._token):
            raise Unauthenticated("a bearer token is required")
        req: dict[str, Any] = {}
        if method == "POST":
            try:
                parsed = json.loads(body)
            except ValueError:
                raise DecodeError("the body is not JSON") from None
            if not isinstance(parsed, dict):
                raise DecodeError("the body is a JSON object")
            req = parsed
        if (method, path) == ("POST", "/v1/messages"):
            return await self.send(req, headers.get("idempotency-key"))
        if (method, path) == ("POST", "/v1/assign"):
            devices = req.get("devices")
            if not isinstance(devices, list) or not all(type(d) is int for d in devices):
                raise DecodeError("devices: a list of device ids")
            await c.assign(_str(req, "customer", 64), devices)
            return {}
        if (method, path) == ("GET", "/v1/history"):
            names = parse_qs(query).get("customer", [])
            if len(names) != 1:
                raise DecodeError("customer=NAME")
            return {"messages": [message_json(m) for m in await c.history(names[0])]}
        if (method, path) == ("GET", "/v1/conversations"):
            return {"conversations": await c.conversations()}
        if (method, path) == ("GET", "/v1/bill"):
            return _bill(await c.bill())
        if (method, path) == ("GET", "/v1/tier"):
            t = await c.messaging_tier()
            return {"level": t.level, "limit": t.limit, "used": t.used,
                    "quality": t.quality.name.lower(), "negatives": t.negatives}  # fmt: skip
        if (method, path) == ("GET", "/v1/templates"):
            return {"templates": [
                {"ref": e.ref.decode(), "name": e.spec.name, "language": e.spec.language,
                 "version": e.version, "category": e.spec.category.name.lower(),
                 "state": e.state.name.lower(), "text": e.spec.text,
                 "params": [p.name.lower() for p in e.spec.params]}
                for e in await c.catalogue()
            ]}  # fmt: skip
        if (method, path) == ("POST", "/v1/templates"):
            try:
                category = Category[_str(req, "category", 20).upper()]
                params = [ParamType[_str({"p": p}, "p", 20).upper()]
                          for p in req.get("params", [])]  # fmt: skip
            except KeyError:
                raise DecodeError("unknown category or parameter type") from None
            e = await c.register_catalogue(
                _str(req, "name", 20), _str(req, "language", 6), category,
                _str(req, "text", 1024), params,
            )  # fmt: skip
            return {"ref": e.ref.decode(), "version": e.version,
                    "state": e.state.name.lower(), "reason": e.reason}  # fmt: skip
        raise NoSuchEndpoint(f"{method} {path}")

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI application of the API."""
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request_id = new_request_id()
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = bytearray()
        status, answer, code = 200, {}, None
        try:
            more = True
            while more:
                msg = await receive()
                body += msg.get("body", b"")
                more = msg.get("more_body", False)
                if len(body) > MAX_BODY:
                    raise LimitExceeded(f"at most {MAX_BODY} bytes")
            answer = await self.handle(method, path,
                                       scope.get("query_string", b"").decode("latin-1"),
                                       bytes(body), headers)  # fmt: skip
        except E2EError as exc:
            status, code = _status(exc)
            answer = {"error": code, "message": str(exc)}
        except Exception:  # noqa: BLE001 - answered, logged without the request
            log.exception("gateway request failed", extra={"request_id": request_id})
            status, code = 500, "internal"
            answer = {"error": code, "message": "internal error"}
        raw = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"x-request-id", request_id.encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": raw})
        level = logging.ERROR if status >= 500 and status != 502 else (
            logging.INFO if code else logging.DEBUG)  # fmt: skip
        if log.isEnabledFor(level):
            log.log(level, "request", extra={
                "request_id": request_id, "method": method[:8],
                "path": path if path in PATHS else "(other)", "status": status,
                "ms": round((time.perf_counter() - started) * 1e3, 2), "code": code,
            })  # fmt: skip


def _bill(b: wire.BillLines) -> dict[str, Any]:
    lines = [
        {"class": MessageClass(c).name.lower(), "in_window": bool(w), "count": n, "price": p}
        for c, w, n, p in zip(b.classes, b.in_window, b.counts, b.unit_prices, strict=True)
    ]
    categories = [
        {"category": Category(c).name.lower(), "in_window": bool(w), "count": n, "price": p}
        for c, w, n, p in zip(
            b.category_ids, b.category_in_window, b.category_counts, b.category_prices, strict=True
        )  # fmt: skip
    ]
    penalties = [
        {"declared": MessageClass(d).name.lower(), "content": MessageClass(c).name.lower(),
         "count": n, "price": p}
        for d, c, n, p in zip(b.penalty_declared, b.penalty_content, b.penalty_counts,
                              b.penalty_prices, strict=True)
    ]  # fmt: skip
    return {"tier": b.tier, "lines": lines, "categories": categories, "penalties": penalties,
            "total": b.total}  # fmt: skip
