"""Every protocol limit in one place. SPEC.md §7 quotes these values."""

from __future__ import annotations

from typing import Final

#: Frame format version written first in every frame.
FRAME_VERSION: Final = 1

#: Largest encoded frame accepted; checked before any decoding.
MAX_FRAME_BYTES: Final = 272 * 1024
#: Largest plaintext encrypt accepts.
MAX_PLAINTEXT_BYTES: Final = 256 * 1024
#: Largest encoded prekey bundle accepted.
MAX_BUNDLE_BYTES: Final = 8 * 1024
#: Largest serialized session state accepted.
MAX_STATE_BYTES: Final = 1024 * 1024

#: Most message keys one received frame may make us derive (skip), over both chains of a DH
#: ratchet step: the sealed header authenticates the whole frame before any key is derived,
#: so only the real peer can cost us this (SPEC.md §4.5).
MAX_SKIP: Final = 1000
#: A skipped key of the current receiving chain is dropped once it is more than this many
#: messages behind the chain's next expected message (its "age"; SPEC.md §4.6).
MAX_SKIPPED_AGE: Final = 2000
#: Most skipped message keys stored per session; the oldest are evicted first.
MAX_STORED_SKIPPED: Final = 2000
#: Most receiving chains (remote ratchet keys) whose skipped keys are kept.
MAX_RECEIVER_CHAINS: Final = 5
#: Largest message counter; a chain longer than this must ratchet first.
MAX_COUNTER: Final = 2**32 - 1

#: Largest attachment plaintext the format carries (SPEC.md §16); a relay's blob store
#: usually caps uploads lower.
MAX_ATTACHMENT_BYTES: Final = 2**32 - 1
#: Largest encoded attachment pointer accepted; checked before decoding it.
MAX_POINTER_BYTES: Final = 72 * 1024
#: Largest inline thumbnail in a pointer.
MAX_THUMBNAIL_BYTES: Final = 64 * 1024
#: Largest caption in a pointer (UTF-8 bytes).
MAX_CAPTION_BYTES: Final = 4096
#: Largest file name in a pointer (UTF-8 bytes).
MAX_FILE_NAME_BYTES: Final = 255
#: Largest content type in a pointer (``type/subtype``, RFC 6838 §4.2: 127 + 1 + 127).
MAX_CONTENT_TYPE_BYTES: Final = 255
