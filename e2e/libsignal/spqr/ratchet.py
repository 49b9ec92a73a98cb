"""SPQR as one value per session: version negotiation, the state machine and the chain
together (SPEC.md §15.7.7).

Sending: the state machine makes the message; an epoch secret it produced is added to the
chain; the chain gives the key of epoch ``message epoch - 1``. Receiving is split in two so
that the Double Ratchet can check the message's MAC before any SPQR work beyond the key:
:meth:`Spqr.prepare` parses the field, negotiates the version and derives the message's key
(walking the chain, which the message's MAC then authenticates); :meth:`Received.commit`
runs the state machine (chunk decoding, ML-KEM, SPQR's own MACs) and is called only for a
message whose Double Ratchet MAC verified. The key of a message depends only on its epoch
and index and the chain before it, never on its own chunk, so this order accepts exactly
the messages libsignal's (state machine first) does.

Negotiation (libsignal's): a session starts at version 1 with a minimum version. Until the
first message from the peer is accepted, an empty field (version 0) from the peer either
lowers the session to version 0 for good (minimum 0) or is refused as
:class:`~e2e.errors.PeerLacksSpqr` (minimum 1). With minimum 1 the chain exists from the
start, so the first message already has a key; with minimum 0 it is made at the first
received message and the messages sent before carry index 0 and no key. A field of a later
version (first byte above 1) is keyed from its epoch and index while the negotiation is open
(the state machine does not run) and refused once it is closed, as libsignal 0.103 does
(0.92 ignores such a field: no key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from e2e.errors import PeerLacksSpqr, PqRatchetError, StateError
from e2e.keys import Rng
from e2e.libsignal.spqr import braid
from e2e.libsignal.spqr.chain import A2B, B2A, Chain, Epoch, Half
from e2e.libsignal.spqr.kdf import Authenticator
from e2e.libsignal.spqr.message import V0, V1, Message, Unknown, encode, parse

__all__ = ["MAX_JUMP", "Negotiation", "Spqr", "Received"]

#: Most SPQR keys one received message may skip in its epoch's chain: the Double Ratchet's
#: own bound (e2e.libsignal.session.MAX_JUMP), so SPQR never refuses a reordering or a loss
#: the Double Ratchet accepts. Each costs one HKDF before the message's MAC can be checked
#: (libsignal allows 25 000).
MAX_JUMP: Final = 64


@dataclass(frozen=True, slots=True, repr=False)
class Negotiation:
    """What an unconfirmed session remembers until the peer's first accepted message."""

    auth_key: bytes
    direction: int
    min_version: int


@dataclass(frozen=True, slots=True, repr=False)
class Spqr:
    """One session's SPQR: the chain (None until made, see module doc), the state machine,
    and the open negotiation (None once closed)."""

    negotiation: Negotiation | None
    chain: Chain | None
    machine: braid.State

    def __repr__(self) -> str:
        return f"Spqr(epoch={self.machine.epoch}, {type(self.machine).__name__})"

    @classmethod
    def start(cls, auth_key: bytes, initiator: bool, min_version: int = V1) -> Spqr:
        """A new session's SPQR from PQXDH's 32-byte SPQR key."""
        if min_version not in (V0, V1):
            raise ValueError("SPQR minimum version must be 0 or 1")
        direction = A2B if initiator else B2A
        chain = Chain.start(auth_key, direction) if min_version >= V1 else None
        machine = braid.initial(Authenticator.start(auth_key, 1), initiator)
        return cls(Negotiation(auth_key, direction, min_version), chain, machine)

    def send(self, rng: Rng) -> tuple[Spqr, bytes, bytes | None]:
        """(state after, the pq_ratchet field, the message's SPQR key or None)."""
        machine, out, secret = braid.send(self.machine, rng)
        epoch = self.machine.epoch
        chain = self.chain
        key = None
        index = 0
        if chain is not None:
            if secret is not None:
                chain = chain.add_epoch(epoch, secret)
            chain, index, key = chain.send_key(epoch - 1)
        field = encode(Message(epoch, index, out.type, out.chunk))
        return Spqr(self.negotiation, chain, machine), field, key

    def skip_sending_keys(self, count: int) -> Spqr:
        """This state with the next ``count`` SPQR sending keys passed over (see
        :meth:`Chain.skip_send`); unchanged while the chain is not yet made."""
        if self.chain is None:
            return self
        chain = self.chain.skip_send(self.machine.epoch - 1, count)
        return Spqr(self.negotiation, chain, self.machine)

    def prepare(self, field: bytes, max_jump: int = MAX_JUMP) -> Received:
        """The key of a received message's ``field`` and what accepting it changes.

        Cheap and without side effects: parses the field, negotiates, walks the chain (at
        most ``max_jump`` steps). :class:`DecodeError` for a malformed field,
        :class:`PqRatchetError` (or its :class:`TooManySkipped` / :class:`DuplicateMessage`
        kin) for a key the chain cannot give; a refused downgrade is not raised here but
        reported in :attr:`Received.refusal`, for the caller to raise once it knows whether
        the message is authentic.
        """
        msg = parse(field)
        neg = self.negotiation
        if isinstance(msg, Unknown) and neg is None:
            raise PqRatchetError("SPQR version mismatch: a later version after version 1")
        if msg is None:
            if neg is not None and neg.min_version < V1:
                return Received(None, None, None, None)  # lowered to version 0 for good
            reason = (
                "the peer sent no SPQR data but this session requires SPQR (minimum version 1)"
                if neg is not None
                else "the peer stopped sending SPQR data after agreeing to it"
            )
            return Received(self, None, None, PeerLacksSpqr(reason))
        chain = self.chain
        if chain is None:
            assert neg is not None  # a version-1 session without chain is negotiating
            chain = Chain.start(neg.auth_key, neg.direction)
        key = None
        if not (msg.epoch == 1 and msg.index == 0):
            chain, key = chain.recv_key(msg.epoch - 1, msg.index, max_jump)
        if isinstance(msg, Unknown):  # keyed, negotiation still open, no state machine
            return Received(Spqr(neg, chain, self.machine), None, key, None)
        return Received(Spqr(None, chain, self.machine), msg, key, None)


@dataclass(frozen=True, slots=True, repr=False)
class Received:
    """A received field, prepared: ``key`` salts the message keys; :meth:`commit` gives
    the SPQR state once the message is accepted (None: the session no longer speaks SPQR).
    """

    base: Spqr | None
    message: Message | None
    key: bytes | None
    refusal: PeerLacksSpqr | None

    def commit(self) -> Spqr | None:
        """Run the state machine on the message; :class:`PqRatchetError` if SPQR's own
        checks refuse it (the caller then refuses the whole message)."""
        if self.refusal is not None:
            raise self.refusal
        base, msg = self.base, self.message
        if base is None or msg is None:
            return base
        machine, secret = braid.receive(base.machine, msg.epoch, msg.type, msg.chunk)
        chain = base.chain
        if secret is not None:
            assert chain is not None
            chain = chain.add_epoch(msg.epoch, secret)
        return Spqr(base.negotiation, chain, machine)


# -- serialization ---------------------------------------------------------------------------


def _half_obj(h: Half) -> list[object]:
    return [h.counter, h.key, [[i, k] for i, k in h.skipped]]


def to_obj(s: Spqr) -> list[object]:
    """[negotiation or null, chain or null, machine] (CBOR-ready; secrets included)."""
    neg = s.negotiation
    chain = s.chain
    return [
        None if neg is None else [neg.auth_key, neg.direction, neg.min_version],
        None
        if chain is None
        else [
            chain.direction,
            chain.current,
            chain.next_root,
            [[_half_obj(e.send), _half_obj(e.recv)] for e in chain.epochs],
        ],
        braid.to_obj(s.machine),
    ]


_MAX_U32: Final = 2**32 - 1


def _key(value: object) -> bytes:
    if type(value) is not bytes or len(value) != 32:
        raise StateError("malformed SPQR key")
    return value


def _small(value: object, allowed: tuple[int, ...]) -> int:
    if type(value) is not int or value not in allowed:
        raise StateError("malformed SPQR state")
    return value


def _half(obj: Any) -> Half:
    counter, key, skipped = obj
    if type(counter) is not int or not 0 <= counter <= _MAX_U32:
        raise StateError("malformed SPQR chain")
    kept = []
    for i, k in skipped:
        if type(i) is not int or not 1 <= i <= counter:
            raise StateError("malformed SPQR skipped key")
        kept.append((i, _key(k)))
    return Half(counter, None if key is None else _key(key), tuple(kept))


def from_obj(obj: object) -> Spqr:
    """Inverse of :func:`to_obj`; :class:`StateError` on anything malformed."""
    f: Any = obj
    try:
        neg_obj, chain_obj, machine_obj = f
        neg = None
        if neg_obj is not None:
            auth_key, direction, min_version = neg_obj
            neg = Negotiation(
                _key(auth_key), _small(direction, (A2B, B2A)), _small(min_version, (V0, V1))
            )
        chain = None
        if chain_obj is not None:
            direction, current, next_root, epochs = chain_obj
            if type(current) is not int or not epochs:
                raise StateError("malformed SPQR chain")
            kept = tuple(Epoch(_half(s), _half(r)) for s, r in epochs)
            if not 0 <= current - len(kept) + 1 <= current:
                raise StateError("malformed SPQR chain")
            chain = Chain(_small(direction, (A2B, B2A)), current, kept, _key(next_root))
        machine = braid.from_obj(machine_obj)
    except (TypeError, ValueError):
        raise StateError("malformed SPQR state") from None
    if chain is None and neg is None:
        raise StateError("SPQR state has neither chain nor negotiation")
    return Spqr(neg, chain, machine)
