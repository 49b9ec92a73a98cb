"""libsignal's wire protocol, byte for byte (SPEC.md §15).

Speaks to the official libsignal client library: version 4 (PQXDH with Kyber-1024) by
default, version 3 (X3DH) as an opt-in legacy mode; protobuf SignalMessage and
PreKeySignalMessage with libsignal's truncated MAC; keys serialized with type bytes 0x05
(Curve25519) and 0x08 (Kyber-1024); and libsignal's Sparse Post-Quantum Ratchet (SPQR,
:mod:`e2e.libsignal.spqr`), required by default as libsignal 0.92 and later require it
(``spqr_min_version=0`` accepts peers without it, libsignal 0.90 and older).
"""

from __future__ import annotations

from e2e.libsignal.bundle import LibsignalBundle, LibsignalPrekeys
from e2e.libsignal.session import (
    MAX_JUMP,
    Decrypted,
    PrekeysUsed,
    SessionRecord,
    SessionState,
    initiate,
)
from e2e.libsignal.wire import PREKEY_TYPE, VERSION_PQXDH, VERSION_X3DH, WHISPER_TYPE

__all__ = [
    "LibsignalBundle",
    "LibsignalPrekeys",
    "SessionRecord",
    "SessionState",
    "Decrypted",
    "PrekeysUsed",
    "initiate",
    "MAX_JUMP",
    "PREKEY_TYPE",
    "WHISPER_TYPE",
    "VERSION_PQXDH",
    "VERSION_X3DH",
]
