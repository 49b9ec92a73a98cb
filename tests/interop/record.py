"""Read libsignal's serialized SessionRecord (its storage.proto RecordStructure) in tests.

A minimal generic protobuf reader, independent of e2e.libsignal.proto, so the session-state
comparisons do not trust the code under test.
"""

from __future__ import annotations

from dataclasses import dataclass


def fields(data: bytes) -> dict[int, list[int | bytes]]:
    out: dict[int, list[int | bytes]] = {}
    pos = 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    while pos < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            out.setdefault(number, []).append(varint())
        elif wire == 2:
            n = varint()
            out.setdefault(number, []).append(data[pos : pos + n])
            pos += n
        elif wire == 1:
            out.setdefault(number, []).append(data[pos : pos + 8])
            pos += 8
        else:
            raise ValueError(f"wire type {wire}")
    return out


def _one(f: dict[int, list[int | bytes]], n: int, default: int | bytes) -> int | bytes:
    return f.get(n, [default])[0]


@dataclass(frozen=True)
class Chain:
    ratchet_key: bytes  # raw 32 bytes
    chain_key: bytes
    index: int
    private_key: bytes = b""  # sender chain only


@dataclass(frozen=True)
class State:
    version: int
    root_key: bytes
    previous_counter: int
    sender: Chain | None
    receivers: list[Chain]
    base_key: bytes


def _chain(raw: bytes) -> Chain:
    f = fields(raw)
    ck = fields(bytes(_one(f, 3, b"")))  # type: ignore[arg-type]
    key = bytes(_one(f, 1, b""))  # type: ignore[arg-type]
    priv = bytes(_one(f, 2, b""))  # type: ignore[arg-type]
    return Chain(key[1:], bytes(_one(ck, 2, b"")), int(_one(ck, 1, 0)), priv)  # type: ignore[arg-type]


def root_step(root_key: bytes, private: bytes, public: bytes) -> bytes:
    """The next root key, computed independently of e2e: HKDF-SHA256(salt = root key,
    IKM = X25519(private, public), info = "WhisperRatchet")[:32]."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    shared = X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(public)
    )
    prk = hmac.digest(root_key, shared, hashlib.sha256)
    return hmac.digest(prk, b"WhisperRatchet\x01", hashlib.sha256)


def current_state(record: bytes) -> State:
    rec = fields(record)
    s = fields(bytes(_one(rec, 1, b"")))  # type: ignore[arg-type]
    sender = s.get(6)
    return State(
        version=int(_one(s, 1, 0)),  # type: ignore[arg-type]
        root_key=bytes(_one(s, 4, b"")),  # type: ignore[arg-type]
        previous_counter=int(_one(s, 5, 0)),  # type: ignore[arg-type]
        sender=_chain(bytes(sender[0])) if sender else None,  # type: ignore[arg-type]
        receivers=[_chain(bytes(r)) for r in s.get(7, [])],  # type: ignore[arg-type]
        base_key=bytes(_one(s, 13, b""))[1:],  # type: ignore[arg-type]
    )
