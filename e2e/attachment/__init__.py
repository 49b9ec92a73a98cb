"""Attachments: streaming end-to-end encrypted media (SPEC.md §16).

An attachment is encrypted on the device under a fresh key (:mod:`e2e.attachment.stream`),
padded to a size bucket (:mod:`e2e.attachment.padding`); only its ciphertext, the blob, goes
to a blob store. The :class:`Pointer` (:mod:`e2e.attachment.pointer`: blob id, key, digest,
size, content type, file name, optional thumbnail and caption) travels inside a normal
end-to-end message, and the recipient verifies every chunk before releasing its plaintext.
:mod:`e2e.attachment.transfer` moves blobs to and from a blob store, resumably.
"""

from __future__ import annotations

from e2e.attachment.padding import MIN_PADDED, padded_size
from e2e.attachment.pointer import BLOB_ID_LEN, POINTER_VERSION, Pointer
from e2e.attachment.stream import (
    CHUNK_SIZE,
    HEADER_LEN,
    BlobDigest,
    Checkpoint,
    Decryptor,
    Encryptor,
    Layout,
    decrypt,
    encrypt,
)
from e2e.attachment.transfer import BlobTransport, UploadState, download, upload

__all__ = [
    "Pointer",
    "Encryptor",
    "Decryptor",
    "Checkpoint",
    "BlobDigest",
    "Layout",
    "encrypt",
    "decrypt",
    "padded_size",
    "MIN_PADDED",
    "CHUNK_SIZE",
    "HEADER_LEN",
    "BLOB_ID_LEN",
    "POINTER_VERSION",
    "BlobTransport",
    "UploadState",
    "upload",
    "download",
]
