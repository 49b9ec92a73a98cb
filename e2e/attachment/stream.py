"""The streaming attachment format: STREAM over AES-256-GCM under a committed per-attachment
key, and a chained digest of the whole ciphertext (SPEC.md §16.1-§16.4).

::

    K      = RNG(32)                                     the attachment key (in the pointer)
    R      = RNG(16)                                     salt, fresh per blob
    EK, C  = HKDF-Expand-SHA512(K, "E2E_Attachment" | R, 64) split 32 | 32   (GCM key, commitment)
    header = byte(1) | R | C                             49 bytes
    P      = plaintext | 0^(padded_size(len) - len)      (§16.2), cut into 256 KiB chunks P_i
    C_i    = AES-256-GCM(EK, nonce = u64(i) | u32(last_i), P_i, ad = header)
    blob   = header | C_0 | ... | C_{n-1}
    D_0    = SHA-256("E2E_AttachmentDigest" | header),  D_{i+1} = SHA-256(D_i | C_i)
    digest = D_n

Every chunk is authenticated on its own (its GCM tag), and its nonce names its position and
whether it is the last: a changed, moved, repeated or foreign chunk fails its tag, a blob cut
short lacks a chunk marked last, and a chunk after the last one is refused before any work
(the decryptor knows the blob's length from the pointer's size). The commitment C makes a blob
open under one key only, so a wrong key or another attachment's blob is refused at its header
before any chunk is opened. The digest is a hash of every ciphertext byte, computable without
the key (a relay checks a reported pointer against the blob it stores); chained per chunk so
that a transfer can stop and resume with 32 bytes of state.

:class:`Encryptor` and :class:`Decryptor` hold at most one chunk between calls, whatever the
attachment's size: memory stays flat when they are fed bounded pieces.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from e2e.attachment.padding import padded_size
from e2e.constants import MAX_ATTACHMENT_BYTES
from e2e.errors import (
    AttachmentError,
    AttachmentExtended,
    AttachmentKeyMismatch,
    AttachmentTruncated,
    ChunkTampered,
    DecodeError,
    DigestMismatch,
    InvalidKey,
    LimitExceeded,
    UnsupportedVersion,
)
from e2e.keys import Rng, checked_rng

__all__ = [
    "VERSION",
    "CHUNK_SIZE",
    "TAG_LEN",
    "SEALED_CHUNK",
    "KEY_LEN",
    "SALT_LEN",
    "HEADER_LEN",
    "DIGEST_LEN",
    "LABEL",
    "DIGEST_LABEL",
    "Layout",
    "Checkpoint",
    "Encryptor",
    "Decryptor",
    "BlobDigest",
    "chunk_nonce",
    "encrypt",
    "decrypt",
]

VERSION: Final = 1
#: Plaintext bytes per chunk (the last chunk may be shorter).
CHUNK_SIZE: Final = 256 * 1024
TAG_LEN: Final = 16
#: Ciphertext bytes of every chunk but the last.
SEALED_CHUNK: Final = CHUNK_SIZE + TAG_LEN
KEY_LEN: Final = 32
SALT_LEN: Final = 16
_COMMIT_LEN: Final = 32
HEADER_LEN: Final = 1 + SALT_LEN + _COMMIT_LEN
DIGEST_LEN: Final = 32
LABEL: Final = b"E2E_Attachment"
DIGEST_LABEL: Final = b"E2E_AttachmentDigest"
#: Chunks per piece that :meth:`Encryptor.finish` yields (1 MiB of plaintext).
_FINISH_CHUNKS: Final = 4
_ZEROS: Final = bytes(CHUNK_SIZE)
_LAST: Final = (0).to_bytes(4, "big"), (1).to_bytes(4, "big")


def chunk_nonce(index: int, last: bool) -> bytes:
    """The GCM nonce of chunk ``index``: u64(index) | u32(1 if it is the last chunk else 0)."""
    return index.to_bytes(8, "big") + _LAST[last]


def _digest_start(header: bytes | bytearray) -> bytes:
    return hashlib.sha256(DIGEST_LABEL + header).digest()


def _digest_step(chain: bytes, sealed: bytes | bytearray | memoryview) -> bytes:
    h = hashlib.sha256(chain)
    h.update(sealed)
    return h.digest()


def _check_key(key: object) -> bytes:
    if type(key) is not bytes or len(key) != KEY_LEN:
        raise InvalidKey("an attachment key is 32 bytes")
    return key


@dataclass(frozen=True, slots=True)
class Layout:
    """The sizes of an attachment of ``size`` plaintext bytes: its padded plaintext, its
    number of chunks and the length of its blob (what the store holds)."""

    size: int
    padded: int
    chunks: int
    blob_size: int

    @classmethod
    def of(cls, size: int) -> Layout:
        """The layout of ``size`` bytes; :class:`LimitExceeded` beyond MAX_ATTACHMENT_BYTES."""
        if type(size) is not int or size < 0:
            raise DecodeError("an attachment size is a non-negative integer")
        if size > MAX_ATTACHMENT_BYTES:
            raise LimitExceeded("attachment larger than MAX_ATTACHMENT_BYTES")
        padded = padded_size(size)
        chunks = -(-padded // CHUNK_SIZE)
        return cls(size, padded, chunks, HEADER_LEN + padded + chunks * TAG_LEN)

    def plain_len(self, index: int) -> int:
        """Padded plaintext bytes of chunk ``index``."""
        return min(CHUNK_SIZE, self.padded - index * CHUNK_SIZE)

    def content_len(self, index: int) -> int:
        """Attachment bytes (not padding) in chunk ``index``."""
        return max(0, min(CHUNK_SIZE, self.size - index * CHUNK_SIZE))

    def offset(self, index: int) -> int:
        """Where chunk ``index`` starts in the blob."""
        return HEADER_LEN + index * SEALED_CHUNK


def _keys(key: bytes, salt: bytes | bytearray) -> tuple[AESGCM, bytes]:
    """(the GCM of EK, C): HKDF-Expand-SHA512(K, LABEL | R, 64), which with L = 64 = HashLen
    is one HMAC-SHA512(K, LABEL | R | 0x01)."""
    h = hmac.HMAC(key, hashes.SHA512())
    h.update(LABEL + salt + b"\x01")
    out = h.finalize()
    return AESGCM(out[:32]), out[32:]


class Encryptor:
    """Encrypts one attachment as a stream, whatever its size.

    ``header`` first, then what each :meth:`update` returns, then every piece
    :meth:`finish` yields: that is the blob; then ``digest``, ``size`` and ``key`` go into
    the pointer. A call holds back the last (up to 256 KiB) bytes it was given, because only
    the end of the input says which chunk is last; memory stays flat when the input comes in
    bounded pieces. ``key`` is drawn fresh unless given (a fresh key per attachment, SPEC.md
    §16.1); the salt is always fresh.
    """

    __slots__ = (
        "key", "header", "_aead", "_chain", "_index", "_pending", "_size", "_closed", "_done",
    )  # fmt: skip

    def __init__(self, key: bytes | None = None, *, rng: Rng = os.urandom) -> None:
        rng = checked_rng(rng)
        self.key = _check_key(rng(KEY_LEN) if key is None else key)
        salt = rng(SALT_LEN)
        self._aead, commit = _keys(self.key, salt)
        #: The blob's first HEADER_LEN bytes: version, salt, key commitment.
        self.header = bytes((VERSION,)) + salt + commit
        self._chain = _digest_start(self.header)
        self._index = 0
        self._pending = bytearray()
        self._size = 0
        self._closed = False
        self._done: bytes | None = None

    def __repr__(self) -> str:
        return f"Encryptor(<secret>, size={self._size})"

    @classmethod
    def replay(cls, key: bytes, header: bytes) -> Encryptor:
        """The encryptor that wrote ``header`` under ``key``, from its first byte again: to
        make the same blob again from the same plaintext (an upload resumed after a restart
        re-encrypts the file and skips what the store already holds).

        The plaintext fed to it MUST be the same as the first time: other plaintext under the
        same key and header would reuse GCM nonces. :class:`AttachmentKeyMismatch` if the
        header is not under ``key``."""
        key = _check_key(key)
        if type(header) is not bytes or len(header) != HEADER_LEN or header[0] != VERSION:
            raise DecodeError("not an attachment header")
        aead, commit = _keys(key, header[1 : 1 + SALT_LEN])
        if not _hmac.compare_digest(commit, header[1 + SALT_LEN :]):
            raise AttachmentKeyMismatch("the header is not under this key")
        enc = cls.__new__(cls)
        enc.key, enc.header, enc._aead = key, header, aead
        enc._chain = _digest_start(header)
        enc._index, enc._pending, enc._size = 0, bytearray(), 0
        enc._closed, enc._done = False, None
        return enc

    @property
    def size(self) -> int:
        """Plaintext bytes given so far."""
        return self._size

    @property
    def digest(self) -> bytes:
        """The digest of the whole blob; only once :meth:`finish` has been iterated to its end."""
        if self._done is None:
            raise ValueError("the attachment is not finished")
        return self._done

    def _seal(self, plain: bytes | bytearray | memoryview, out: memoryview, last: bool) -> None:
        self._aead.encrypt_into(chunk_nonce(self._index, last), plain, self.header, out)
        h = hashlib.sha256(self._chain)
        h.update(out)
        self._chain = h.digest()
        self._index += 1

    def update(self, data: bytes | bytearray | memoryview) -> bytearray:
        """Take the next plaintext bytes; returns the ciphertext of every chunk now complete
        but the last one seen (possibly empty)."""
        if self._closed:
            raise ValueError("update after finish")
        view = memoryview(data).cast("B")
        n = len(view)
        if self._size + n > MAX_ATTACHMENT_BYTES:
            raise LimitExceeded("attachment larger than MAX_ATTACHMENT_BYTES")
        self._size += n
        pending = self._pending
        total = len(pending) + n
        count = (total - 1) // CHUNK_SIZE if total else 0  # keep 1..CHUNK_SIZE bytes back
        if count == 0:
            pending += view
            return bytearray()
        out = bytearray(count * SEALED_CHUNK)
        ov = memoryview(out)
        pos = 0
        first = 0
        if pending:
            pos = CHUNK_SIZE - len(pending)
            pending += view[:pos]
            self._seal(pending, ov[:SEALED_CHUNK], False)
            pending.clear()
            first = 1
        for k in range(first, count):
            self._seal(
                view[pos : pos + CHUNK_SIZE], ov[k * SEALED_CHUNK : (k + 1) * SEALED_CHUNK], False
            )
            pos += CHUNK_SIZE
        pending += view[pos:]
        return out

    def finish(self) -> Iterator[bytearray]:
        """The rest of the blob: the held-back bytes and the zero padding up to the size's
        bucket, sealed, the final chunk marked last; yielded 1 MiB at a time. ``digest`` is set
        once the iteration ends."""
        if self._closed:
            raise ValueError("finish called twice")
        self._closed = True
        pending = bytes(self._pending)
        self._pending.clear()
        return self._finish(Layout.of(self._size), pending)

    def _finish(self, layout: Layout, pending: bytes) -> Iterator[bytearray]:
        index = self._index
        while index < layout.chunks:
            count = min(_FINISH_CHUNKS, layout.chunks - index)
            sizes = [layout.plain_len(index + k) + TAG_LEN for k in range(count)]
            out = bytearray(sum(sizes))
            ov = memoryview(out)
            at = 0
            for k, sealed_len in enumerate(sizes):
                plain_len = sealed_len - TAG_LEN
                if pending:
                    plain: bytes | memoryview = pending + _ZEROS[: plain_len - len(pending)]
                    pending = b""
                else:
                    plain = memoryview(_ZEROS)[:plain_len]
                last = index + k == layout.chunks - 1
                self._seal(plain, ov[at : at + sealed_len], last)
                at += sealed_len
            index += count
            yield out
        self._done = self._chain


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a download can resume: the blob's header and the chain of the digest after
    ``index`` chunks (never past the last but one). Holds no secret: the key is the
    pointer's. The plaintext before it is ``Layout.content_len`` summed over those chunks."""

    header: bytes
    index: int
    chain: bytes

    @property
    def offset(self) -> int:
        """Blob bytes before the next chunk: fetch from here."""
        return HEADER_LEN + self.index * SEALED_CHUNK


class Decryptor:
    """Decrypts and verifies one attachment as its blob arrives.

    Built from the pointer's key, digest and size. :meth:`update` takes the next blob bytes
    and returns the plaintext of every chunk it completed and verified (padding checked zero
    and dropped); :meth:`finish`, after the last byte, checks the digest of the whole blob and
    only then returns the final chunk's plaintext, which was held back. The first failure
    raises an :class:`AttachmentError` (or :class:`UnsupportedVersion` for an unknown header)
    and nothing from that call or any later one is returned: every byte returned before was
    verified. The decryptor then stays failed.
    """

    __slots__ = (
        "layout", "released", "consumed", "_key", "_digest", "_aead", "_header", "_chain",
        "_before_final", "_index", "_buf", "_held", "_error", "_finished",
    )  # fmt: skip

    def __init__(self, key: bytes, digest: bytes, size: int) -> None:
        self._key = _check_key(key)
        if type(digest) is not bytes or len(digest) != DIGEST_LEN:
            raise DecodeError("an attachment digest is 32 bytes")
        self._digest = digest
        self.layout = Layout.of(size)
        #: Plaintext bytes returned so far.
        self.released = 0
        #: Blob bytes taken so far.
        self.consumed = 0
        self._aead: AESGCM | None = None
        self._header = b""
        self._chain = b""
        self._before_final = b""
        self._index = 0
        self._buf = bytearray()
        self._held = b""
        self._error: Exception | None = None
        self._finished = False

    def __repr__(self) -> str:
        return f"Decryptor(<secret>, size={self.layout.size}, consumed={self.consumed})"

    @classmethod
    def resume(cls, key: bytes, digest: bytes, size: int, checkpoint: Checkpoint) -> Decryptor:
        """A decryptor that continues at ``checkpoint`` (take the blob from its ``offset``).

        The checkpoint's header is checked against the key again; a checkpoint past the last
        but one chunk or of the wrong shape is a :class:`DecodeError`."""
        dec = cls(key, digest, size)
        index = checkpoint.index
        if (
            type(index) is not int
            or not 0 <= index < dec.layout.chunks
            or type(checkpoint.chain) is not bytes
            or len(checkpoint.chain) != DIGEST_LEN
        ):
            raise DecodeError("a checkpoint outside this attachment")
        dec.update(checkpoint.header)
        if dec.consumed != HEADER_LEN:
            raise DecodeError("a checkpoint's header is 49 bytes")
        dec._index = index
        dec._chain = checkpoint.chain
        dec.consumed = checkpoint.offset
        dec.released = min(dec.layout.size, index * CHUNK_SIZE)
        return dec

    def checkpoint(self) -> Checkpoint:
        """The state after the last chunk boundary crossed (the final chunk excluded); blob
        bytes taken since then are not in it and must be fetched again."""
        if self._aead is None:
            raise ValueError("no header yet")
        if self._index == self.layout.chunks:
            return Checkpoint(self._header, self._index - 1, self._before_final)
        return Checkpoint(self._header, self._index, self._chain)

    def _fail(self, error: Exception) -> Exception:
        self._error = error
        return error

    def update(self, data: bytes | bytearray | memoryview) -> bytearray:
        """The verified plaintext that the next blob bytes ``data`` complete (possibly empty)."""
        if self._error is not None:
            raise self._error
        if self._finished:
            raise ValueError("update after finish")
        view = memoryview(data).cast("B")
        room = self.layout.blob_size - self.consumed
        try:
            out = self._update(view[:room])
        except (AttachmentError, UnsupportedVersion) as exc:
            raise self._fail(exc) from None
        if len(view) > room:
            raise self._fail(AttachmentExtended("bytes after the final chunk"))
        self.released += len(out)
        return out

    def finish(self) -> bytes:
        """After the whole blob: check the digest, then return the final chunk's plaintext."""
        if self._error is not None:
            raise self._error
        if self._finished:
            raise ValueError("finish called twice")
        if self.consumed < self.layout.blob_size:
            raise self._fail(AttachmentTruncated("the blob ended early", chunk=self._index))
        if not _hmac.compare_digest(self._chain, self._digest):
            raise self._fail(DigestMismatch("the blob's digest differs from the pointer's"))
        self._finished = True
        out, self._held = self._held, b""
        self.released += len(out)
        return out

    def _open_header(self, header: bytes) -> None:
        if header[0] != VERSION:
            raise UnsupportedVersion(f"attachment version {header[0]} is not supported")
        aead, commit = _keys(self._key, header[1 : 1 + SALT_LEN])
        if not _hmac.compare_digest(commit, header[1 + SALT_LEN :]):
            raise AttachmentKeyMismatch("the blob is not under this key")
        self._aead = aead
        self._header = header
        self._chain = _digest_start(header)

    def _update(self, view: memoryview) -> bytearray:
        buf = self._buf
        if self._aead is None:
            take = min(HEADER_LEN - len(buf), len(view))
            buf += view[:take]
            self.consumed += take
            view = view[take:]
            if len(buf) < HEADER_LEN:
                return bytearray()
            self._open_header(bytes(buf))
            buf.clear()
        pos = 0
        layout = self.layout
        # The sealed chunks this call completes: a buffered partial one first, then whole
        # chunks straight from the input; the rest is buffered.
        sealed: list[bytes | memoryview] = []
        index = self._index
        avail = len(view) - pos
        if buf:
            need = layout.plain_len(index) + TAG_LEN - len(buf)
            if avail < need:
                buf += view[pos:]
                self.consumed += avail
                return bytearray()
            buf += view[pos : pos + need]
            sealed.append(bytes(buf))
            buf.clear()
            pos += need
            index += 1
        while index < layout.chunks:
            size = layout.plain_len(index) + TAG_LEN
            if len(view) - pos < size:
                break
            sealed.append(view[pos : pos + size])
            pos += size
            index += 1
        buf += view[pos:]
        first = self._index
        final = layout.chunks - 1
        content = sum(
            layout.content_len(first + k) for k in range(len(sealed)) if first + k < final
        )
        out = bytearray(content)
        ov = memoryview(out)
        at = 0
        aead = self._aead
        assert aead is not None
        for k, chunk in enumerate(sealed):
            i = first + k
            plain_len = len(chunk) - TAG_LEN
            keep = layout.content_len(i)
            # a whole chunk of content decrypts straight into the output; the final chunk and
            # padding go through a scratch buffer
            direct = keep == plain_len and i < final
            scratch = bytearray(0 if direct else plain_len)
            dest = ov[at : at + plain_len] if direct else scratch
            try:
                aead.decrypt_into(chunk_nonce(i, i == final), chunk, self._header, dest)
            except InvalidTag:
                out[:] = bytes(len(out))  # never keep unverified plaintext around
                raise ChunkTampered("a chunk failed authentication", chunk=i) from None
            if not direct:
                if scratch.count(0, keep) != plain_len - keep:
                    raise AttachmentError("padding that is not zero", chunk=i)
                if i == final:
                    self._held = bytes(scratch[:keep])
                    self._before_final = self._chain
                else:
                    ov[at : at + keep] = scratch[:keep]
            at += keep if i < final else 0
            self._chain = _digest_step(self._chain, chunk)
            self._index = i + 1
        self.consumed += len(view)
        return out


class BlobDigest:
    """The digest of a blob from its bytes alone, without the key: what a relay compares with
    a reported pointer's digest. Every chunk but the last has SEALED_CHUNK bytes, so the
    chunk boundaries follow from the length."""

    __slots__ = ("_buf", "_chain", "_size")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._chain = b""
        self._size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self._size += len(view)
        buf = self._buf
        if not self._chain:
            take = min(HEADER_LEN - len(buf), len(view))
            buf += view[:take]
            view = view[take:]
            if len(buf) < HEADER_LEN:
                return
            self._chain = _digest_start(buf)
            buf.clear()
        # keep the last (possibly whole) chunk back: it may be the final one
        if buf:
            take = min(SEALED_CHUNK - len(buf), len(view))
            buf += view[:take]
            view = view[take:]
            if not view:
                return
            self._chain = _digest_step(self._chain, buf)
            buf.clear()
        pos = 0
        while len(view) - pos > SEALED_CHUNK:
            self._chain = _digest_step(self._chain, view[pos : pos + SEALED_CHUNK])
            pos += SEALED_CHUNK
        buf += view[pos:]

    def finish(self) -> tuple[bytes, int]:
        """(digest, blob length); :class:`AttachmentTruncated` if it is shorter than a header
        and one chunk."""
        if not self._chain or len(self._buf) <= TAG_LEN:
            raise AttachmentTruncated("not a whole blob")
        return _digest_step(self._chain, self._buf), self._size


def encrypt(data: bytes, *, rng: Rng = os.urandom) -> tuple[bytes, bytes, bytes]:
    """(blob, key, digest) of ``data`` under a fresh key, in memory: for small attachments
    and tests (a file or a stream goes through :class:`Encryptor` piece by piece)."""
    enc = Encryptor(rng=rng)
    parts: list[bytes | bytearray] = [enc.header, enc.update(data)]
    parts.extend(enc.finish())
    return b"".join(parts), enc.key, enc.digest


def decrypt(blob: bytes, key: bytes, digest: bytes, size: int) -> bytes:
    """The plaintext of a whole blob, verified (:class:`Decryptor` in one call)."""
    dec = Decryptor(key, digest, size)
    head = dec.update(blob)
    return bytes(head) + dec.finish()
