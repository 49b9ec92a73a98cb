"""Attachments through the relay service as a user runs it (``python -m e2e relay serve``, its
own process, on SQLite and on PostgreSQL), with e2e.client devices over HTTP (SPEC.md §16,
§10.12):

* a customer sends a photo from a file, the business answers with a PDF from a stream; each
  side downloads the other's byte-identical, to a file and to a sink;
* an upload and a download each cut a hundred times at random offsets (a TCP proxy resets
  the connection) still finish byte-identical;
* nothing the relay received, sent, stored or logged holds an attachment's plaintext, key,
  file name or caption (the tap, the database, the blob files);
* the policy treats an attachment message like any other: the window, billing, a report
  that reveals the pointer and the relay's check that its stored blob is the franked one;
* who may read a blob (the sender's and the recipient's accounts, not a third one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cutproxy import CutProxy, uniform
from relayhelp import RelayProcess, relay_bytes

from e2e import errors
from e2e.attachment.pointer import Pointer
from e2e.client import Client
from e2e.client.http import RelayClient
from e2e.demo_media import invoice_pdf, parcel_photo
from e2e.store.sqlite import SqliteStore


def _stores(tmp_path: Path) -> Callable[[str], Callable[[], Any]]:
    keys: dict[str, bytes] = {}

    def store(name: str) -> Callable[[], Any]:
        key = keys.setdefault(name, os.urandom(32))
        return lambda: SqliteStore(tmp_path / f"{name}.db", key)

    return store


async def _stream(data: bytes, piece: int = 100_003) -> AsyncIterator[bytes]:
    for at in range(0, len(data), piece):
        await asyncio.sleep(0)
        yield data[at : at + piece]


@contextlib.asynccontextmanager
async def _chat(
    url: str, store: Callable[[str], Any]
) -> AsyncIterator[tuple[RelayClient, Client, Client, list[Client]]]:
    """A customer (dana) and a business (acme) over HTTP at ``url``; every client in the
    yielded list is closed with them."""
    net = RelayClient(url)
    cust = await Client.create_account(store("cust"), net.connect, "dana", "customer")
    shop = await Client.create_account(store("shop"), net.connect, "acme", "business", tier=1)
    extra: list[Client] = []
    try:
        yield net, cust, shop, extra
    finally:
        for c in (cust, shop, *extra):
            await c.aclose()
        await net.aclose()


def test_photo_and_invoice_round_trip(relay: RelayProcess, tmp_path: Path) -> None:
    store = _stores(tmp_path)
    photo = parcel_photo()
    pdf = invoice_pdf("2026-0042", [("Replacement espresso machine", "249.00 EUR")], "249.00 EUR")
    (tmp_path / "parcel.png").write_bytes(photo)
    seen: list[tuple[int, int]] = []

    async def run() -> None:
        async with _chat(relay.url, store) as (net, cust, shop, extra):
            sent = await cust.send_attachment(
                "acme",
                tmp_path / "parcel.png",
                content_type="image/png",
                text="It arrived like this",
                caption="The box, as delivered",
                progress=lambda d, t: seen.append((d, t)),
            )
            got = [m for m in await shop.sync() if m.attachment]
            assert len(got) == 1 and got[0].message_id == sent.message_id
            pointer = Pointer.from_bytes(got[0].attachment or b"")
            assert (pointer.file_name, pointer.content_type, pointer.size) == (
                "parcel.png",
                "image/png",
                len(photo),
            )
            assert got[0].text == "It arrived like this"
            assert await shop.download(got[0], tmp_path / "agent-copy.png") == len(photo)
            assert (tmp_path / "agent-copy.png").read_bytes() == photo
            # the agent answers with an invoice, from a stream, in the 24 h window
            await shop.send_attachment(
                "dana",
                _stream(pdf),
                content_type="application/pdf",
                file_name="invoice-2026-0042.pdf",
            )
            (answer,) = [m for m in await cust.sync() if m.attachment]
            out = bytearray()

            async def sink(piece: bytes) -> None:
                out.extend(piece)

            await cust.download(answer, sink)
            assert bytes(out) == pdf
            # the sender's own history keeps the pointer too
            mine = [m for m in await cust.history("acme") if m.outgoing and m.attachment]
            assert Pointer.from_bytes(mine[0].attachment or b"").digest == pointer.digest

    asyncio.run(run())
    assert (
        seen and seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    )


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_a_hundred_cuts_at_random_offsets(
    relay: RelayProcess, tmp_path: Path, direction: str
) -> None:
    """A TCP proxy between the devices and the relay resets a hundred connections, each after
    a random number of bytes (uniform in 1 KiB .. 200 KiB) in the direction under test; the
    transfer goes on from the relay's offset (upload) or the last byte verified (download)."""
    store = _stores(tmp_path)
    rnd = random.Random(direction)
    data = os.urandom(16 << 20)
    (tmp_path / "video.mp4").write_bytes(data)
    proxy = CutProxy(relay.port).start()

    async def run() -> None:
        async with _chat(proxy.url, store) as (
            net,
            cust,
            shop,
            extra,
        ):  # every request goes through the proxy, cut when armed
            if direction == "upload":
                proxy.arm(100, uniform(rnd, 1024, 200 << 10), "up")
            await cust.send_attachment(
                "acme", tmp_path / "video.mp4", content_type="video/mp4", request_bytes=256 << 10
            )
            assert proxy.done == (100 if direction == "upload" else 0)
            (msg,) = [m for m in await shop.sync() if m.attachment]
            if direction == "download":
                proxy.arm(100, uniform(rnd, 1024, 200 << 10), "down")
            await shop.download(msg, tmp_path / "got.mp4")
            assert proxy.done == 100

    try:
        asyncio.run(run())
    finally:
        proxy.stop()
    assert (tmp_path / "got.mp4").read_bytes() == data


def test_the_relay_holds_no_plaintext(relay_db: str, tmp_path: Path) -> None:
    tap, log = tmp_path / "tap.bin", tmp_path / "relay.log"
    proc = RelayProcess(
        relay_db, log_path=log, extra=["--tap", str(tap), "--log-level", "debug"]
    ).start()
    (tmp_path / "devices").mkdir()
    store = _stores(tmp_path / "devices")
    marker = b"PARCEL-PHOTO-PLAINTEXT-" + os.urandom(8).hex().encode()
    photo = (marker + os.urandom(4000)) * 300 + parcel_photo()
    pdf = invoice_pdf("SECRET-INVOICE-4711", [("Item", "1.00 EUR")], "1.00 EUR")
    (tmp_path / "p.jpg").write_bytes(photo)
    secrets: list[bytes] = [marker, pdf[:200], b"SECRET-INVOICE-4711"]

    async def run() -> None:
        async with _chat(proc.url, store) as (net, cust, shop, extra):
            m1 = await cust.send_attachment(
                "acme",
                tmp_path / "p.jpg",
                content_type="image/jpeg",
                file_name="dana-kitchen-parcel-7f3a.jpg",
                caption="caption-CONFIDENTIAL-91",
            )
            await shop.sync()
            m2 = await shop.send_attachment(
                "dana",
                _stream(pdf),
                content_type="application/pdf",
                file_name="invoice-for-dana-7f3a.pdf",
            )
            (got,) = [m for m in await cust.sync() if m.attachment]
            assert await cust.download(got, tmp_path / "inv.pdf") == len(pdf)
            for m in (m1, m2):
                p = Pointer.from_bytes(m.attachment or b"")
                secrets.extend([p.key, p.key.hex().encode(), p.file_name.encode()])
            secrets.append(b"caption-CONFIDENTIAL-91")

    try:
        asyncio.run(run())
    finally:
        proc.stop()
    seen = tap.read_bytes() + relay_bytes(relay_db)
    assert len(seen) > 2 * len(photo)  # the blobs are in there, as ciphertext
    logged = log.read_bytes()
    for s in secrets:
        assert s not in seen and s not in logged, s[:40]
    for at in range(0, len(photo) - 64, len(photo) // 50):  # any 64-byte window of the photo
        assert photo[at : at + 64] not in seen


def test_policy_billing_and_a_franked_attachment_report(
    relay: RelayProcess, tmp_path: Path
) -> None:
    store = _stores(tmp_path)
    pdf = invoice_pdf("7", [("x", "1")], "1")

    async def run() -> None:
        async with _chat(relay.url, store) as (net, cust, shop, extra):
            # a business cannot open a chat with an attachment any more than with text; the refusal
            # comes before anything is uploaded
            with pytest.raises(errors.NoPriorContact):
                await shop.send_attachment(
                    "dana", _stream(pdf), content_type="application/pdf", file_name="a.pdf"
                )
            await cust.send("acme", "hello")
            await shop.sync()
            before = await _bill(shop)
            await shop.send("dana", "a text reply")
            mid = await _bill(shop)
            msg = await shop.send_attachment(
                "dana", _stream(pdf), content_type="application/pdf", file_name="spam.pdf"
            )
            after = await _bill(shop)
            text_line = {k: v - before.get(k, 0) for k, v in mid.items() if v != before.get(k, 0)}
            att_line = {k: v - mid.get(k, 0) for k, v in after.items() if v != mid.get(k, 0)}
            assert text_line == att_line and list(text_line.values()) == [1]  # billed alike
            await cust.sync()
            verdict = await cust.report("acme")
            pointer = Pointer.from_bytes(msg.attachment or b"")
            assert msg.message_id in verdict.message_ids
            assert verdict.attachments == (pointer.blob_id,)  # the stored blob is the franked one

    asyncio.run(run())


async def _bill(client: Client) -> dict[tuple[int, int, int], int]:
    lines = await client.transport.bill()  # type: ignore[attr-defined]
    return {
        (c, w, p): n
        for c, w, n, p in zip(
            lines.classes, lines.in_window, lines.counts, lines.unit_prices, strict=True
        )
    }


def test_a_report_of_a_swapped_blob_is_not_verified(tmp_path: Path) -> None:
    """The relay checks the stored blob against the franked pointer's digest: a blob changed
    on the relay's disk after the fact is not the one the business franked."""
    db = str(tmp_path / "relay.db")
    proc = RelayProcess(db, log_path=tmp_path / "relay.log").start()
    store = _stores(tmp_path)

    async def run() -> None:
        async with _chat(proc.url, store) as (net, cust, shop, extra):
            await cust.send("acme", "hello")
            await shop.sync()
            msg = await shop.send_attachment(
                "dana",
                _stream(b"%PDF fake" * 1000),
                content_type="application/pdf",
                file_name="x.pdf",
            )
            await cust.sync()
            pointer = Pointer.from_bytes(msg.attachment or b"")
            blob = Path(db + ".blobs") / pointer.blob_id.hex()[:2] / pointer.blob_id.hex()
            data = bytearray(blob.read_bytes())
            data[-1] ^= 1
            blob.write_bytes(bytes(data))
            verdict = await cust.report("acme", block=False)
            assert msg.message_id in verdict.message_ids and verdict.attachments == ()
            with pytest.raises(errors.ChunkTampered):  # and the recipient would refuse it too
                await cust.download(msg, tmp_path / "x.pdf")
            assert not (tmp_path / "x.pdf").exists()

    try:
        asyncio.run(run())
    finally:
        proc.stop()


def test_who_may_read_a_blob(relay: RelayProcess, tmp_path: Path) -> None:
    store = _stores(tmp_path)

    async def run() -> None:
        async with _chat(relay.url, store) as (net, cust, shop, extra):
            erik = await Client.create_account(store("erik"), net.connect, "erik", "customer")
            extra.append(erik)
            msg = await cust.send_attachment(
                "acme", _stream(b"photo" * 5000), content_type="image/jpeg", file_name="p.jpg"
            )
            (got,) = [m for m in await shop.sync() if m.attachment]
            pointer = Pointer.from_bytes(got.attachment or b"")
            with pytest.raises(errors.NoSuchBlob):  # a third account, with the whole pointer
                await erik.download(pointer, tmp_path / "stolen.jpg")
            assert not (tmp_path / "stolen.jpg").exists()
            # an upload in progress is its owner's only; an unknown id answers the same
            blobs = erik.transport.blobs()
            with pytest.raises(errors.NoSuchBlob):
                await blobs.offset(pointer.blob_id)
            with pytest.raises(errors.NoSuchBlob):
                await erik.download(
                    Pointer(
                        os.urandom(16),
                        pointer.key,
                        pointer.digest,
                        pointer.size,
                        "image/jpeg",
                        "p.jpg",
                    ),
                    tmp_path / "n",
                )
            assert await cust.download(msg, tmp_path / "mine.jpg") == 25000  # the owner can

    asyncio.run(run())


def test_memory_stays_flat_through_the_relay(tmp_path: Path) -> None:
    """A 48 MiB attachment up and down through the relay over HTTP: the Python objects the
    client holds at once stay a few MiB (one upload request, one piece), whatever the size.
    (httpx's request and response refer to each other: bytes handed to it as a body would live
    until the garbage collector ran, here about the whole file.)"""
    import tracemalloc

    db = str(tmp_path / "relay.db")
    proc = RelayProcess(db, log_path=tmp_path / "relay.log").start()
    store = _stores(tmp_path)
    with open(tmp_path / "big.bin", "wb") as f:
        for _ in range(48):
            f.write(os.urandom(1 << 20))
    peaks: list[int] = []

    async def run() -> None:
        async with _chat(proc.url, store) as (net, cust, shop, extra):
            tracemalloc.start()
            try:
                await cust.send_attachment("acme", tmp_path / "big.bin", content_type="video/mp4")
                peaks.append(tracemalloc.get_traced_memory()[1])
                tracemalloc.reset_peak()
                (msg,) = [m for m in await shop.sync() if m.attachment]
                await shop.download(msg, tmp_path / "got.bin")
                peaks.append(tracemalloc.get_traced_memory()[1])
            finally:
                tracemalloc.stop()

    try:
        asyncio.run(run())
    finally:
        proc.stop()
    assert (tmp_path / "got.bin").read_bytes() == (tmp_path / "big.bin").read_bytes()
    assert max(peaks) < 24 << 20, peaks


@pytest.mark.skipif(
    not os.environ.get("E2E_ATTACHMENT_BIG_MIB"),
    reason="on demand: E2E_ATTACHMENT_BIG_MIB=1024 runs an attachment of that many MiB",
)
def test_a_big_attachment_on_demand(relay_db: str, tmp_path: Path) -> None:
    """``E2E_ATTACHMENT_BIG_MIB=N pytest tests/relay -k big``: an N MiB file up and down
    through the relay (its cap and quota set to fit), byte-identical (compared by SHA-256) and
    with the client's Python objects under 24 MiB at any time."""
    import hashlib
    import tracemalloc

    mib = int(os.environ["E2E_ATTACHMENT_BIG_MIB"])
    cap = str((mib + mib // 8 + 1) << 20)
    relay = RelayProcess(
        relay_db,
        log_path=tmp_path / "relay.log",
        extra=["--blob-max-bytes", cap, "--blob-quota-bytes", cap],
    ).start()
    store = _stores(tmp_path)
    sent = hashlib.sha256()
    with open(tmp_path / "big.bin", "wb") as f:
        for _ in range(mib):
            piece = os.urandom(1 << 20)
            sent.update(piece)
            f.write(piece)

    async def run() -> int:
        async with _chat(relay.url, store) as (net, cust, shop, extra):
            tracemalloc.start()
            try:
                await cust.send_attachment("acme", tmp_path / "big.bin", content_type="video/mp4")
                (msg,) = [m for m in await shop.sync() if m.attachment]
                await shop.download(msg, tmp_path / "got.bin")
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        return peak

    try:
        peak = asyncio.run(run())
    finally:
        relay.stop()
    got = hashlib.sha256()
    with open(tmp_path / "got.bin", "rb") as f:
        while piece := f.read(1 << 20):
            got.update(piece)
    assert got.digest() == sent.digest() and peak < 24 << 20


def test_an_upload_survives_kill_9_of_the_relay(relay_db: str, tmp_path: Path) -> None:
    """The relay process is killed (-9) mid-upload and started again on its database: every
    offset it acknowledged is still held (the durable offset moves only after fsync or
    commit), and the client's transfer, retrying meanwhile, goes on from there to a
    byte-identical blob."""
    relay = RelayProcess(relay_db, log_path=tmp_path / "relay.log").start()
    store = _stores(tmp_path)
    data = os.urandom(12 << 20)
    (tmp_path / "clip.mp4").write_bytes(data)
    acked: list[int] = []
    killed = asyncio.Event()

    async def run() -> None:
        async with _chat(relay.url, store) as (net, cust, shop, extra):

            def progress(done: int, total: int) -> None:
                acked.append(done)
                if done > total // 3 and not killed.is_set():
                    killed.set()

            task = asyncio.create_task(
                cust.send_attachment("acme", tmp_path / "clip.mp4", content_type="video/mp4",
                                     progress=progress, request_bytes=256 << 10)
            )  # fmt: skip
            await killed.wait()
            held = acked[-1]
            await asyncio.to_thread(relay.kill)
            assert not task.done()  # killed mid-upload
            await asyncio.to_thread(relay.start)
            sent = await task
            (msg,) = [m for m in await shop.sync() if m.attachment]
            assert msg.message_id == sent.message_id
            await shop.download(msg, tmp_path / "got.mp4")
            assert held <= acked[-1] and acked == sorted(acked)

    try:
        asyncio.run(run())
    finally:
        relay.stop()
    assert (tmp_path / "got.mp4").read_bytes() == data
