"""``python -m e2e demo``: a customer and a business talk through the relay service over HTTP
(SPEC.md §14: the architecture it shows).

Starts the relay service (embedded SQLite) on a loopback port and runs every device as an
:class:`~e2e.client.Client` on its own sealed SQLite store, talking to the relay over HTTP.
The business routes the chat to one agent (plus an archive device), restarts that agent
mid-conversation, then reassigns the chat; the customer sends a photo of the crushed parcel and
the agent answers with an invoice PDF (attachments, SPEC §16). Prints what each end sees, what
the relay and the ad service saw, the bill, and a proof summary of checks run now on this
run's recordings.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2e.attachment.pointer import Pointer
from e2e.client import Client, ReceiptStatus, inbox, state
from e2e.clock import ManualClock
from e2e.demo_media import invoice_pdf, parcel_photo, parcel_thumbnail
from e2e.errors import DuplicateMessage, E2EError, KeyTransparencyError, PolicyError
from e2e.fingerprint import safety_number
from e2e.keys import KeyPair
from e2e.platform import wire
from e2e.platform.adservice import AdService
from e2e.platform.directory import DeviceCertificate, SignedDeviceList
from e2e.platform.envelope import Delivery, Envelope
from e2e.platform.policy import MessageClass
from e2e.platform.templates import Category, ParamType
from e2e.relay.tap import Recorder
from e2e.store import Store
from e2e.store.sqlite import SqliteStore
from e2e.suite import DEFAULT

if TYPE_CHECKING:  # the HTTP client needs httpx (the 'client' extra)
    from e2e.client.http import HttpTransport, RelayClient

__all__ = ["main", "RelayServer"]

_HOUR = 3600
_START = 1_767_225_600  # the demo clock starts at 2026-01-01 00:00 UTC
_SHOP = "acme-shop"
_ALICE = "alice"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RelayServer:
    """The relay service (ASGI app on uvicorn) on a loopback port, in a background thread,
    with the demo's clock, its ad-service share and a tap recording every body."""

    def __init__(
        self,
        db: str,
        clock: Callable[[], int] | None = None,
        share: Callable[[bytes], None] | None = None,
        port: int = 0,
        secret_key: bytes | None = None,
        settings: Any = None,
    ) -> None:
        import uvicorn

        from e2e.relay.app import create_app
        from e2e.relay.ratelimit import RateLimit

        self.db = db
        self.tap = Recorder()
        extra: dict[str, Any] = {} if clock is None else {"clock": clock}
        if secret_key is not None:
            extra["secret_key"] = secret_key
        if settings is not None:
            extra["settings"] = settings
        self.app = create_app(db, share=share, tap=self.tap,
                              rate_limit=RateLimit(10_000.0, 10_000.0), **extra)  # fmt: skip
        self.port = port or _free_port()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", http="h11", access_log=False)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="relay", daemon=True)

    @property
    def url(self) -> str:
        """The service's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RelayServer:
        """Start serving; returns once the server accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("relay service did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving (the app closes its store at lifespan shutdown)."""
        self.server.should_exit = True
        self.thread.join(20)

    def stored_bytes(self) -> list[bytes]:
        """The relay's database files and its blob store's files (SPEC §10.12), raw."""
        out = []
        for suffix in ("", "-wal"):
            p = Path(self.db + suffix)
            if p.exists():
                out.append(p.read_bytes())
        return out + self.blob_files()

    def blob_files(self) -> list[bytes]:
        """The blob store's files (SPEC §10.12: its index and each blob's ciphertext), raw."""
        blobs = Path(self.db + ".blobs")
        return [p.read_bytes() for p in sorted(blobs.rglob("*")) if p.is_file()]


def main(argv: list[str]) -> int:
    """Run the demo; 0 if every check of its proof summary passed."""
    parser = argparse.ArgumentParser(prog="python -m e2e demo")
    parser.parse_args(argv)
    try:
        import httpx  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        print(f"the demo needs {exc.name}: pip install 'e2e[relay,client]'", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="e2e-demo-") as tmp:
        return asyncio.run(_Demo(tmp).run())


def _addr(a: Any) -> str:
    return f"{a.name}/{a.device}"


class _Demo:
    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.clock = ManualClock(_START)
        self.ads = AdService()
        self.keys: dict[str, bytes] = {}
        self.texts: list[bytes] = []
        self.devices: dict[str, Client] = {}
        self.failures = 0
        #: The attachments sent (the photo, the invoice): scanned for in the proof.
        self.media: list[bytes] = []

    def store(self, name: str) -> Callable[[], Store]:
        key = self.keys.setdefault(name, os.urandom(32))
        path = os.path.join(self.tmp, f"{name}.sqlite")
        return lambda: SqliteStore(path, key)

    async def send(self, dev: Client, to: str, text: str,
                   cls: MessageClass = MessageClass.SERVICE) -> bool:  # fmt: skip
        label = f"-- {_addr(dev.addr):<12} [{cls.name.lower()}] {text!r}"
        try:
            msg = await dev.send(to, text, cls)
        except PolicyError as exc:
            print(label)
            print(f"   refused by the relay: {type(exc).__name__}")
            return False
        self.texts.append(text.encode())
        print(f"{label} at +{(msg.time - _START) // _HOUR}h")
        return True

    async def template(self, name: str, category: Category, text: str,
                       params: list[str]) -> None:  # fmt: skip
        """acme-shop registers a catalogue template (SPEC §17.1) and agent 3 sends it."""
        shop = self.devices["shop3"]
        entry = await shop.register_catalogue(name, "en", category, text,
                                              [ParamType.TEXT] * len(params))  # fmt: skip
        print(f"   acme-shop registers template {entry.ref.decode()}: "
              f"{entry.state.name.lower()}")  # fmt: skip
        label = f"-- {_addr(shop.addr):<12} [{category.cls.name.lower()}] {entry.ref.decode()}"
        try:
            msg = await shop.send_template(_ALICE, name, "en", params)
        except PolicyError as exc:
            print(f"{label}\n   refused by the relay: {type(exc).__name__}")
            return
        print(f"{label} {params} at +{(msg.time - _START) // _HOUR}h")

    async def pump(self, *names: str) -> None:
        for name in names:
            dev = self.devices[name]
            for m in await dev.sync():
                if m.cls is MessageClass.RECEIPT:
                    continue
                who = "me (other device)" if m.outgoing else _addr(m.sender)
                extra = ""
                if m.attachment is not None:
                    p = Pointer.from_bytes(m.attachment)
                    extra = f" + {p.file_name} ({p.content_type}, {p.size} B)"
                print(f"   {_addr(dev.addr):<12} sees [{m.cls.name.lower()}] from {who}: "
                      f"{m.text!r}{extra}")  # fmt: skip

    async def _attachments(self) -> None:
        """Alice sends a photo of the parcel; agent 3 answers with an invoice PDF (SPEC §16)."""
        d = self.devices
        print(
            "\n   the parcel arrives crushed: alice sends a photo, agent 3 answers with an "
            "invoice PDF\n   (encrypted on the device; the relay keeps only ciphertext):"
        )
        photo = parcel_photo()
        path = Path(self.tmp) / "parcel.png"
        path.write_bytes(photo)
        text = "It arrived like this."
        sent = await d["phone"].send_attachment(
            _SHOP, path, content_type="image/png", text=text, caption="the box, as delivered",
            thumbnail=parcel_thumbnail(),
        )  # fmt: skip
        self.texts.append(text.encode())
        print(f"-- {_addr(d['phone'].addr):<12} [service] {text!r} + parcel.png "
              f"({len(photo)} B) at +{(sent.time - _START) // _HOUR}h")  # fmt: skip
        got = [m for m in await d["shop3"].sync() if m.attachment]
        await self.pump("shop1", "laptop")
        copy = Path(self.tmp) / "agent-parcel.png"
        await d["shop3"].download(got[-1], copy)
        lines = [("Replacement: espresso machine", "249.00 EUR"), ("Express shipping", "0.00 EUR")]
        pdf = invoice_pdf("2026-4417", lines, "249.00 EUR")

        async def pieces() -> AsyncIterator[bytes]:  # as from a document service
            for at in range(0, len(pdf), 4096):
                yield pdf[at : at + 4096]

        reply = "Sorry! A replacement is on its way; your invoice:"
        await d["shop3"].send_attachment(_ALICE, pieces(), content_type="application/pdf",
                                         file_name="invoice-2026-4417.pdf", text=reply)  # fmt: skip
        self.texts.append(reply.encode())
        print(f"-- {_addr(d['shop3'].addr):<12} [service] {reply!r} + invoice-2026-4417.pdf "
              f"({len(pdf)} B)")  # fmt: skip
        (inv,) = [m for m in await d["phone"].sync() if m.attachment]
        await self.pump("laptop", "shop1")
        got_pdf = bytearray()

        async def sink(piece: bytes) -> None:
            got_pdf.extend(piece)

        await d["phone"].download(inv, sink)
        self.media = [photo, pdf]
        self.check(copy.read_bytes() == photo and bytes(got_pdf) == pdf,
                   "agent 3 downloaded the photo and alice the invoice, each verified chunk by "
                   "chunk against the key and digest in its pointer, byte-identical")  # fmt: skip

    def check(self, ok: bool, what: str) -> None:
        self.failures += not ok
        print(f"   [{'ok' if ok else 'FAIL'}] {what}")

    async def run(self) -> int:
        started = time.monotonic()
        from e2e.relay.config import RelayConfig

        # The relay takes the ad service's entry tokens (SPEC §17.4).
        settings = RelayConfig().replace("ads", entry_key=self.ads.entry_key.public.hex())
        relay = RelayServer(os.path.join(self.tmp, "relay.sqlite"), self.clock,
                            self.ads.receive, secret_key=os.urandom(32),
                            settings=settings).start()  # fmt: skip
        from e2e.client.http import RelayClient

        net = RelayClient(relay.url, clock=self.clock)
        try:
            return await self._script(relay, net, started)
        finally:
            for dev in self.devices.values():
                await dev.aclose()
            await net.aclose()
            relay.stop()

    async def _script(self, relay: RelayServer, net: RelayClient, started: float) -> int:
        c = net.connect
        d = self.devices
        print(f"e2e demo: suite {DEFAULT.name}; relay service at {relay.url} (SQLite); every "
              f"device an async client over HTTP on its own sealed SQLite store")  # fmt: skip
        d["shop1"] = await Client.create_account(self.store("shop1"), c, _SHOP, "business",
                                                 tier=1)  # fmt: skip
        d["shop2"] = await d["shop1"].add_device(self.store("shop2"), c)
        d["shop3"] = await d["shop1"].add_device(self.store("shop3"), c)
        d["phone"] = await Client.create_account(self.store("phone"), c, _ALICE, "customer")
        d["laptop"] = await d["phone"].add_device(self.store("laptop"), c)
        await d["phone"].pin(_SHOP, await d["shop1"].account_identity())  # a verified QR code
        for dev in d.values():  # the key-log key ships with the application (SPEC §13.4)
            await dev.pin_log_key(relay.app.service.log_public_key)
        await d["shop1"].designate([1])
        await d["shop1"].assign(_ALICE, [2])
        print("   acme-shop: device 1 (archive, designated), agents 2 and 3; the chat with alice")
        print("   is assigned to agent 2. alice: device 1 (phone) and 2 (laptop)\n")

        await self.send(d["shop2"], _ALICE, "Hello! Want our newsletter?", MessageClass.TEMPLATE)
        await self.send(d["phone"], _SHOP, "Hi, my order #4417 never arrived.")
        await self.pump("shop2", "shop1", "shop3", "laptop")
        await self.send(d["shop2"], _ALICE, "Sorry about that, let me check.")
        await self.pump("phone", "laptop", "shop1")

        print("\n   agent 2 restarts mid-conversation; alice writes while it is down:")
        before = [m.body for m in await d["shop2"].history(_ALICE)]
        await d["shop2"].aclose()
        del d["shop2"]
        await self.send(d["phone"], _SHOP, "Any news? I need it by Friday.")
        d["shop2"] = await Client.open(self.store("shop2"), c)
        await self.pump("shop2")
        await self.send(d["shop2"], _ALICE, "It left the depot this morning.")
        after = [m.body for m in await d["shop2"].history(_ALICE)]
        await self.pump("phone", "laptop", "shop1")

        print("\n   acme-shop reassigns the chat to agent 3 (alice's cached route goes stale):")
        await d["shop1"].assign(_ALICE, [3])
        await self.send(d["phone"], _SHOP, "Can I change the delivery address?")
        await self.pump("shop3", "shop2", "shop1")
        print("   (agent 2 got nothing: it is no longer assigned)")
        await self.send(d["shop3"], _ALICE, "Done: the new address is on the parcel.")
        await self.send(d["shop2"], _ALICE, "(agent 2, no longer assigned)")
        await self.pump("phone", "laptop")
        last = (await d["shop3"].history(_ALICE))[-1]
        await d["phone"].mark_read(_SHOP, [last.message_id])
        await self.pump("shop3")
        status = await d["shop3"].receipt_status(last.message_id)
        print(f"   receipts for agent 3's last message: {_status(status)}")
        await self._attachments()

        print("\n   25 hours later, the 24 h service window is closed:")
        self.clock.advance(25 * _HOUR)
        await self.send(d["shop3"], _ALICE, "Anything else?")
        await self.send(d["shop3"], _ALICE, "Your order #4417 was delivered.",
                        MessageClass.TEMPLATE)  # fmt: skip
        await self.template("delivered", Category.UTILITY, "Your order {{1}} was delivered.",
                            ["#4417"])  # fmt: skip
        await self.pump("phone", "laptop")  # alice's delivered receipts: they do not reopen it
        from e2e.client.http import HttpTransport

        t = d["shop3"].transport
        assert isinstance(t, HttpTransport)
        print(f"   window open after alice's receipts: {await t.window_open(_ALICE)}")
        await self.send(d["shop3"], _ALICE, "SALE: 30% off everything!", MessageClass.MARKETING)
        await d["phone"].opt_in(_SHOP)
        print("   alice opts in to acme-shop marketing")
        await self.send(d["shop3"], _ALICE, "SALE: 30% off everything!", MessageClass.MARKETING)
        await self.template("sale", Category.MARKETING, "SALE: {{1}} off everything!", ["30%"])
        await self.pump("phone", "laptop", "shop1", "shop3")
        verdict = await d["phone"].report(_SHOP)
        verified = len(verdict.message_ids)
        print(f"\n   alice reports spam: the relay verified {verified} revealed messages "
              f"(franking) and blocked acme-shop;\n   of the attachments among them, the "
              f"relay's stored blob is the franked one for {len(verdict.attachments)} (the "
              f"invoice)")  # fmt: skip
        await self.send(d["shop3"], _ALICE, "Please come back!", MessageClass.TEMPLATE)
        revealed = [m.body for m in await d["phone"].history(_SHOP) if not m.outgoing][-verified:]

        await self._ad_entry(relay, c)

        from e2e.business.demo import gateway_scene

        self.texts += await gateway_scene(self.store, c, self.clock, d["phone"], self.check)
        self._relay_view(relay)
        await self._business_view(t)
        await self._proof(relay, before, after, set(revealed))
        await self._keys(relay, net)
        print(f"\nran in {time.monotonic() - started:.1f} s")
        print("\nall checks passed" if self.failures == 0 else f"\n{self.failures} checks FAILED")
        return 0 if self.failures == 0 else 1

    async def _ad_entry(self, relay: RelayServer, connect: Any) -> None:
        """An ad's entry point (SPEC §17.4): carol taps acme-shop's ad and writes; a day and
        more later the shop still answers, free; the ad service learns the ad and the hour."""
        print("\n   carol taps an acme-shop ad and writes (the entry token rides beside her"
              " message):")  # fmt: skip
        d = self.devices
        d["carol"] = carol = await Client.create_account(self.store("carol"), connect, "carol",
                                                         "customer")  # fmt: skip
        await carol.pin_log_key(relay.app.service.log_public_key)
        token = self.ads.issue_entry(b"winter-sale", _SHOP.encode(), self.clock())
        text = "Saw your winter sale ad: do you ship to Oslo?"
        await carol.send(_SHOP, text, entry=token)
        self.texts.append(text.encode())
        print(f"-- carol/1        [service] {text!r} (entry token of ad 'winter-sale')")
        await self.pump("shop3")
        self.clock.advance(30 * _HOUR)
        print("   30 hours later (past 24 h, inside the 72 h entry window):")
        await self.send(d["shop3"], "carol", "Yes, 3 days to Oslo, free shipping.")
        await self.pump("carol")
        self.clock.advance(_HOUR)
        self.ads.receive_conversions(relay.app.service.ad_conversions(0).to_bytes())
        converted = self.ads.conversions(_SHOP.encode())
        print(
            f"   the ad service's conversions for acme-shop: "
            f"{ {k.decode(): v for k, v in converted.items()} } (ad and hour; no customer)"
        )
        self.check(converted == {b"winter-sale": 1}
                   and all(b"carol" not in r for r in self.ads.conversion_records),
                   "the ad's conversion reached the ad service without the customer")  # fmt: skip

    async def _keys(self, relay: RelayServer, net: RelayClient) -> None:
        """Safety numbers and the key directory (SPEC §13)."""
        print("\nKeys you can check (safety numbers, the key directory):")
        d = self.devices
        alice_key, shop_key = (
            await d["phone"].account_identity(),
            await d["shop1"].account_identity(),
        )
        seen_by_alice, seen_by_shop = (
            await d["phone"].pinned(_SHOP),
            await d["shop3"].pinned(_ALICE),
        )
        assert seen_by_alice is not None and seen_by_shop is not None
        mine = safety_number(_ALICE.encode(), alice_key, _SHOP.encode(), seen_by_alice)
        theirs = safety_number(_SHOP.encode(), shop_key, _ALICE.encode(), seen_by_shop)
        print(f"   safety number alice <-> acme-shop: {mine.grouped()}")
        self.check(mine.display == theirs.display
                   and mine.scannable.compare(theirs.scannable.to_bytes()),
                   "acme-shop's screen shows the same number; its QR code scans as a "
                   "match")  # fmt: skip
        audited = await d["shop1"].monitor()
        await d["phone"].monitor()
        view = await d["phone"].log_view()
        self.check(view is not None and view.latest is not None,
                   f"every device list was proven in the key log before use; acme-shop "
                   f"audited {audited} log entries: none under its name it did not "
                   f"publish")  # fmt: skip
        # A relay that hands a newcomer its own key for acme-shop (the attack of issue 14).
        bob = await Client.create_account(self.store("bob"), net.connect, "bob", "customer")
        self.devices["bob"] = bob
        await bob.pin_log_key(relay.app.service.log_public_key)
        eve = KeyPair.generate()
        fake = DeviceCertificate.issue(eve, _SHOP.encode(), 1, KeyPair.generate().public)
        signed = SignedDeviceList.sign(eve, _SHOP.encode(), 1, [fake.to_bytes()]).to_bytes()
        honest = bob.transport

        class Substituting:
            def __getattr__(self, name: str) -> Any:
                return getattr(honest, name)

            async def fetch_devices(self, account: str, chat: str | None = None) -> Any:
                if account == _SHOP:
                    return eve.public, [fake.to_bytes()], signed
                return await honest.fetch_devices(account, chat)

        bob.transport = Substituting()
        submitted = len(relay.tap.records)
        try:
            await bob.send(_SHOP, "my card number is 4111 1111 1111 1111")
            caught = "not caught"
        except KeyTransparencyError as exc:
            caught = type(exc).__name__
        finally:
            bob.transport = honest
        sent = [
            d for ch, d in relay.tap.records[submitted:] if ch.endswith(wire.Path.MESSAGE_SUBMIT)
        ]
        self.check(caught == "KeyMismatch" and not sent,
                   f"the relay hands bob its own key for acme-shop: refused ({caught}) before "
                   f"anything was encrypted")  # fmt: skip

    def _relay_view(self, relay: RelayServer) -> None:
        print("\nWhat the relay saw (each submitted copy; it never sees a text or a key):")
        lines = []
        for channel, body in relay.tap.records:
            if channel != f"recv:{wire.Path.MESSAGE_SUBMIT}":
                continue
            for raw in wire.Submit.from_bytes(body).envelopes:
                env = Envelope.from_bytes(raw)
                lines.append(
                    f"{env.cls.name.lower():<9} {env.from_account.decode()}/{env.from_device:<3}"
                    f"-> {env.dest_account.decode()}/{env.dest_device:<3} frame "
                    f"{len(env.frame):>4} B  id {env.message_id.hex()[:8]}"
                    + ("" if env.blob_id is None else f"  blob {env.blob_id.hex()[:8]}")
                )
        shown = lines if len(lines) <= 8 else lines[:5] + lines[-3:]
        for i, line in enumerate(shown):
            if i == 5 and len(lines) > 8:
                print(f"   ... {len(lines) - 8} more")
            print(f"   {line}")
        blobs = sum(1 for ch, _ in relay.tap.records if ch == f"recv:{wire.Path.BLOB_CREATE}")
        print(f"   {len(relay.tap.records)} request and response bodies in all; {blobs} blob "
              f"uploads, bytes it cannot read")  # fmt: skip

    async def _business_view(self, t: HttpTransport) -> None:
        print("\nWhat the ad service saw (chat metadata only):")
        view = self.ads.view(_SHOP.encode(), _ALICE.encode())
        if view is not None:
            print(f"   acme-shop/alice: opted_in={view.opted_in} window_open={view.window_open} "
                  f"blocked={view.blocked} limited={view.limited} in={view.customer_messages} "
                  f"out={view.business_messages} reports={view.spam_reports}")  # fmt: skip
        bill = await t.bill()
        print("\nBill for acme-shop (receipts are never billed):")
        for cls, inw, count, price in zip(bill.classes, bill.in_window, bill.counts,
                                          bill.unit_prices, strict=True):  # fmt: skip
            name = MessageClass(cls).name.lower() + (" (in window)" if inw else "")
            print(f"   {name:<28} {count:>3} x {price:>3} = {count * price:>5}")
        for ad, count in zip(bill.entry_ads, bill.entry_counts, strict=True):
            name = f"entry point (ad {ad.decode(errors='replace')})"
            print(f"   {name:<28} {count:>3} x {0:>3} = {0:>5}")
        print(f"   {'total':<28} {bill.total:>17}")

    async def _proof(self, relay: RelayServer, before: list[bytes], after: list[bytes],
                     revealed: set[bytes]) -> None:  # fmt: skip
        print("\nProof summary (checked now, on this run):")
        d = self.devices
        recs = [b for _, b in relay.tap.records] + relay.stored_bytes()
        ad_recs = list(self.ads.records) + list(self.ads.conversion_records)
        shown = set().union(*(_windows(t) for t in revealed)) if revealed else set()
        private = set().union(*(_windows(t) for t in self.texts if t not in revealed)) - shown
        hits = _hits(recs, private) + _hits(ad_recs, private)
        size = sum(len(r) for r in recs)
        self.check(hits == 0, f"{len(recs)} relay records and files ({size} B) and {len(ad_recs)} "
                   f"ad-service records scanned for every 8-byte piece of the unreported "
                   f"texts: {hits} hits")  # fmt: skip
        media = {m[i : i + 8] for m in self.media for i in range(0, len(m) - 7, 61)}
        blob_bytes = sum(len(r) for r in relay.blob_files())
        m_hits = _hits(recs, media)
        self.check(m_hits == 0 and blob_bytes > sum(len(m) for m in self.media),
                   f"the relay's blob store holds {blob_bytes} B of attachment ciphertext; "
                   f"it and every relay record scanned for pieces of the photo and the "
                   f"invoice: {m_hits} hits")  # fmt: skip
        found = sum(_hits(recs, _windows(t)) > 0 for t in revealed)
        self.check(found == len(revealed) > 0,
                   f"control: the {len(revealed)} texts alice revealed in her report are found: "
                   f"{found}")  # fmt: skip
        secrets: set[bytes] = set()
        for dev in d.values():

            def grab(tx: Any) -> list[bytes]:
                out = [tx.local_identity().private_bytes()]
                acct = state.account_key(tx)
                if acct is not None:
                    out.append(acct.private_bytes())
                out += [p.pair.private_bytes() for p in tx.one_time_prekeys()]
                out += [p.item.pair.private_bytes() for p in tx.signed_prekeys()]
                return out

            secrets |= set(await dev._tx(grab))
        pieces = {s[i : i + 8] for s in secrets for i in range(0, len(s) - 7, 8)}
        s_hits = _hits(recs, pieces) + _hits(ad_recs, pieces)
        self.check(s_hits == 0, f"{len(secrets)} private keys of the devices and accounts: "
                   f"{s_hits} relay records hold any")  # fmt: skip
        ok = after[: len(before)] == before and len(after) == len(before) + 2
        self.check(ok, f"agent 2 restarted from its SQLite store: {len(before)} messages "
                   f"before, {len(after)} after (the one sent while it was down, and its "
                   f"reply)")  # fmt: skip
        dupes = 0
        for dev in d.values():
            for peer in await dev.conversations():
                ids = [m.message_id for m in await dev.history(peer)]
                dupes += len(ids) - len(set(ids))
        self.check(dupes == 0, "no device holds any message twice")
        await self._tamper()

    async def _tamper(self) -> None:
        d = self.devices
        phone, laptop = d["phone"], d["laptop"]
        self.clock.advance(0)
        sent = await phone.send(_SHOP, "one more question")
        self.texts.append(b"one more question")
        raw = (await laptop.transport.fetch())[-1]
        dl = Delivery.from_bytes(raw)
        db = os.path.join(self.tmp, "laptop.sqlite")
        before = _rows(db)
        rejected = 0
        for i in range(len(dl.envelope)):
            forged = bytearray(dl.envelope)
            forged[i] ^= 0x01
            bad = Delivery(bytes(forged), dl.received_at, dl.tag, dl.seq).to_bytes()
            try:
                await laptop._tx(functools.partial(_open, laptop.profile, bad))
            except E2EError:
                rejected += 1
        self.check(rejected == len(dl.envelope) and _rows(db) == before,
                   f"every byte of one envelope flipped: {rejected}/{len(dl.envelope)} rejected, "
                   f"the laptop's store byte-identical")  # fmt: skip
        got = await laptop._tx(functools.partial(_open, laptop.profile, raw))
        try:
            await laptop._tx(functools.partial(_open, laptop.profile, raw))
            replay = False
        except DuplicateMessage:
            replay = True
        self.check(got.message_id == sent.message_id and replay,
                   "the genuine copy then opens once; its replay is rejected")  # fmt: skip


def _open(profile: state.Profile, raw: bytes, tx: Any) -> state.Message:
    return inbox.open_delivery(tx, profile, raw)


def _status(status: dict[str, int]) -> str:
    names = {ReceiptStatus.DELIVERED: "delivered", ReceiptStatus.READ: "read"}
    return ", ".join(f"{k}: {names.get(v, v)}" for k, v in sorted(status.items())) or "none"


def _rows(db: str) -> list[tuple[str, str, bytes]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT kind, id, value FROM records ORDER BY kind, id"))


def _windows(data: bytes) -> set[bytes]:
    return {data[i : i + 8] for i in range(len(data) - 7)}


def _hits(records: list[bytes], needles: set[bytes]) -> int:
    return sum(not needles.isdisjoint(r[i : i + 8] for i in range(len(r) - 7)) for r in records)
