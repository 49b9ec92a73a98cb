"""The demo's large business (SPEC.md §17): megastore runs its service from a CRM through the
business API gateway, beside acme-shop whose agents answer from the app.

The CRM here is an ASGI application in the demo's process: it receives the gateway's signed
webhooks and answers through the gateway's HTTP API, both over httpx (in process, no socket).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import httpx

from e2e.business.gateway import Gateway
from e2e.business.webhooks import SIGNATURE_HEADER, Deliverer, verify
from e2e.client import Client
from e2e.client.transport import Connector
from e2e.clock import ManualClock
from e2e.errors import DecodeError
from e2e.platform.policy import MessageClass
from e2e.platform.templates import Category, ParamType
from e2e.store import Store

__all__ = ["Crm", "gateway_scene"]

_TOKEN = "demo-crm-token-0123456789"  # noqa: S105 - the demo's, on no network
_SECRET = b"demo-webhook-secret-0123456789"


class Crm:
    """The business's CRM as a webhook receiver: checks each signature, keeps each webhook
    once by its id."""

    def __init__(self, clock: Callable[[], int]) -> None:
        self.clock = clock
        self.hooks: dict[str, dict[str, Any]] = {}
        self.forged = 0

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status = 200
        try:
            verify(_SECRET, body, headers[SIGNATURE_HEADER.lower()], int(time.time()))
            hook = json.loads(body)
            self.hooks.setdefault(hook["id"], hook)
        except (DecodeError, KeyError, ValueError):
            self.forged += 1
            status = 401
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [h for h in self.hooks.values() if h["type"] == kind]


async def _until(cond: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def gateway_scene(store: Callable[[str], Callable[[], Store]], connect: Connector,
                        clock: ManualClock, customer: Client,
                        check: Callable[[bool, str], None]) -> list[bytes]:  # fmt: skip
    """megastore's CRM and ``customer`` talk through the gateway; returns the private texts
    sent (for the demo's scan of what the relay kept: a template's fixed text is public, in
    the catalogue, so only its parameters are private)."""
    print("\n   megastore, a large business, runs its service from a CRM through the business")
    print("   API gateway (its device on its own store; the CRM gets signed webhooks):")
    mega = await Client.create_account(store("megastore"), connect, "megastore", "business",
                                       tier=1)  # fmt: skip
    entry = await mega.register_catalogue(
        "order_update", "en", Category.UTILITY, "Hi {{1}}, your order {{2}} ships on {{3}}.",
        [ParamType.TEXT, ParamType.TEXT, ParamType.DATE],
    )  # fmt: skip
    print(f"   megastore registers template {entry.ref.decode()}: {entry.state.name.lower()}")
    crm = Crm(clock)
    deliverer = Deliverer("http://crm/hooks", _SECRET, transport=httpx.ASGITransport(app=crm))
    gateway = Gateway(mega, _TOKEN, deliverer)
    pump = asyncio.create_task(gateway.pump())
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway.app),
                            base_url="http://gateway",
                            headers={"authorization": f"Bearer {_TOKEN}"})  # fmt: skip
    texts = ["Where is my order M-88?", "We are on it: it is packed and waiting for the van."]
    try:
        await customer.send("megastore", texts[0])
        await _until(lambda: bool(crm.of("message")))
        for h in crm.of("message"):
            print(f"   CRM <- webhook {h['id']}: {h['message']['conversation']} says "
                  f"{h['message']['text']!r}")  # fmt: skip
        reply = {"to": customer.profile.account, "text": texts[1]}
        first = await api.post("/v1/messages", json=reply, headers={"idempotency-key": "M-88"})
        again = await api.post("/v1/messages", json=reply, headers={"idempotency-key": "M-88"})
        print(f"   CRM -> POST /v1/messages (sent twice, one idempotency key): "
              f"{first.status_code}, the same message {first.json() == again.json()}")  # fmt: skip
        clock.advance(25 * 3600)
        late = await api.post("/v1/messages", json={"to": customer.profile.account,
                                                    "text": "Still there?"})  # fmt: skip
        print(f"   25 hours later, free text: {late.status_code} {late.json()['error']}")
        params = [customer.profile.account.title(), "M-88", "2026-01-03"]
        tpl = await api.post("/v1/messages", json={"to": customer.profile.account, "template": {
            "name": "order_update", "language": "en", "params": params}})  # fmt: skip
        print(f"   the approved template instead: {tpl.status_code}")
        got = [m for m in await customer.sync() if m.cls is not MessageClass.RECEIPT]
        for m in got:
            ok = m.template_id is not None and m.class_check is not None and m.class_check.ok
            print(f"   {customer.profile.account} sees [{m.cls.name.lower()}] from megastore: "
                  f"{m.text!r}" + (" (checked against the template)" if ok else ""))  # fmt: skip
        rendered = f"Hi {params[0]}, your order M-88 ships on {params[2]}."
        mid = first.json()["message_id"]
        await _until(lambda: any(mid in h["message_ids"] for h in crm.of("status")
                                 if h["status"] == "delivered"))  # fmt: skip
        statuses = sorted({h["status"] for h in crm.of("status")})
        print(f"   CRM <- status webhooks: {', '.join(statuses)}")
        bill = (await api.get("/v1/bill")).json()
        for c in bill["categories"]:
            where = "in window" if c["in_window"] else "outside window"
            print(f"   megastore bill: {c['category']} template ({where}) "
                  f"{c['count']} x {c['price']}")  # fmt: skip
        check(len(crm.of("message")) == 1 and crm.forged == 0 and first.json() == again.json()
              and late.status_code == 422 and tpl.status_code == 200
              and [m.text for m in got] == [texts[1], rendered]
              and all(m.class_check is not None and m.class_check.ok for m in got),
              "megastore through the gateway: each webhook signed and delivered once, a "
              "repeated request sent once, only the approved template outside the window, "
              "checked on alice's device")  # fmt: skip
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        await api.aclose()
        await deliverer.aclose()
        await mega.aclose()
    return [t.encode() for t in texts] + [b"2026-01-03"]
