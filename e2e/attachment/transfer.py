"""Resumable transfers of attachment blobs (SPEC.md §16.8): encrypt and upload from a file or
an async byte stream, download and verify into a file or an async sink. Memory stays flat in
the attachment's size, and a transfer cut at any byte continues where it stopped.

Both directions talk to a :class:`BlobTransport`, the client's handle on a blob store (the
relay's, over HTTP, in e2e.client; an in-memory one in the tests). Its calls raise
:class:`~e2e.errors.TransferInterrupted` when a connection drops; then:

* an upload asks the store for its offset (the bytes it holds durably) and sends again from
  there, out of the ciphertext it still holds (at most one request's worth, ``request_bytes``);
  the store's answer must lie between what it had acknowledged and what was sent, or the
  transfer stops with :class:`~e2e.errors.TransferError`. After a restart, an upload of a file
  continues from an :class:`UploadState` the caller kept (it holds the key: keep it sealed):
  the file is encrypted again under the same key and salt and the store's bytes are skipped.
* a download asks for the blob from the last byte its :class:`~e2e.attachment.Decryptor` took
  (an HTTP range request), so nothing verified is fetched twice and nothing unverified is
  released. Into a file, the plaintext goes to ``<name>.part``, is synced, and is renamed to
  the file only once the digest checked; a download that fails removes the part file.

A transfer that makes no progress over ``retries`` consecutive interruptions gives up with the
last :class:`~e2e.errors.TransferInterrupted`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from e2e.attachment.pointer import Pointer
from e2e.attachment.stream import Decryptor, Encryptor, Layout
from e2e.errors import OffsetConflict, TransferError, TransferInterrupted

__all__ = [
    "BlobTransport",
    "Progress",
    "UploadState",
    "upload",
    "download",
    "REQUEST_BYTES",
    "PIECE_BYTES",
]

#: Ciphertext bytes per upload request: what an upload holds to send again after a cut.
REQUEST_BYTES: Final = 4 << 20
#: Plaintext bytes read from a file at a time.
PIECE_BYTES: Final = 1 << 20
#: Called with (blob bytes done, blob bytes in all; -1 while an upload's size is unknown).
Progress = Callable[[int, int], None]


class BlobTransport(Protocol):
    """A blob store, as a client sees it (the relay's: SPEC.md §10; one in memory in tests)."""

    async def create(self, length: int | None) -> bytes:
        """Open an upload of a blob of ``length`` bytes (None: told with the last bytes);
        returns its blob id."""
        ...

    async def offset(self, blob_id: bytes) -> int:
        """How many bytes of the upload the store holds durably."""
        ...

    async def append(
        self, blob_id: bytes, offset: int, data: bytes | memoryview, length: int | None
    ) -> int:
        """Send ``data`` to be written at ``offset`` (``length``: the blob's whole length,
        with the last bytes of an upload created without it); returns the store's offset
        after it. A cut connection raises TransferInterrupted: some of ``data`` may be held."""
        ...

    def read(self, blob_id: bytes, start: int) -> AsyncIterator[bytes]:
        """The blob's bytes from ``start`` to its end (a range request), as they arrive."""
        ...


@dataclass(frozen=True, slots=True)
class UploadState:
    """What continues an upload of a file after a restart: the blob id, the attachment key
    and the blob's header (so the file encrypts to the same blob again), and the file's size
    and modification time (a changed file starts over). Holds the key: keep it sealed."""

    blob_id: bytes
    key: bytes = field(repr=False)
    header: bytes
    size: int
    mtime_ns: int


async def _retry(
    what: Callable[[], Awaitable[int]], failures: list[int], retries: int, delay: float
) -> int:
    """``what()``, asked again after each interruption until it answers or ``retries``
    consecutive interruptions (``failures[0]``, reset by the caller on progress)."""
    while True:
        try:
            return await what()
        except TransferInterrupted:
            failures[0] += 1
            if failures[0] > retries:
                raise
            await asyncio.sleep(min(delay * 2 ** (failures[0] - 1), 2.0))


class _Uploader:
    """Sends one blob's ciphertext in order, holding what the store has not acknowledged."""

    def __init__(
        self, transport: BlobTransport, blob_id: bytes, length: int | None, acked: int,
        progress: Progress | None, retries: int, delay: float, request_bytes: int,
    ) -> None:  # fmt: skip
        self.transport = transport
        self.blob_id = blob_id
        self.length = length
        #: The store holds the blob's bytes before this offset.
        self.acked = acked
        #: Ciphertext from ``acked`` on, not yet acknowledged.
        self.pending = bytearray()
        #: Blob bytes produced so far (acked + len(pending) once past the skipped part).
        self.made = 0
        self.progress = progress
        self.retries = retries
        self.delay = delay
        self.request_bytes = request_bytes
        self._failures = [0]

    def add(self, data: bytes | bytearray) -> None:
        """Queue the next blob bytes (what the store already holds is skipped)."""
        start = self.made
        self.made += len(data)
        if self.made <= self.acked:
            return
        self.pending += memoryview(data)[max(0, self.acked - start) :]

    async def flush(self, final: bool = False) -> None:
        """Send whole requests' worth, always keeping some bytes back for the last request
        (which tells a deferred length); everything, if ``final``."""
        while len(self.pending) > self.request_bytes or (final and self.pending):
            await self._send(min(len(self.pending), self.request_bytes), final)

    async def _send(self, n: int, final: bool) -> None:
        end = self.acked + n
        last = final and n == len(self.pending)
        length = self.made if last and self.length is None else None
        while self.acked < end:
            at = self.acked
            # a copy: the transport may keep a reference while pending is cut below
            data = bytes(memoryview(self.pending)[: end - at])
            try:
                got = await self.transport.append(self.blob_id, at, data, length)
            except (TransferInterrupted, OffsetConflict):
                # cut, or the store still finishing the cut request: ask where it stands
                self._failures[0] += 1
                if self._failures[0] > self.retries:
                    raise
                await asyncio.sleep(min(self.delay * 2 ** (self._failures[0] - 1), 2.0))
                got = await _retry(
                    lambda: self.transport.offset(self.blob_id), self._failures, self.retries,
                    self.delay,
                )  # fmt: skip
            if not at <= got <= end:
                raise TransferError(f"the store's offset {got} is outside {at}..{end}")
            if got > at:
                self._failures[0] = 0
                del self.pending[: got - at]
                self.acked = got
                if self.progress is not None:
                    self.progress(got, -1 if self.length is None else self.length)


async def _file_pieces(path: Path, size: int) -> AsyncIterator[bytes]:
    """The file's bytes, PIECE_BYTES at a time, read off the event loop."""
    f = await asyncio.to_thread(open, path, "rb")
    try:
        done = 0
        while True:
            piece = await asyncio.to_thread(f.read, PIECE_BYTES)
            if not piece:
                break
            done += len(piece)
            yield piece
        if done != size:
            raise TransferError("the file changed size while it was read")
    finally:
        f.close()


async def upload(
    transport: BlobTransport,
    source: Path | str | AsyncIterable[bytes],
    *,
    content_type: str,
    file_name: str | None = None,
    size: int | None = None,
    caption: str | None = None,
    thumbnail: bytes | None = None,
    progress: Progress | None = None,
    on_state: Callable[[UploadState], None] | None = None,
    resume: UploadState | None = None,
    retries: int = 8,
    retry_delay: float = 0.05,
    request_bytes: int = REQUEST_BYTES,
) -> Pointer:
    """Encrypt ``source`` under a fresh key, upload the blob and return its pointer.

    ``source`` is a file path (its name is the default ``file_name``; ``on_state`` is called
    with the :class:`UploadState` once the upload exists, and ``resume`` continues one) or an
    async iterable of bytes (``size``, if known, lets the store check its quota before the
    first byte; else the length is told with the last bytes). ``progress`` is called after
    every acknowledged request (of ``request_bytes`` each). Raises TransferError /
    TransferInterrupted, or what the store
    refuses with (the transport's typed errors), and never leaves a pointer to a partial blob.
    """
    if isinstance(source, str | Path):
        path = Path(source)
        stat = await asyncio.to_thread(os.stat, path)
        size = stat.st_size
        name = path.name if file_name is None else file_name
        if resume is not None and (resume.size, resume.mtime_ns) != (size, stat.st_mtime_ns):
            resume = None  # the file changed: a new upload under a new key
        pieces: AsyncIterable[bytes] = _file_pieces(path, size)
    else:
        if resume is not None:
            raise TransferError("only the upload of a file resumes after a restart")
        if file_name is None:
            raise TransferError("a stream needs a file name")
        name, pieces, stat = file_name, source, None
    # Check the pointer's fields before anything is uploaded (the blob id is a placeholder).
    Pointer(bytes(16), bytes(32), bytes(32), size or 0, content_type, name, thumbnail, caption)
    length = None if size is None else Layout.of(size).blob_size
    if resume is not None:
        enc = Encryptor.replay(resume.key, resume.header)
        blob_id = resume.blob_id
        failures = [0]
        acked = await _retry(lambda: transport.offset(blob_id), failures, retries, retry_delay)
        if not 0 <= acked <= (length or 0):
            raise TransferError(f"the store's offset {acked} is outside the blob")
    else:
        enc = Encryptor()
        blob_id = await transport.create(length)
        acked = 0
        if on_state is not None and stat is not None and size is not None:
            on_state(UploadState(blob_id, enc.key, enc.header, size, stat.st_mtime_ns))
    up = _Uploader(transport, blob_id, length, acked, progress, retries, retry_delay, request_bytes)
    up.add(enc.header)
    async for piece in pieces:
        up.add(await asyncio.to_thread(enc.update, piece))
        await up.flush()
    for tail in enc.finish():
        up.add(tail)
        await up.flush()
    await up.flush(final=True)
    if length is not None and up.acked != length:
        raise TransferError("the blob's length differs from its size")  # the source lied
    return Pointer(blob_id, enc.key, enc.digest, enc.size, content_type, name, thumbnail, caption)


async def download(
    transport: BlobTransport,
    pointer: Pointer,
    dest: Path | str | Callable[[bytes], Awaitable[None]],
    *,
    progress: Progress | None = None,
    retries: int = 8,
    retry_delay: float = 0.05,
) -> int:
    """Fetch the pointer's blob and write its verified plaintext to ``dest`` (a file path, or
    an async callable that takes each verified piece); returns the plaintext size.

    Every piece written was verified first; the final chunk is written only after the
    digest of the whole blob checked (SPEC.md §16.6). A file appears under its name only
    complete and verified (``<name>.part`` until then, removed if the download fails). A
    sink that received pieces before an :class:`~e2e.errors.AttachmentError` must discard
    them."""
    dec = Decryptor(pointer.key, pointer.digest, pointer.size)
    total = dec.layout.blob_size
    if isinstance(dest, str | Path):
        final = Path(dest)
        part = final.with_name(final.name + ".part")
        f = await asyncio.to_thread(open, part, "wb")

        async def write(data: bytes) -> None:
            if data:
                await asyncio.to_thread(f.write, data)

        sink: Callable[[bytes], Awaitable[None]] = write
    else:
        f, part, final, sink = None, None, None, dest
    failures = [0]
    try:
        while dec.consumed < total:
            before = dec.consumed
            try:
                async for piece in transport.read(pointer.blob_id, dec.consumed):
                    out = dec.update(piece)
                    await sink(bytes(out))
                    if progress is not None:
                        progress(dec.consumed, total)
            except TransferInterrupted:
                pass
            if dec.consumed > before:
                failures[0] = 0
                continue
            failures[0] += 1
            if failures[0] > retries:
                raise TransferInterrupted("the blob store stopped sending")
            await asyncio.sleep(min(retry_delay * 2 ** (failures[0] - 1), 2.0))
        await sink(dec.finish())
        if f is not None and part is not None and final is not None:
            await asyncio.to_thread(_commit, f, part, final)
            f = None
    except BaseException:
        if f is not None and part is not None:
            f.close()
            part.unlink(missing_ok=True)
        raise
    return pointer.size


def _commit(f: object, part: Path, final: Path) -> None:
    """Sync the part file, then give it its name (atomic on POSIX), then sync the directory."""
    import io

    assert isinstance(f, io.BufferedWriter)
    f.flush()
    os.fsync(f.fileno())
    f.close()
    os.replace(part, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
