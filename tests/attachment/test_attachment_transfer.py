"""Resumable transfers (e2e.attachment.transfer, SPEC.md §16.8) against an in-memory blob
store that cuts connections where the test says: an upload and a download each cut a hundred
times at random offsets finish byte-identical; a restarted upload continues from the store's
offset; a hostile store's impossible offsets and wrong bytes are refused, and a failed
download leaves no file. (The same transfers through the relay over HTTP are in
tests/relay.)"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from e2e import errors
from e2e.attachment import Decryptor, Layout
from e2e.attachment.transfer import REQUEST_BYTES, UploadState, download, upload


class CuttingStore:
    """A blob store in memory whose connections drop at the blob offsets in ``cuts``: an
    upload request that crosses one keeps the bytes before it and fails; a download stops
    there. Every cut happens once."""

    def __init__(self, cuts: list[int] | None = None, rnd: random.Random | None = None) -> None:
        self.blobs: dict[bytes, bytearray] = {}
        self.lengths: dict[bytes, int | None] = {}
        self.cuts = sorted(cuts or [])
        self.rnd = rnd or random.Random(0)
        self.requests = 0
        self.interrupted = 0

    def _next_cut(self, start: int, end: int) -> int | None:
        for c in self.cuts:
            if start <= c < end:
                self.cuts.remove(c)
                self.interrupted += 1
                return c
        return None

    async def create(self, length: int | None) -> bytes:
        blob_id = os.urandom(16)
        self.blobs[blob_id] = bytearray()
        self.lengths[blob_id] = length
        return blob_id

    async def offset(self, blob_id: bytes) -> int:
        return len(self.blobs[blob_id])

    async def append(
        self, blob_id: bytes, offset: int, data: bytes | memoryview, length: int | None
    ) -> int:
        self.requests += 1
        blob = self.blobs[blob_id]
        if offset != len(blob):
            raise errors.TransferError("conflict: wrong offset")
        if length is not None:
            self.lengths[blob_id] = length
        cut = self._next_cut(offset, offset + len(data))
        if cut is not None:
            blob += memoryview(data)[: cut - offset]
            await asyncio.sleep(0)
            raise errors.TransferInterrupted("connection dropped")
        blob += data
        declared = self.lengths[blob_id]
        if declared is not None and len(blob) > declared:
            raise errors.TransferError("longer than declared")
        return len(blob)

    async def read(self, blob_id: bytes, start: int) -> AsyncIterator[bytes]:
        blob = bytes(self.blobs[blob_id])
        at = start
        while at < len(blob):
            n = self.rnd.randint(1, 300_000)
            cut = self._next_cut(at, at + n)
            if cut is not None:
                if cut > at:
                    yield blob[at:cut]
                raise errors.TransferInterrupted("connection dropped")
            yield blob[at : at + n]
            at += n
            await asyncio.sleep(0)


async def _stream(data: bytes, rnd: random.Random) -> AsyncIterator[bytes]:
    at = 0
    while at < len(data):
        n = rnd.randint(1, 3 << 20)
        yield data[at : at + n]
        at += n


SIZE = 12 << 20  # several upload requests (4 MiB each), 49 chunks


@pytest.mark.parametrize("source", ["file", "stream", "stream of unknown size"])
def test_a_hundred_cuts_each_way_finish_byte_identical(source: str, tmp_path: Path) -> None:
    rnd = random.Random(source)
    plain = os.urandom(SIZE)
    blob_len = Layout.of(SIZE).blob_size
    store = CuttingStore(rnd.sample(range(blob_len), 100), rnd)
    seen: list[tuple[int, int]] = []

    async def run() -> tuple[bytes, int]:
        if source == "file":
            path = tmp_path / "parcel.jpg"
            path.write_bytes(plain)
            pointer = await upload(store, path, content_type="image/jpeg", retry_delay=0,
                                   progress=lambda d, t: seen.append((d, t)))  # fmt: skip
        else:
            pointer = await upload(
                store, _stream(plain, rnd), content_type="image/jpeg", file_name="parcel.jpg",
                size=SIZE if source == "stream" else None, retry_delay=0,
                progress=lambda d, t: seen.append((d, t)),
            )  # fmt: skip
        assert store.interrupted == 100 and not store.cuts
        assert bytes(store.blobs[pointer.blob_id]) != b"" and pointer.size == SIZE
        store.cuts = sorted(rnd.sample(range(blob_len), 100))
        out = tmp_path / "downloaded.jpg"
        n = await download(store, pointer, out, retry_delay=0)
        assert store.interrupted == 200 and not store.cuts
        assert not (tmp_path / "downloaded.jpg.part").exists()
        return out.read_bytes(), n

    got, n = asyncio.run(run())
    assert n == SIZE and hashlib.sha256(got).digest() == hashlib.sha256(plain).digest()
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1][0] == blob_len


def test_download_to_a_sink_with_cuts() -> None:
    rnd = random.Random(3)
    plain = os.urandom(3 << 20)
    store = CuttingStore()
    got = bytearray()

    async def sink(piece: bytes) -> None:
        got.extend(piece)

    async def run() -> None:
        pointer = await upload(store, _stream(plain, rnd), content_type="audio/ogg",
                               file_name="voice.ogg", size=len(plain))  # fmt: skip
        store.cuts = sorted(rnd.sample(range(Layout.of(len(plain)).blob_size), 100))
        await download(store, pointer, sink, retry_delay=0)

    asyncio.run(run())
    assert got == plain


def test_an_upload_continues_after_a_restart(tmp_path: Path) -> None:
    """The first process dies mid-upload (its transfer gives up); a second one continues
    from the store's offset with the kept UploadState, sending only the rest."""
    plain = os.urandom(10 << 20)
    path = tmp_path / "invoice.pdf"
    path.write_bytes(plain)
    blob_len = Layout.of(len(plain)).blob_size
    store = CuttingStore([blob_len // 2 + 12345] * 9)  # the same place, nine times: gives up
    states: list[UploadState] = []

    async def first() -> None:
        await upload(store, path, content_type="application/pdf", on_state=states.append,
                     retries=3, retry_delay=0)  # fmt: skip

    with pytest.raises(errors.TransferInterrupted):
        asyncio.run(first())
    (state,) = states
    held = len(store.blobs[state.blob_id])
    assert (
        0 < held < blob_len
        and repr(state.key) not in repr(state)
        and state.key.hex() not in repr(state)
    )
    store.cuts = []
    requests_before = store.requests

    async def second() -> bytes:
        pointer = await upload(store, path, content_type="application/pdf", resume=state)
        assert pointer.blob_id == state.blob_id and pointer.key == state.key
        dec = Decryptor(pointer.key, pointer.digest, pointer.size)
        return bytes(dec.update(bytes(store.blobs[pointer.blob_id]))) + dec.finish()

    assert asyncio.run(second()) == plain
    sent_again = store.requests - requests_before
    assert sent_again <= -(-(blob_len - held) // REQUEST_BYTES)  # only the rest was sent


def test_a_changed_file_starts_a_new_upload(tmp_path: Path) -> None:
    path = tmp_path / "a.pdf"
    path.write_bytes(b"first version" * 1000)
    store = CuttingStore()
    states: list[UploadState] = []

    async def run() -> None:
        first = await upload(store, path, content_type="application/pdf", on_state=states.append)
        path.write_bytes(b"second version, longer" * 1000)
        second = await upload(store, path, content_type="application/pdf", resume=states[0])
        assert second.blob_id != first.blob_id and second.key != first.key
        got = await _fetch(store, second)
        assert got == path.read_bytes()

    asyncio.run(run())


async def _fetch(store: CuttingStore, pointer: object) -> bytes:
    out = bytearray()

    async def sink(piece: bytes) -> None:
        out.extend(piece)

    await download(store, pointer, sink)  # type: ignore[arg-type]
    return bytes(out)


class LyingStore(CuttingStore):
    """Claims an offset it cannot have: more than was sent."""

    async def append(
        self, blob_id: bytes, offset: int, data: bytes | memoryview, length: int | None
    ) -> int:
        await super().append(blob_id, offset, data, length)
        return offset + len(data) + 1


def test_an_impossible_offset_stops_the_upload() -> None:
    async def run() -> None:
        await upload(LyingStore(), _stream(b"x" * 5000, random.Random(1)),
                     content_type="text/plain", file_name="a.txt")  # fmt: skip

    with pytest.raises(errors.TransferError, match="outside"):
        asyncio.run(run())


def test_a_store_that_serves_other_bytes_leaves_no_file(tmp_path: Path) -> None:
    plain = os.urandom(1 << 20)
    store = CuttingStore()

    async def run() -> None:
        pointer = await upload(store, _stream(plain, random.Random(2)), content_type="image/png",
                               file_name="a.png", size=len(plain))  # fmt: skip
        blob = store.blobs[pointer.blob_id]
        blob[len(blob) // 2] ^= 1
        await download(store, pointer, tmp_path / "a.png")

    with pytest.raises(errors.ChunkTampered):
        asyncio.run(run())
    assert list(tmp_path.iterdir()) == []


def test_a_store_that_stops_sending_gives_up(tmp_path: Path) -> None:
    class Silent(CuttingStore):
        async def read(self, blob_id: bytes, start: int) -> AsyncIterator[bytes]:
            raise errors.TransferInterrupted("nothing")
            yield b""  # pragma: no cover

    store = Silent()

    async def run() -> None:
        pointer = await upload(store, _stream(b"y" * 100, random.Random(0)),
                               content_type="text/plain", file_name="y.txt")  # fmt: skip
        await download(store, pointer, tmp_path / "y.txt", retries=3, retry_delay=0)

    with pytest.raises(errors.TransferInterrupted):
        asyncio.run(run())
    assert list(tmp_path.iterdir()) == []


def test_bad_pointer_fields_are_refused_before_any_upload() -> None:
    store = CuttingStore()

    async def run() -> None:
        await upload(store, _stream(b"z", random.Random(0)), content_type="image/jpeg",
                     file_name="../../x.jpg")  # fmt: skip

    with pytest.raises(errors.DecodeError):
        asyncio.run(run())
    assert store.blobs == {}
