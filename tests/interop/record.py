"""Read libsignal's serialized SessionRecord (its storage.proto RecordStructure) in tests.

A minimal generic protobuf reader, independent of e2e.libsignal.proto, so the session-state
comparisons do not trust the code under test.
"""

from __future__ import annotations

from dataclasses import dataclass


def varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it) of the base-128 varint at ``pos``."""
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def fields(data: bytes) -> dict[int, list[int | bytes]]:
    out: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(data):
        key, pos = varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(data, pos)
            out.setdefault(number, []).append(value)
        elif wire == 2:
            n, pos = varint(data, pos)
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


@dataclass(frozen=True)
class PqHalf:
    """One direction of one SPQR chain epoch in libsignal's record."""

    counter: int
    key: bytes | None  # None once libsignal forgot it (a past sending epoch)
    skipped: dict[int, bytes]


@dataclass(frozen=True)
class PqChain:
    """libsignal's SPQR chain (SessionStructure field 15, its field 2), epochs by number."""

    direction: int
    current: int
    epochs: dict[int, tuple[PqHalf, PqHalf]]  # epoch -> (send, recv)
    next_root: bytes


def _pq_half(raw: bytes) -> PqHalf:
    f = fields(raw)
    key = f.get(2)
    blob = bytes(_one(f, 3, b""))  # type: ignore[arg-type]
    skipped = {
        int.from_bytes(blob[i : i + 4], "big"): blob[i + 4 : i + 36]
        for i in range(0, len(blob), 36)
    }
    return PqHalf(int(_one(f, 1, 0)), None if key is None else bytes(key[0]), skipped)  # type: ignore[arg-type]


def pq_chain(record: bytes) -> PqChain | None:
    """The SPQR chain of the record's current session, None if it has none (yet)."""
    rec = fields(record)
    session = fields(bytes(_one(rec, 1, b"")))  # type: ignore[arg-type]
    if 15 not in session:
        return None
    pq = fields(bytes(session[15][0]))  # type: ignore[arg-type]
    if 2 not in pq:
        return None
    chain = fields(bytes(pq[2][0]))  # type: ignore[arg-type]
    current = int(_one(chain, 2, 0))  # type: ignore[arg-type]
    entries = chain.get(3, [])
    epochs = {}
    for n, raw in enumerate(entries):
        f = fields(bytes(raw))  # type: ignore[arg-type]
        halves = tuple(_pq_half(bytes(_one(f, k, b""))) for k in (1, 2))  # type: ignore[arg-type]
        epochs[current - len(entries) + 1 + n] = halves
    return PqChain(
        int(_one(chain, 1, 0)),  # type: ignore[arg-type]
        current,
        epochs,  # type: ignore[arg-type]
        bytes(_one(chain, 4, b"")),  # type: ignore[arg-type]
    )
