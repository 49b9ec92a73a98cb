"""The streaming attachment format (SPEC.md §16.1-§16.4, §16.6): round trips in any piece
sizes, every tamper class refused with its typed error and no plaintext past the bad chunk,
resuming from a checkpoint, the key-less digest, and memory that stays flat.

The known answers (bytes, digests, what a receiver releases) are in vectors/attachment.json,
made by the independent reference; these tests add the properties over many sizes and
feeding patterns.
"""

from __future__ import annotations

import os
import random
import tracemalloc
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2e import errors
from e2e.attachment import (
    CHUNK_SIZE,
    HEADER_LEN,
    BlobDigest,
    Checkpoint,
    Decryptor,
    Encryptor,
    Layout,
    decrypt,
    encrypt,
    padded_size,
)
from e2e.attachment.stream import SEALED_CHUNK
from e2e.constants import MAX_ATTACHMENT_BYTES
from e2e.vectors.protocol import DRng

SIZES = [0, 1, 511, 512, 513, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 17]


def pieces(data: bytes, rnd: random.Random, largest: int = 3 * CHUNK_SIZE) -> Iterable[bytes]:
    """``data`` cut at random places (pieces of 0 to ``largest`` bytes, empty ones included)."""
    at = 0
    while at < len(data):
        n = rnd.randint(0, largest)
        yield data[at : at + n]
        at += n


def seal(plain: bytes, rnd: random.Random, seed: bytes = b"k") -> tuple[bytes, bytes, bytes]:
    enc = Encryptor(rng=DRng(seed))
    out = [enc.header] + [enc.update(p) for p in pieces(plain, rnd)] + list(enc.finish())
    return b"".join(out), enc.key, enc.digest


def read(
    blob: bytes, key: bytes, digest: bytes, size: int, cuts: Iterable[bytes]
) -> tuple[bytes, Exception | None]:
    """Feed ``cuts`` (pieces of the blob) to a Decryptor; (released, error or None)."""
    out: list[bytes] = []
    try:
        dec = Decryptor(key, digest, size)
        for piece in cuts:
            out.append(bytes(dec.update(piece)))
        out.append(dec.finish())
    except errors.E2EError as exc:
        return b"".join(out), exc
    return b"".join(out), None


def by_chunk(blob: bytes, size: int) -> list[bytes]:
    """The blob as the header, then one chunk per piece (by the layout of ``size``), then any
    excess."""
    layout = Layout.of(size)
    cuts = [blob[:HEADER_LEN]]
    at = HEADER_LEN
    for i in range(layout.chunks):
        n = layout.plain_len(i) + 16
        cuts.append(blob[at : at + n])
        at += n
    if at < len(blob):
        cuts.append(blob[at:])
    return cuts


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_in_any_pieces(size: int) -> None:
    rnd = random.Random(size)
    plain = os.urandom(size)
    blob, key, digest = seal(plain, rnd)
    assert len(blob) == Layout.of(size).blob_size
    again, _, _ = seal(plain, random.Random(size + 1))  # same RNG, other piece sizes
    assert again == blob
    for _ in range(3):
        assert read(blob, key, digest, size, pieces(blob, rnd)) == (plain, None)
    assert decrypt(blob, key, digest, size) == plain


@given(st.binary(max_size=3000), st.integers(0, 2**32 - 1))
def test_round_trip_property(plain: bytes, seed: int) -> None:
    rnd = random.Random(seed)
    blob, key, digest = seal(plain, rnd, seed.to_bytes(4, "big"))
    assert read(blob, key, digest, len(plain), pieces(blob, rnd, 200)) == (plain, None)


def test_fresh_key_and_salt_per_attachment() -> None:
    plain = b"same photo"
    (b1, k1, d1), (b2, k2, d2) = encrypt(plain), encrypt(plain)
    assert k1 != k2 and b1[1:17] != b2[1:17] and d1 != d2 and b1 != b2


def test_a_reused_key_still_gets_a_fresh_gcm_key() -> None:
    """A key given twice (a caller's mistake) still seals under different GCM keys, because
    the salt enters the key derivation: no chunk nonce repeats under one GCM key."""
    key = os.urandom(32)
    e1, e2 = Encryptor(key), Encryptor(key)
    c1 = e1.update(bytes(CHUNK_SIZE + 1))
    c2 = e2.update(bytes(CHUNK_SIZE + 1))
    assert e1.header[:17] != e2.header[:17] and c1 != c2


# --- tamper classes ---------------------------------------------------------------------


PLAIN_SIZE = 3 * CHUNK_SIZE + 1000  # four chunks, the last with padding


@pytest.fixture(scope="module")
def sealed() -> tuple[bytes, bytes, bytes, bytes]:
    plain = os.urandom(PLAIN_SIZE)
    blob, key, digest = encrypt(plain)
    return plain, blob, key, digest


def _chunks(blob: bytes) -> list[bytes]:
    return [blob[i : i + SEALED_CHUNK] for i in range(HEADER_LEN, len(blob), SEALED_CHUNK)]


def _join(blob: bytes, chunks: list[bytes]) -> bytes:
    return blob[:HEADER_LEN] + b"".join(chunks)


def _flip(blob: bytes, at: int) -> bytes:
    b = bytearray(blob)
    b[at] ^= 0x01
    return bytes(b)


Tampered = dict[str, tuple[bytes, bytes, bytes, type[Exception], int]]


def tampered(
    plain: bytes, blob: bytes, key: bytes, digest: bytes
) -> tuple[Tampered, dict[str, bytes]]:
    """Each tamper class: (blob, key, digest, error class, chunks released before it); and
    the plaintext released for the classes whose released chunks are another blob's."""
    c = _chunks(blob)
    other_plain = os.urandom(PLAIN_SIZE)
    other_blob, other_key, other_digest = encrypt(other_plain)
    # a key holder's own second blob (another salt, all chunks valid under the key)
    same_key = Encryptor(key)
    mine_plain = os.urandom(PLAIN_SIZE)
    mine = [same_key.header, same_key.update(mine_plain), *same_key.finish()]
    bad_key = bytes([key[0] ^ 1]) + key[1:]
    bad_digest = digest[:-1] + bytes([digest[-1] ^ 1])
    cases: Tampered = {
        "bit flip in chunk 2": (_flip(blob, HEADER_LEN + 2 * SEALED_CHUNK + 7), key, digest,
                                errors.ChunkTampered, 2),
        "bit flip in a tag": (_flip(blob, HEADER_LEN + SEALED_CHUNK - 1), key, digest,
                              errors.ChunkTampered, 0),
        "bit flip in the final chunk": (_flip(blob, len(blob) - 20), key, digest,
                                        errors.ChunkTampered, 3),
        "bit flip in the salt": (_flip(blob, 3), key, digest, errors.AttachmentKeyMismatch, 0),
        "bit flip in the commitment": (_flip(blob, 30), key, digest,
                                       errors.AttachmentKeyMismatch, 0),
        "version byte": (b"\x02" + blob[1:], key, digest, errors.UnsupportedVersion, 0),
        "truncated mid-chunk": (blob[: HEADER_LEN + SEALED_CHUNK + 5], key, digest,
                                errors.AttachmentTruncated, 1),
        "truncated at a chunk boundary": (_join(blob, c[:3]), key, digest,
                                          errors.AttachmentTruncated, 3),
        "truncated to the header": (blob[:HEADER_LEN], key, digest, errors.AttachmentTruncated, 0),
        "reordered chunks": (_join(blob, [c[0], c[2], c[1], c[3]]), key, digest,
                             errors.ChunkTampered, 1),
        "duplicated chunk": (_join(blob, [c[0], c[1], c[1], c[2], c[3]]), key, digest,
                             errors.ChunkTampered, 2),
        "duplicated chunk in place of another": (_join(blob, [c[0], c[0], c[2], c[3]]), key,
                                                 digest, errors.ChunkTampered, 1),
        "extended by a chunk": (blob + c[1], key, digest, errors.AttachmentExtended, 3),
        "extended by a byte": (blob + b"\x00", key, digest, errors.AttachmentExtended, 3),
        "chunk from another blob": (_join(blob, [c[0], _chunks(other_blob)[1], c[2], c[3]]),
                                    key, digest, errors.ChunkTampered, 1),
        "wrong key": (blob, bad_key, digest, errors.AttachmentKeyMismatch, 0),
        "wrong digest": (blob, key, bad_digest, errors.DigestMismatch, 3),
        "swapped blob": (other_blob, key, digest, errors.AttachmentKeyMismatch, 0),
        "swapped blob with its own key": (other_blob, other_key, digest, errors.DigestMismatch, 3),
        "a key holder's second blob": (b"".join(mine), key, digest, errors.DigestMismatch, 3),
        "wrong digest for a pointer of the other blob": (blob, key, other_digest,
                                                         errors.DigestMismatch, 3),
    }  # fmt: skip
    # Every chunk of these is authentic under the key the pointer names: they are what a
    # sender (who holds the key) uploaded, and only the digest shows the blob is not the one
    # the pointer names; the final chunk is still withheld.
    return cases, {
        "swapped blob with its own key": other_plain,
        "a key holder's second blob": mine_plain,
    }


def test_every_tamper_class_is_refused_with_nothing_past_the_bad_chunk(
    sealed: tuple[bytes, bytes, bytes, bytes],
) -> None:
    plain, blob, key, digest = sealed
    cases, sources = tampered(plain, blob, key, digest)
    assert len(cases) == 21
    for name, (bad, k, d, error, good_chunks) in cases.items():
        source = sources.get(name, plain)
        # one chunk per call: exactly the chunks before the bad one are released
        released, exc = read(bad, k, d, PLAIN_SIZE, by_chunk(bad, PLAIN_SIZE))
        assert type(exc) is error, (name, exc)
        assert isinstance(exc, errors.E2EError)
        assert released == source[: good_chunks * CHUNK_SIZE], name
        # in random pieces: never more, and always a prefix of the real plaintext
        rnd = random.Random(name)
        for _ in range(5):
            released, exc = read(bad, k, d, PLAIN_SIZE, pieces(bad, rnd))
            assert type(exc) is error, (name, exc)
            assert len(released) <= good_chunks * CHUNK_SIZE, name
            assert released == source[: len(released)], name


@given(st.integers(0, 10**9), st.integers(0, 7))
def test_any_single_bit_flip_is_refused(position: int, bit: int) -> None:
    plain = bytes(range(256)) * 9  # 2,304 bytes: one chunk
    blob, key, digest = encrypt(plain)
    b = bytearray(blob)
    at = position % len(b)
    b[at] ^= 1 << bit
    released, exc = read(bytes(b), key, digest, len(plain), [bytes(b)])
    assert isinstance(exc, errors.AttachmentError | errors.UnsupportedVersion)
    assert released == b""


def test_a_failed_decryptor_stays_failed(sealed: tuple[bytes, bytes, bytes, bytes]) -> None:
    plain, blob, key, digest = sealed
    bad = _flip(blob, HEADER_LEN + 10)
    dec = Decryptor(key, digest, PLAIN_SIZE)
    assert dec.update(bad[:HEADER_LEN]) == b""
    with pytest.raises(errors.ChunkTampered) as first:
        dec.update(bad[HEADER_LEN:])
    assert first.value.chunk == 0
    for call in (lambda: dec.update(blob[HEADER_LEN:]), dec.finish):
        with pytest.raises(errors.ChunkTampered):
            call()
    assert dec.released == 0


def test_padding_that_is_not_zero_is_refused() -> None:
    """Padding is checked: a sender cannot hide bytes after the size the pointer states."""
    plain = os.urandom(999) + b"\x01"  # the byte past the stated size is not a zero
    blob, key, digest = encrypt(plain)
    released, exc = read(blob, key, digest, 999, by_chunk(blob, 999))  # pointer says 999
    assert type(exc) is errors.AttachmentError and released == b""


def test_a_pointer_size_that_does_not_match_the_blob() -> None:
    plain = os.urandom(5 * CHUNK_SIZE)
    blob, key, digest = encrypt(plain)
    for size in (4 * CHUNK_SIZE, 6 * CHUNK_SIZE, 5 * CHUNK_SIZE + 1, 5 * CHUNK_SIZE - 1):
        released, exc = read(blob, key, digest, size, by_chunk(blob, size))
        assert isinstance(exc, errors.AttachmentError), size
        assert released == plain[: len(released)]


def test_bad_pointer_values_are_typed_errors() -> None:
    with pytest.raises(errors.InvalidKey):
        Decryptor(b"short", bytes(32), 1)
    with pytest.raises(errors.DecodeError):
        Decryptor(bytes(32), b"short", 1)
    with pytest.raises(errors.DecodeError):
        Decryptor(bytes(32), bytes(32), -1)
    with pytest.raises(errors.LimitExceeded):
        Decryptor(bytes(32), bytes(32), MAX_ATTACHMENT_BYTES + 1)
    with pytest.raises(errors.InvalidKey):
        Encryptor(b"\x00" * 31)


def test_the_size_limit_is_checked_before_encrypting() -> None:
    enc = Encryptor()
    enc.update(b"x")
    enc._size = MAX_ATTACHMENT_BYTES - 1  # as after 4 GiB of updates
    with pytest.raises(errors.LimitExceeded):
        enc.update(b"yy")
    enc.update(b"y")  # exactly the limit is fine


def test_an_injected_random_source_is_refused_outside_tests() -> None:
    from e2e import _testing

    with _testing.injected_rng(False), pytest.raises(errors.RandomSourceRefused):
        Encryptor(rng=DRng(b"x"))


def test_no_key_in_reprs() -> None:
    enc = Encryptor()
    enc.update(b"x")
    list(enc.finish())
    dec = Decryptor(enc.key, enc.digest, 1)
    for text in (repr(enc), repr(dec)):
        assert enc.key.hex() not in text and "secret" in text


# --- resuming and the key-less digest -------------------------------------------------------


def test_resume_from_a_checkpoint(sealed: tuple[bytes, bytes, bytes, bytes]) -> None:
    plain, blob, key, digest = sealed
    for cut in (HEADER_LEN, HEADER_LEN + 5, HEADER_LEN + 2 * SEALED_CHUNK + 3, len(blob) - 1):
        dec = Decryptor(key, digest, PLAIN_SIZE)
        first = bytes(dec.update(blob[:cut]))
        point = dec.checkpoint()
        assert point.offset <= cut
        assert first[: len(first)] == plain[: len(first)]
        again = Decryptor.resume(key, digest, PLAIN_SIZE, point)
        assert again.released == min(PLAIN_SIZE, point.index * CHUNK_SIZE)
        rest = bytes(again.update(blob[point.offset :])) + again.finish()
        assert plain[: again.released - len(rest)] + rest == plain


def test_a_checkpoint_is_checked(sealed: tuple[bytes, bytes, bytes, bytes]) -> None:
    plain, blob, key, digest = sealed
    dec = Decryptor(key, digest, PLAIN_SIZE)
    dec.update(blob[: HEADER_LEN + SEALED_CHUNK])
    point = dec.checkpoint()
    with pytest.raises(errors.AttachmentKeyMismatch):
        Decryptor.resume(bytes(32), digest, PLAIN_SIZE, point)
    with pytest.raises(errors.DecodeError):
        Decryptor.resume(key, digest, PLAIN_SIZE, Checkpoint(point.header, 99, point.chain))
    forged = Decryptor.resume(key, digest, PLAIN_SIZE, Checkpoint(point.header, 1, bytes(32)))
    forged.update(blob[point.offset :])
    with pytest.raises(errors.DigestMismatch):
        forged.finish()


@pytest.mark.parametrize("size", SIZES)
def test_the_digest_without_the_key(size: int) -> None:
    rnd = random.Random(size)
    blob, _, digest = seal(os.urandom(size), rnd)
    for _ in range(3):
        d = BlobDigest()
        for p in pieces(blob, rnd):
            d.update(p)
        assert d.finish() == (digest, len(blob))
    d = BlobDigest()
    d.update(blob[:HEADER_LEN + 16])
    with pytest.raises(errors.AttachmentTruncated):
        d.finish()


# --- padding and memory ---------------------------------------------------------------------


def test_padding_buckets() -> None:
    previous = 0
    buckets = set()
    for size in list(range(0, 5000)) + [random.Random(7).randrange(2**32) for _ in range(2000)]:
        p = padded_size(size)
        assert p >= max(size, 512)
        assert p - max(size, 512) < max(size, 512) / 16  # under 6.25 % over the floor
        buckets.add(p)
        if size < 5000:
            assert p >= previous
            previous = p
    # sizes 512..4999 fall into few buckets: the length hides the exact size
    assert len({padded_size(n) for n in range(512, 5000)}) < 200


def test_memory_stays_flat() -> None:
    """64 MiB through an encryptor and a decryptor in 1 MiB pieces allocates at most a few
    pieces' worth at a time (the 1 GiB case is benches/bench_attachment.py)."""
    piece = os.urandom(1 << 20)
    tracemalloc.start()
    try:
        enc = Encryptor()
        dec = Decryptor(enc.key, bytes(32), 64 << 20)  # digest checked below by hand
        dec.update(enc.header)
        for _ in range(64):
            dec.update(enc.update(piece))
        for tail in enc.finish():
            dec.update(tail)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 << 20, peak
    with pytest.raises(errors.DigestMismatch):
        dec.finish()


def test_replay_makes_the_same_blob_again() -> None:
    plain = os.urandom(2 * CHUNK_SIZE + 5)
    enc = Encryptor()
    blob = enc.header + enc.update(plain) + b"".join(enc.finish())
    again = Encryptor.replay(enc.key, enc.header)
    assert again.header + again.update(plain) + b"".join(again.finish()) == blob
    assert again.digest == enc.digest
    with pytest.raises(errors.AttachmentKeyMismatch):
        Encryptor.replay(os.urandom(32), enc.header)
    with pytest.raises(errors.DecodeError):
        Encryptor.replay(enc.key, enc.header[:-1])
