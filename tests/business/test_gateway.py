"""The business API gateway (SPEC §17.2) as a business runs it: ``python -m e2e business
gateway`` beside ``python -m e2e relay serve``, its device on its own store (SQLite or
PostgreSQL), driven by a fake CRM written here -- over the gateway's HTTP API, and receiving
its signed webhooks -- across a kill -9 of the gateway: nothing lost, nothing repeated."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "relay"))

from relayhelp import ROOT, RelayProcess, free_port, pg_or_skip  # noqa: E402

from e2e.business.webhooks import ID_HEADER, SIGNATURE_HEADER, verify  # noqa: E402
from e2e.client import Client  # noqa: E402
from e2e.client.http import RelayClient  # noqa: E402
from e2e.errors import DecodeError  # noqa: E402
from e2e.platform.policy import MessageClass  # noqa: E402
from e2e.store.sqlite import SqliteStore  # noqa: E402

TOKEN = "crm-token-0123456789abcdef"
SECRET = b"webhook-secret-0123456789abcdef"


class Crm:
    """The business's CRM: a webhook receiver that checks each signature, remembers every
    webhook it accepted by id, and can be told to answer 500 (down for maintenance)."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.attempts = 0
        self.forged = 0
        self.down = False
        self.lock = threading.Lock()
        crm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                with crm.lock:
                    crm.attempts += 1
                    try:
                        verify(SECRET, body, self.headers[SIGNATURE_HEADER], int(time.time()))
                    except DecodeError:
                        crm.forged += 1
                        self.send_response(401)
                        self.end_headers()
                        return
                    hook = json.loads(body)
                    assert hook["id"] == self.headers[ID_HEADER]
                    if crm.down:
                        self.send_response(500)
                        self.end_headers()
                        return
                    crm.accepted.append(hook)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def messages(self) -> list[dict[str, Any]]:
        with self.lock:
            return [h for h in self.accepted if h["type"] == "message"]

    def of(self, kind: str, status: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            hooks = [h for h in self.accepted if h["type"] == kind]
        return [h for h in hooks if status is None or h.get("status") == status]


class GatewayProcess:
    def __init__(self, relay: str, store: str, webhook: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "e2e", "business", "gateway", "--relay", relay,
                    "--store", store, "--account", "bigshop", "--create", "--port",
                    str(self.port), "--webhook", webhook, "--log-level", "info"]  # fmt: skip
        self.env = {**os.environ, "E2E_GATEWAY_TOKEN": TOKEN,
                    "E2E_WEBHOOK_SECRET": SECRET.decode(),
                    "E2E_GATEWAY_STORE_KEY": "11" * 32}  # fmt: skip
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        out = open(self.log, "ab")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=out,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("gateway did not start")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.pg)])
def gateway_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "gateway.db")
    from relayhelp import fresh_pg_db

    return fresh_pg_db(pg_or_skip())


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    proc = RelayProcess(str(tmp_path / "relay.db"), log_path=tmp_path / "relay.log").start()
    try:
        yield proc
    finally:
        proc.stop()


def wait_for(cond: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def api(gw: GatewayProcess, method: str, path: str, body: Any = None,
        key: str | None = None, token: str = TOKEN) -> httpx.Response:  # fmt: skip
    headers = {"authorization": f"Bearer {token}"}
    if key is not None:
        headers["idempotency-key"] = key
    return httpx.request(method, gw.url + path, json=body, headers=headers, timeout=60)


async def texts_of(dev: Client) -> list[str]:
    """The texts a sync brings (the gateway's delivered receipts left out)."""
    return [m.text for m in await dev.sync() if m.cls is not MessageClass.RECEIPT]


def test_a_crm_through_the_gateway_across_a_restart(
    relay: RelayProcess, gateway_store: str, tmp_path: Path
) -> None:
    crm = Crm()
    gw = GatewayProcess(relay.url, gateway_store, crm.url, tmp_path / "gateway.log").start()
    key = os.urandom(32)

    async def customer() -> tuple[RelayClient, Client]:
        net = RelayClient(relay.url)
        store = lambda: SqliteStore(tmp_path / "ann.db", key)  # noqa: E731
        return net, await Client.create_account(store, net.connect, "ann", "customer")

    async def scenario() -> None:
        net, ann = await customer()
        try:
            # The API refuses without the token, and says what is wrong with a bad request.
            refused = api(gw, "GET", "/v1/conversations", token="wrong" * 4)
            assert refused.status_code == 401
            assert api(gw, "POST", "/v1/messages", {"to": 3}).status_code == 400
            rids.append(refused.headers["x-request-id"])
            rids.append(api(gw, "GET", "/v1/history?customer=ann", token="x" * 20)
                        .headers["x-request-id"])  # fmt: skip
            # Ann writes; the CRM gets each message once, signed, in order.
            first = [await ann.send("bigshop", f"question {i}") for i in range(3)]
            wait_for(lambda: len(crm.messages()) == 3, "three message webhooks")
            assert [h["message"]["text"] for h in crm.messages()] == [
                "question 0", "question 1", "question 2"]  # fmt: skip
            assert [h["message"]["message_id"] for h in crm.messages()] == [
                m.message_id.hex() for m in first]  # fmt: skip
            # The CRM answers with an idempotency key; a repeat is the same message, another
            # request under the same key is refused.
            r1 = api(gw, "POST", "/v1/messages", {"to": "ann", "text": "answer 1"}, key="r1")
            assert r1.status_code == 200, r1.text
            again = api(gw, "POST", "/v1/messages", {"to": "ann", "text": "answer 1"}, key="r1")
            assert again.json() == r1.json()
            other = api(gw, "POST", "/v1/messages", {"to": "ann", "text": "other"}, key="r1")
            assert (other.status_code, other.json()["error"]) == (409, "conflict")
            # A refusal has the relay's status and code, and is a webhook too.
            late = api(gw, "POST", "/v1/messages", {"to": "nobody", "text": "x"}, key="r2")
            assert (late.status_code, late.json()["error"]) == (404, "unknown_account")
            again = api(gw, "POST", "/v1/messages", {"to": "nobody", "text": "x"}, key="r2")
            assert again.json() == late.json()  # the key's answer, kept
            wait_for(lambda: [h["error"] for h in crm.of("refused")] == ["UnknownAccount"],
                     "a refusal webhook")  # fmt: skip
            # Statuses arrive: the relay accepted the answer, Ann's device got it.
            assert await texts_of(ann) == ["answer 1"]
            mid = r1.json()["message_id"]
            wait_for(lambda: any(mid in h["message_ids"] for h in crm.of("status", "delivered")),
                     "a delivered status")  # fmt: skip
            assert any(mid in h["message_ids"] for h in crm.of("status", "sent"))
            # The CRM goes down; Ann writes twice more; the gateway keeps retrying and is
            # killed while the CRM still refuses: those events are not acknowledged.
            crm.down = True
            before = crm.attempts
            later = [await ann.send("bigshop", f"question {i}") for i in (3, 4)]
            wait_for(lambda: crm.attempts >= before + 3, "retries")
            gw.kill()
            crm.down = False
            gw.start()
            wait_for(lambda: len(crm.messages()) == 5, "the two held messages")
            # The CRM repeats its request after the restart: the same message, sent once.
            again = api(gw, "POST", "/v1/messages", {"to": "ann", "text": "answer 1"}, key="r1")
            assert again.json() == r1.json()
            r3 = api(gw, "POST", "/v1/messages", {"to": "ann", "text": "answer 3"}, key="r3")
            assert r3.status_code == 200
            assert await texts_of(ann) == ["answer 3"]
            # History and the bill, through the API.
            hist = api(gw, "GET", "/v1/history?customer=ann").json()["messages"]
            texts = [m["text"] for m in hist]
            assert texts.count("answer 1") == 1 and texts.count("question 4") == 1
            bill = api(gw, "GET", "/v1/bill").json()
            assert bill["tier"] == 1 and bill["total"] == 0  # all in the window: free
            sent_ids = {m.message_id.hex() for m in first + later}
            seen = [h["message"]["message_id"] for h in crm.messages()]
            assert sorted(seen) == sorted(sent_ids)  # nothing lost, nothing repeated
            ids = [h["id"] for h in crm.accepted]
            assert len(ids) == len(set(ids))  # no webhook accepted twice
            assert crm.forged == 0
        finally:
            await ann.aclose()
            await net.aclose()

    rids: list[str] = []
    try:
        asyncio.run(scenario())
    finally:
        gw.stop()
        crm.server.shutdown()
    # The gateway's logs (SPEC §17.2, as the relay's §10.9): JSON lines, each refused request
    # with the id it was answered with, and no account name, query, token or text.
    text = gw.log.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    for rid, path in zip(rids, ("/v1/conversations", "/v1/history"), strict=True):
        (rec,) = [r for r in records if r.get("request_id") == rid]
        assert (rec["path"], rec["status"], rec["code"]) == (path, 401, "unauthenticated")
    assert any(r["message"].startswith("webhook ") for r in records)  # the CRM was down
    for secret in ("ann", "bigshop", "question ", "answer ", TOKEN, "wrong", "customer="):
        assert secret not in text, secret


def test_webhook_signatures() -> None:
    from e2e.business.webhooks import sign

    body = b'{"id":"bigshop/1/7","type":"message"}'
    header = sign(SECRET, body, 1_000_000)
    verify(SECRET, body, header, 1_000_100)
    for bad_body, bad_header, now in (
        (body + b" ", header, 1_000_100),  # the body changed
        (body, header, 1_000_000 + 301),  # replayed too late
        (body, sign(b"another secret 0123456789", body, 1_000_000), 1_000_000),
        (body, header.replace("t=1000000", "t=1000001"), 1_000_000),  # the time changed
        (body, "v1=00", 1_000_000),
        (body, "garbage", 1_000_000),
    ):
        with pytest.raises(DecodeError):
            verify(SECRET, bad_body, bad_header, now)


def test_idempotency_records_are_kept_a_week(tmp_path: Path) -> None:
    from e2e.business.gateway import IDEM_SECONDS, Gateway

    async def run() -> None:
        net = RelayClient.in_process(str(tmp_path / "relay.db"))
        key = os.urandom(32)
        shop = await Client.create_account(lambda: SqliteStore(tmp_path / "s.db", key),
                                           net.connect, "bigshop", "business", tier=1)  # fmt: skip
        ann = await Client.create_account(lambda: SqliteStore(tmp_path / "a.db", key),
                                          net.connect, "ann", "customer")  # fmt: skip
        try:
            await ann.send("bigshop", "hi")
            await shop.sync()
            gw = Gateway(shop, TOKEN, None)
            first = await gw.send({"to": "ann", "text": "one"}, "k")
            assert await gw.send({"to": "ann", "text": "one"}, "k") == first
            assert await gw.prune() == 0  # a fresh record stays
            assert await gw.prune(int(time.time()) + IDEM_SECONDS + 1) == 1
            second = await gw.send({"to": "ann", "text": "two"}, "k")  # the key is free again
            assert second != first
            assert [m.text for m in await ann.sync() if m.cls is not MessageClass.RECEIPT] == [
                "one", "two"]  # fmt: skip
        finally:
            await ann.aclose()
            await shop.aclose()
            await net.aclose()

    asyncio.run(run())


def test_customers_controls_and_reports_reach_the_crm(relay: RelayProcess, tmp_path: Path) -> None:
    """A customer limits the business, opts in, blocks and unblocks it, and reports its
    messages as spam (which blocks it again): each reaches the CRM as a signed webhook, in
    order, once (customer.limit, customer.opt_in, customer.block, spam_report); a control
    that changes nothing (limiting twice) is not a webhook."""
    crm = Crm()
    gw = GatewayProcess(relay.url, str(tmp_path / "gateway.db"), crm.url,
                        tmp_path / "gateway.log").start()  # fmt: skip
    key = os.urandom(32)

    async def scenario() -> None:
        net = RelayClient(relay.url)
        ann = await Client.create_account(lambda: SqliteStore(tmp_path / "ann.db", key),
                                          net.connect, "ann", "customer")  # fmt: skip
        try:
            await ann.send("bigshop", "hello")
            wait_for(lambda: len(crm.messages()) == 1, "the message webhook")
            r = api(gw, "POST", "/v1/messages", {"to": "ann", "text": "hi, how can we help?"})
            assert r.status_code == 200, r.text
            await ann.sync()
            await ann.limit("bigshop")
            await ann.limit("bigshop")  # no change: no notice
            await ann.opt_in("bigshop")
            await ann.block("bigshop")
            await ann.block("bigshop", on=False)
            assert await ann.report_spam("bigshop") == 1  # and blocks it
        finally:
            await ann.aclose()
            await net.aclose()

    try:
        asyncio.run(scenario())
        want = [("customer.limit", True), ("customer.opt_in", True), ("customer.block", True),
                ("customer.block", False), ("spam_report", 1), ("customer.block", True)]

        def notices() -> list[tuple[str, Any]]:
            with crm.lock:
                hooks = [h for h in crm.accepted if h["type"].startswith(("customer.", "spam"))]
            return [(h["type"], h.get("on", h.get("messages"))) for h in hooks]

        wait_for(lambda: len(notices()) >= len(want), "the notice webhooks")
        time.sleep(2.5)  # one more poll of the relay's notices: nothing repeated
        assert notices() == want
        with crm.lock:
            hooks = [h for h in crm.accepted if h["type"].startswith(("customer.", "spam"))]
        assert all(h["customer"] == "ann" and h["time"] > 0 for h in hooks)
        assert crm.forged == 0
    finally:
        gw.stop()
        crm.server.shutdown()


def test_a_send_claimed_before_a_crash_is_sent_once(tmp_path: Path) -> None:
    """The gateway crashed after claiming an idempotency key and sealing its message but
    before recording the answer (simulated: the claim, then the client's send under the
    claimed id, then nothing). The repeated request answers that message id, and the
    customer gets the message once: the client's idempotent send is what makes it so (the
    gateway no longer scans the outbox and every history for the id)."""
    from e2e.business.gateway import Gateway

    key = os.urandom(32)

    async def scenario() -> None:
        relay = RelayClient.in_process(str(tmp_path / "relay.db"))
        def store(name: str) -> Any:
            return lambda: SqliteStore(tmp_path / f"{name}.db", key)

        shop = await Client.create_account(store("shop"), relay.connect, "bigshop", "business",
                                           tier=1)  # fmt: skip
        ann = await Client.create_account(store("ann"), relay.connect, "ann", "customer")
        try:
            await ann.send("bigshop", "hello?")
            await shop.sync()
            gw = Gateway(shop, TOKEN, None)
            req = {"to": "ann", "text": "sent once"}
            digest = hashlib.sha256(json.dumps(req, sort_keys=True).encode())
            claimed = await gw._claim("k-1", digest.hexdigest())
            assert isinstance(claimed, bytes)
            await shop.send("ann", "sent once", message_id=claimed)  # ... then the crash
            answer = await gw.send(req, "k-1")  # the CRM repeats its request
            assert answer == {"message_id": claimed.hex()}
            assert await gw.send(req, "k-1") == answer
            got = [m.text for m in await ann.sync() if m.cls is not MessageClass.RECEIPT]
            assert got == ["sent once"]
            hist = [m.text for m in await shop.history("ann") if m.outgoing]
            assert hist == ["sent once"]
        finally:
            for c in (shop, ann):
                await c.aclose()
            await relay.aclose()

    asyncio.run(scenario())
