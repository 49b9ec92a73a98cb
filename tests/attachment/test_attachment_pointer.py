"""The attachment pointer (SPEC.md §16.5): round trips, and hostile encodings and field
values refused with typed errors, never a crash or a name that escapes its directory."""

from __future__ import annotations

import os
import random
from pathlib import Path

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2e import errors
from e2e.attachment import Pointer
from e2e.attachment.pointer import check_file_name
from e2e.constants import MAX_ATTACHMENT_BYTES


def pointer(**changes: object) -> Pointer:
    fields: dict[str, object] = dict(
        blob_id=os.urandom(16), key=os.urandom(32), digest=os.urandom(32), size=1234,
        content_type="application/pdf", file_name="invoice-0042.pdf",
    )  # fmt: skip
    fields.update(changes)
    return Pointer(**fields)  # type: ignore[arg-type]


_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
names = st.text(
    st.characters(
        blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="/\\" + _BIDI
    ),
    min_size=1,
    max_size=60,
).filter(lambda s: s not in (".", ".."))


@given(
    name=names,
    size=st.integers(0, MAX_ATTACHMENT_BYTES),
    thumbnail=st.none() | st.binary(min_size=1, max_size=300),
    caption=st.none() | st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=100),
)
def test_round_trip(name: str, size: int, thumbnail: bytes | None, caption: str | None) -> None:
    p = pointer(file_name=name, size=size, thumbnail=thumbnail, caption=caption)
    raw = p.to_bytes()
    assert Pointer.from_bytes(raw) == p
    assert Pointer.from_bytes(raw).to_bytes() == raw


@given(st.binary(max_size=400))
def test_random_bytes_are_typed_errors(raw: bytes) -> None:
    try:
        Pointer.from_bytes(raw)
    except errors.DecodeError:
        pass


def test_every_mutation_of_an_encoding_is_a_typed_error_or_a_valid_pointer() -> None:
    raw = pointer(thumbnail=b"\xff\xd8jpeg", caption="Rechnung").to_bytes()
    rnd = random.Random(23)
    for _ in range(3000):
        b = bytearray(raw)
        for _ in range(rnd.randint(1, 3)):
            op = rnd.randrange(3)
            at = rnd.randrange(len(b))
            if op == 0:
                b[at] = rnd.randrange(256)
            elif op == 1:
                del b[at]
            else:
                b.insert(at, rnd.randrange(256))
        try:
            p = Pointer.from_bytes(bytes(b))
        except errors.DecodeError:
            continue
        assert p.to_bytes() == bytes(b)  # whatever was accepted is canonical
        check_file_name(p.file_name)


@pytest.mark.parametrize(
    "name",
    ["../secret", "..", ".", "a/b", "a\\b", "C:\\x", "a\x00b", "a\nb", "\x7f", "a\u0085b",
     "invoice\u202efdp.exe", "\u2066x\u2069.pdf", "a\u2028b", "x" * 256, ""],
)  # fmt: skip
def test_unsafe_file_names_are_refused(name: str) -> None:
    with pytest.raises(errors.DecodeError):
        pointer(file_name=name)
    with pytest.raises(errors.DecodeError):  # nor accepted off the wire
        Pointer.from_bytes(_with_name(name))


def _with_name(name: str) -> bytes:
    p = pointer()
    return cbor2.dumps(
        {0: 1, 1: p.blob_id, 2: p.key, 3: p.digest, 4: p.size, 5: b"application/pdf",
         6: name.encode("utf-8", "surrogatepass")}
    )  # fmt: skip


def test_safe_names_stay_inside_the_directory(tmp_path: Path) -> None:
    """What the rule is for: any accepted name joined to a directory names a file in it."""
    rnd = random.Random(5)
    alphabet = "ab./\\:\x00 ..\u202e~é中"
    for _ in range(5000):
        name = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 6)))
        try:
            check_file_name(name)
        except errors.DecodeError:
            continue
        assert (tmp_path / name).resolve().parent == tmp_path.resolve(), name


@pytest.mark.parametrize(
    "changes",
    [dict(blob_id=b"x" * 15), dict(key=b"k" * 33), dict(digest="00" * 32), dict(size=-1),
     dict(size=True), dict(content_type="pdf"), dict(content_type="text/plain; charset=x"),
     dict(thumbnail=b""), dict(caption="a\x07b"), dict(file_name=b"bytes.pdf")],
)  # fmt: skip
def test_bad_field_values_are_typed_errors(changes: dict[str, object]) -> None:
    with pytest.raises(errors.DecodeError):
        pointer(**changes)


def test_limits() -> None:
    with pytest.raises(errors.LimitExceeded):
        pointer(size=MAX_ATTACHMENT_BYTES + 1)
    with pytest.raises(errors.LimitExceeded):
        pointer(thumbnail=bytes(65537))
    with pytest.raises(errors.LimitExceeded):
        pointer(caption="é" * 2049)  # 4098 bytes
    pointer(thumbnail=bytes(65536), caption="é" * 2048)  # at the limits
    with pytest.raises(errors.LimitExceeded):
        Pointer.from_bytes(b"\xa7" + bytes(80_000))


def test_repr_hides_the_key_and_the_plaintext() -> None:
    p = pointer(thumbnail=b"thumbnail-bytes", caption="a caption")
    text = repr(p)
    assert p.key.hex() not in text and repr(p.key) not in text
    assert "thumbnail-bytes" not in text and "a caption" not in text
    assert p.file_name not in text and f"size={p.size}" in text
