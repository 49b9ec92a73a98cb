"""Shared helpers of the protocol tests: set-ups, frame surgery, state snapshots."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cbor2

from e2e import xeddsa
from e2e.errors import E2EError
from e2e.frame import K
from e2e.keys import KeyPair
from e2e.prekeys import LocalPrekeys, PrekeyBundle, kem_prekey_message, signed_prekey_message
from e2e.session import Session
from e2e.suite import PQ, Suite

__all__ = [
    "SUITES",
    "SUITE_IDS",
    "LOW_ORDER",
    "Pair",
    "setup",
    "handshake",
    "prekeys_snapshot",
    "clone_prekeys",
    "frame_fields",
    "reencode",
    "edit_frame",
    "signed_bundle",
    "expect_unchanged",
    "body_offset",
    "byte_flips",
]

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
SUITES = [PQ]
SUITE_IDS = ["PQ"]


def _low_order_points() -> list[bytes]:
    """Every public key Wycheproof marks as giving an all-zero X25519 output.

    That is 0, 1, the two order-8 points, p - 1, p, p + 1, each with and without bit 255.
    """
    data = json.loads((VECTORS / "x25519.json").read_text())
    points = sorted(
        {c["public"] for c in data["cases"] if c["protocol"] == "reject_non_contributory"}
    )
    return [bytes.fromhex(p) for p in points]


LOW_ORDER: list[bytes] = _low_order_points()
assert len(LOW_ORDER) == 14, "x25519.json no longer lists the 14 low-order encodings"


@dataclass
class Pair:
    """Alice (initiator) and Bob (responder) of one suite, before or after the handshake."""

    suite: Suite
    alice_id: KeyPair
    bob_id: KeyPair
    bob_keys: LocalPrekeys
    alice: Session
    bob: Session | None = None

    @property
    def allowed(self) -> tuple[Suite, ...]:
        return (self.suite,)

    def respond(self, frame: bytes) -> tuple[Session, bytes]:
        return Session.respond(self.bob_id, self.bob_keys, frame, allowed_suites=self.allowed)


def setup(suite: Suite, one_time: int = 3, use_one_time: bool = True) -> Pair:
    """Identities, Bob's prekeys and Alice's fresh session from Bob's bundle (as bytes)."""
    alice_id, bob_id = KeyPair.generate(), KeyPair.generate()
    keys = LocalPrekeys.generate(bob_id, suite, one_time=one_time)
    bundle = keys.bundle(use_one_time=use_one_time).to_bytes()
    alice = Session.initiate(alice_id, bundle, allowed_suites=(suite,))
    return Pair(suite, alice_id, bob_id, keys, alice)


def handshake(suite: Suite, one_time: int = 3) -> Pair:
    """A set-up in which Bob has accepted Alice's first message and answered it."""
    pair = setup(suite, one_time)
    bob, first = pair.respond(pair.alice.encrypt(b"first"))
    assert first == b"first"
    assert pair.alice.decrypt(bob.encrypt(b"answer")) == b"answer"
    pair.bob = bob
    return pair


def prekeys_snapshot(keys: LocalPrekeys) -> tuple[Any, ...]:
    """A deep, comparable copy of everything a LocalPrekeys holds (public parts and usage)."""
    return (
        keys.suite.id,
        keys.identity.public,
        sorted((i, p.pair.public, p.signature) for i, p in keys.signed.items()),
        sorted((i, p.pair.public) for i, p in keys.one_time.items()),
        sorted((i, p.pair.public, p.signature, p.last_resort) for i, p in keys.kem.items()),
        sorted(keys.used_one_time),
        sorted(keys.used_kem),
        sorted(keys.last_resort_uses),
        keys.next_id,
    )


def clone_prekeys(keys: LocalPrekeys) -> LocalPrekeys:
    """An independent copy (fresh containers; the key objects themselves are immutable)."""
    return LocalPrekeys(
        keys.identity,
        keys.suite,
        signed=dict(keys.signed),
        one_time=dict(keys.one_time),
        kem=dict(keys.kem),
        used_one_time=set(keys.used_one_time),
        used_kem=set(keys.used_kem),
        last_resort_uses=set(keys.last_resort_uses),
        next_id=keys.next_id,
    )


def frame_fields(frame: bytes) -> dict[int, Any]:
    """The map of a frame, decoded without any checks (test-side surgery only)."""
    obj = cbor2.loads(frame)
    assert isinstance(obj, dict)
    return obj


def reencode(fields: dict[int, Any]) -> bytes:
    """Canonical encoding of ``fields`` (keys sorted), as the protocol writes frames."""
    return cbor2.dumps(dict(sorted(fields.items())))


def edit_frame(frame: bytes, **changes: Any) -> bytes:
    """Re-encode ``frame`` with fields changed (name=value; value None deletes the field)."""
    fields = frame_fields(frame)
    for name, value in changes.items():
        key = getattr(K, name.upper())
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return reencode(fields)


def body_offset(frame: bytes) -> int:
    """Index of the first byte of the body's content (the AD prefix is everything before)."""
    body = frame_fields(frame)[K.BODY]
    assert frame.endswith(body)
    return len(frame) - len(body)


def signed_bundle(
    keys: LocalPrekeys,
    *,
    spk: bytes | None = None,
    kem_pk: bytes | None = None,
    **changes: Any,
) -> PrekeyBundle:
    """Bob's bundle with ``spk`` / ``kem_pk`` replaced and validly re-signed by his identity."""
    bundle = keys.bundle()
    priv = keys.identity.private_bytes()
    if spk is not None:
        sig = xeddsa.sign(priv, signed_prekey_message(bundle.suite, spk), os.urandom(64))
        bundle = replace(bundle, spk=spk, spk_signature=sig)
    if kem_pk is not None:
        sig = xeddsa.sign(priv, kem_prekey_message(bundle.suite, kem_pk), os.urandom(64))
        bundle = replace(bundle, kem_pk=kem_pk, kem_signature=sig)
    return replace(bundle, **changes) if changes else bundle


def expect_unchanged(
    session: Session, action: Callable[[], object], error: type[E2EError] = E2EError
) -> E2EError:
    """Run ``action``, which must raise ``error``; the session state must be byte-identical."""
    before = session.to_bytes()
    try:
        action()
    except E2EError as exc:
        assert isinstance(exc, error), f"expected {error.__name__}, got {exc!r}"
        assert session.to_bytes() == before, "a rejected input changed the session state"
        return exc
    raise AssertionError(f"expected {error.__name__}, nothing was raised")


def byte_flips(data: bytes, positions: Iterator[int] | range) -> Iterator[tuple[int, bytes]]:
    """(position, data with that byte xor 0x01) for each position."""
    for i in positions:
        yield i, data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
