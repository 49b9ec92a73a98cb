"""The attachment pointer: what an end-to-end message carries about an attachment
(SPEC.md §16.5).

The blob id says where the blob is; the key, digest and size say how to open and check it;
the content type, file name, optional thumbnail and caption say what it is. The pointer
travels only inside an encrypted message, so the relay and the blob store never see it.

Its encoding is one canonical CBOR map of unsigned integers and byte strings (SPEC.md §5.1,
decoded by :func:`e2e.frame.decode_map`); text travels as UTF-8 byte strings. Everything in a
received pointer is hostile: the file name in particular is checked so that saving a file
under it cannot leave the directory chosen for it or disguise its extension.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Final

from e2e.attachment.stream import DIGEST_LEN, KEY_LEN, Layout
from e2e.constants import (
    MAX_ATTACHMENT_BYTES,
    MAX_CAPTION_BYTES,
    MAX_CONTENT_TYPE_BYTES,
    MAX_FILE_NAME_BYTES,
    MAX_POINTER_BYTES,
    MAX_THUMBNAIL_BYTES,
)
from e2e.errors import DecodeError, LimitExceeded
from e2e.frame import Field, decode_map, encode_map

__all__ = [
    "Pointer",
    "POINTER_VERSION",
    "BLOB_ID_LEN",
    "check_content_type",
    "check_file_name",
    "check_caption",
]

POINTER_VERSION: Final = 1
#: A blob id is 16 bytes the blob store chose at random.
BLOB_ID_LEN: Final = 16


class _P:
    VERSION: Final = 0
    BLOB_ID: Final = 1
    KEY: Final = 2
    DIGEST: Final = 3
    SIZE: Final = 4
    CONTENT_TYPE: Final = 5
    FILE_NAME: Final = 6
    THUMBNAIL: Final = 7
    CAPTION: Final = 8


_SCHEMA: Final = {
    _P.VERSION: Field(int),
    _P.BLOB_ID: Field(bytes, BLOB_ID_LEN),
    _P.KEY: Field(bytes, KEY_LEN),
    _P.DIGEST: Field(bytes, DIGEST_LEN),
    _P.SIZE: Field(int, max_int=MAX_ATTACHMENT_BYTES),
    _P.CONTENT_TYPE: Field(bytes),
    _P.FILE_NAME: Field(bytes),
    _P.THUMBNAIL: Field(bytes, required=False),
    _P.CAPTION: Field(bytes, required=False),
}

#: RFC 6838 §4.2: type "/" subtype, each a restricted-name of at most 127 characters.
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&\-^_.+]{0,126}"
_CONTENT_TYPE: Final = re.compile(rf"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}")
#: Characters that reorder or hide text: a file name "invoice\u202efdp.exe" shows as
#: "invoiceexe.pdf". Refused in file names (allowed in captions: right-to-left text needs them).
_BIDI_CONTROLS: Final = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def _text(raw: bytes, what: str, limit: int) -> str:
    if len(raw) > limit:
        raise LimitExceeded(f"{what} longer than {limit} bytes")
    try:
        return raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise DecodeError(f"{what} is not UTF-8") from None


def check_content_type(value: object) -> str:
    """``value`` if it is a media type ``type/subtype`` (RFC 6838, no parameters)."""
    if type(value) is not str:
        raise DecodeError("a content type is text")
    if len(value) > MAX_CONTENT_TYPE_BYTES or not _CONTENT_TYPE.fullmatch(value):
        raise DecodeError("a content type is type/subtype (RFC 6838)")
    return value


def check_file_name(value: object) -> str:
    """``value`` if it is a safe bare file name: 1-255 UTF-8 bytes, no path separator, not
    "." or "..", no control, bidirectional-override or line-separator character."""
    if type(value) is not str:
        raise DecodeError("a file name is text")
    size = len(value.encode("utf-8", errors="surrogatepass"))
    if size > MAX_FILE_NAME_BYTES:
        raise LimitExceeded(f"file name longer than {MAX_FILE_NAME_BYTES} bytes")
    if not value or value in (".", ".."):
        raise DecodeError("a file name is not empty, '.' or '..'")
    for ch in value:
        if (
            ch in "/\\"
            or ch in _BIDI_CONTROLS
            or unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp")
        ):
            raise DecodeError("a file name holds a separator or a control character")
    return value


def check_caption(value: object) -> str:
    """``value`` if it is a caption: at most 4096 UTF-8 bytes, no control character but
    newline and tab."""
    if type(value) is not str:
        raise DecodeError("a caption is text")
    if len(value.encode("utf-8", errors="surrogatepass")) > MAX_CAPTION_BYTES:
        raise LimitExceeded(f"caption longer than {MAX_CAPTION_BYTES} bytes")
    for ch in value:
        if ch not in "\n\t" and unicodedata.category(ch) in ("Cc", "Cs"):
            raise DecodeError("a caption holds a control character")
    return value


@dataclass(frozen=True, slots=True)
class Pointer:
    """Everything a recipient needs to fetch, verify and show one attachment.

    Constructing one checks every field (typed errors from :mod:`e2e.errors`); ``repr``
    never shows the key.
    """

    blob_id: bytes
    key: bytes = field(repr=False)
    digest: bytes
    size: int
    content_type: str
    file_name: str = field(repr=False)
    thumbnail: bytes | None = field(default=None, repr=False)
    caption: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name, value, length in (
            ("blob id", self.blob_id, BLOB_ID_LEN),
            ("key", self.key, KEY_LEN),
            ("digest", self.digest, DIGEST_LEN),
        ):
            if type(value) is not bytes or len(value) != length:
                raise DecodeError(f"a pointer's {name} is {length} bytes")
        Layout.of(self.size)
        check_content_type(self.content_type)
        check_file_name(self.file_name)
        if self.thumbnail is not None:
            if type(self.thumbnail) is not bytes or not self.thumbnail:
                raise DecodeError("a thumbnail is non-empty bytes")
            if len(self.thumbnail) > MAX_THUMBNAIL_BYTES:
                raise LimitExceeded(f"thumbnail larger than {MAX_THUMBNAIL_BYTES} bytes")
        if self.caption is not None:
            check_caption(self.caption)

    @property
    def layout(self) -> Layout:
        """The blob's layout: its length is ``layout.blob_size``."""
        return Layout.of(self.size)

    def to_bytes(self) -> bytes:
        """The canonical encoding (SPEC.md §16.5)."""
        fields: dict[int, int | bytes] = {
            _P.VERSION: POINTER_VERSION,
            _P.BLOB_ID: self.blob_id,
            _P.KEY: self.key,
            _P.DIGEST: self.digest,
            _P.SIZE: self.size,
            _P.CONTENT_TYPE: self.content_type.encode("ascii"),
            _P.FILE_NAME: self.file_name.encode("utf-8"),
        }
        if self.thumbnail is not None:
            fields[_P.THUMBNAIL] = self.thumbnail
        if self.caption is not None:
            fields[_P.CAPTION] = self.caption.encode("utf-8")
        return encode_map(fields)

    @classmethod
    def from_bytes(cls, raw: object) -> Pointer:
        """Strictly decode a pointer; :class:`DecodeError` (or a subclass) on anything else."""
        obj = decode_map(raw, _SCHEMA, "attachment pointer", MAX_POINTER_BYTES, POINTER_VERSION)
        caption = obj.get(_P.CAPTION)
        return cls(
            blob_id=obj[_P.BLOB_ID],
            key=obj[_P.KEY],
            digest=obj[_P.DIGEST],
            size=obj[_P.SIZE],
            content_type=_text(obj[_P.CONTENT_TYPE], "content type", MAX_CONTENT_TYPE_BYTES),
            file_name=_text(obj[_P.FILE_NAME], "file name", MAX_FILE_NAME_BYTES),
            thumbnail=obj.get(_P.THUMBNAIL),
            caption=None if caption is None else _text(caption, "caption", MAX_CAPTION_BYTES),
        )
