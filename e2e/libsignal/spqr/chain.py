"""SPQR's symmetric chain: per-epoch sending and receiving key chains (SPEC.md §15.7.5).

Epoch 0 comes from PQXDH's SPQR key, every later epoch from the secret of one ML-KEM
exchange. Each epoch holds one chain per direction (A2B is the initiator's sending chain);
a chain step gives the key of index ``counter + 1`` (indices start at 1). A message of SPQR
epoch ``e`` is keyed from chain epoch ``e - 1``.

Kept state (libsignal's behaviour, seen in its session records): the epochs from the one
before the current sending epoch up to the newest added; sending in epoch ``E`` forgets
every epoch before ``E - 1`` and the sending key of epoch ``E - 1``. Keys of indices skipped
by a receive are kept for late messages, oldest evicted beyond :data:`MAX_SKIPPED`.

Values are immutable: every operation returns a new :class:`Chain`, so a caller commits one
only after the message it served has been accepted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

from e2e.errors import PqRatchetError, TooManySkipped
from e2e.libsignal.spqr.kdf import hkdf

__all__ = ["A2B", "B2A", "START_INFO", "ADD_EPOCH_INFO", "NEXT_INFO", "MAX_SKIPPED", "Half",
           "Epoch", "Chain", "step"]  # fmt: skip

#: Directions: the initiator (Alice) sends on A2B, the responder on B2A.
A2B: Final = 0
B2A: Final = 1
START_INFO: Final = b"Signal PQ Ratchet V1 Chain  Start"  # two spaces, as libsignal has it
ADD_EPOCH_INFO: Final = b"Signal PQ Ratchet V1 Chain Add Epoch"
NEXT_INFO: Final = b"Signal PQ Ratchet V1 Chain Next"
#: Most skipped receiving keys kept across all epochs (oldest evicted first).
MAX_SKIPPED: Final = 2000
_MAX_INDEX: Final = 2**32 - 1


_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))
_ZERO_INNER: Final = hashlib.sha256(bytes(64).translate(_IPAD))
_ZERO_OUTER: Final = hashlib.sha256(bytes(64).translate(_OPAD))


def step(key: bytes, counter: int) -> tuple[bytes, bytes]:
    """(next chain key, message key) of index ``counter``: HKDF-SHA256(salt = 0^32, ikm =
    key, info = be32(counter) || "Signal PQ Ratchet V1 Chain Next")[:64], split 32/32.

    A receiver may take up to MAX_JUMP of these steps before a message's MAC is checked,
    so this is RFC 5869 written out over hashlib's SHA-256 (RFC 2104 HMAC, the zero salt's
    pads hashed once): about 25 % faster than ``cryptography``'s HKDF object per step
    (tests/libsignal/test_spqr_ratchet.py checks it against that HKDF).
    """
    inner = _ZERO_INNER.copy()
    inner.update(key)
    outer = _ZERO_OUTER.copy()
    outer.update(inner.digest())
    prk = outer.digest() + bytes(32)
    info = counter.to_bytes(4, "big") + NEXT_INFO
    ipad, opad = hashlib.sha256(prk.translate(_IPAD)), hashlib.sha256(prk.translate(_OPAD))
    inner = ipad.copy()
    inner.update(info + b"\x01")
    outer = opad.copy()
    outer.update(inner.digest())
    t1 = outer.digest()
    ipad.update(t1 + info + b"\x02")
    opad.update(ipad.digest())
    return t1, opad.digest()


@dataclass(frozen=True, slots=True)
class Half:
    """One direction of one epoch: keys given out so far, the next chain key (None once
    forgotten) and, for receiving, the keys of skipped indices (oldest first)."""

    counter: int
    key: bytes | None = field(repr=False)
    skipped: tuple[tuple[int, bytes], ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class Epoch:
    send: Half
    recv: Half


def _epoch(material: bytes, direction: int) -> tuple[bytes, Epoch]:
    a2b, b2a = Half(0, material[32:64]), Half(0, material[64:96])
    pair = Epoch(a2b, b2a) if direction == A2B else Epoch(b2a, a2b)
    return material[:32], pair


@dataclass(frozen=True, slots=True)
class Chain:
    """The chain state: epochs ``current - len(epochs) + 1 .. current`` and the root the next
    epoch is derived from."""

    direction: int
    current: int
    epochs: tuple[Epoch, ...]
    next_root: bytes = field(repr=False)

    @classmethod
    def start(cls, auth_key: bytes, direction: int) -> Chain:
        """Epoch 0: HKDF(salt = 0^32, ikm = auth key, info = START_INFO)[:96] split
        next root || A2B chain || B2A chain."""
        root, first = _epoch(hkdf(None, auth_key, START_INFO, 96), direction)
        return cls(direction, 0, (first,), root)

    @property
    def oldest(self) -> int:
        return self.current - len(self.epochs) + 1

    def add_epoch(self, epoch: int, secret: bytes) -> Chain:
        """Epoch ``current + 1`` from an ML-KEM epoch secret: HKDF(salt = next root,
        ikm = secret, info = ADD_EPOCH_INFO)[:96], split as in :meth:`start`."""
        if epoch != self.current + 1:
            raise PqRatchetError("SPQR epoch secret out of order")
        root, new = _epoch(hkdf(self.next_root, secret, ADD_EPOCH_INFO, 96), self.direction)
        return Chain(self.direction, epoch, (*self.epochs, new), root)

    def _get(self, epoch: int) -> Epoch:
        if not self.oldest <= epoch <= self.current:
            raise PqRatchetError("SPQR key epoch out of range")
        return self.epochs[epoch - self.oldest]

    def send_key(self, epoch: int) -> tuple[Chain, int, bytes]:
        """(chain after, index, key) of the next sending key of ``epoch``; forgets epochs
        before ``epoch - 1`` and the sending keys before ``epoch``."""
        ep = self._get(epoch)
        if ep.send.key is None or ep.send.counter >= _MAX_INDEX:
            raise PqRatchetError("SPQR sending chain of this epoch is closed")
        keep = max(self.oldest, epoch - 1)
        epochs = list(self.epochs[keep - self.oldest :])
        for i in range(epoch - keep):
            old = epochs[i]
            if old.send.key is not None:
                epochs[i] = Epoch(Half(old.send.counter, None), old.recv)
        counter = ep.send.counter + 1
        nxt, key = step(ep.send.key, counter)
        epochs[epoch - keep] = Epoch(Half(counter, nxt), ep.recv)
        return Chain(self.direction, self.current, tuple(epochs), self.next_root), counter, key

    def skip_send(self, epoch: int, count: int) -> Chain:
        """The chain with ``count`` sending keys of ``epoch`` passed over unused (a restored
        state's way past indices an older copy of it may have used)."""
        ep = self._get(epoch)
        if ep.send.key is None or ep.send.counter + count > _MAX_INDEX:
            return self
        key = ep.send.key
        for i in range(ep.send.counter + 1, ep.send.counter + count + 1):
            key, _ = step(key, i)
        epochs = list(self.epochs)
        epochs[epoch - self.oldest] = Epoch(Half(ep.send.counter + count, key), ep.recv)
        return Chain(self.direction, self.current, tuple(epochs), self.next_root)

    def recv_key(self, epoch: int, index: int, max_jump: int) -> tuple[Chain, bytes]:
        """(chain after, key) of receiving index ``index`` (>= 1) of ``epoch``.

        An index ahead of the chain walks it, keeping the skipped keys; ``max_jump`` bounds
        their number before any step (:class:`TooManySkipped`). An index behind it takes its
        kept key, once (:class:`PqRatchetError` for a used or evicted one).
        """
        ep = self._get(epoch)
        half = ep.recv
        if not 1 <= index <= _MAX_INDEX:
            raise PqRatchetError("SPQR key index out of range")
        if index <= half.counter:
            for n, (i, key) in enumerate(half.skipped):
                if i == index:
                    skipped = half.skipped[:n] + half.skipped[n + 1 :]
                    return self._with_recv(epoch, Half(half.counter, half.key, skipped)), key
            # Not DuplicateMessage: the Double Ratchet refuses a replay before this, so a used
            # SPQR index under an accepted Double Ratchet key means another state's message
            # (SessionRecord tries the next state) or a peer out of step.
            raise PqRatchetError("SPQR key already used or no longer kept")
        if index - half.counter - 1 > max_jump:
            raise TooManySkipped("SPQR key index too far ahead")
        if half.key is None:  # pragma: no cover - receiving keys are never forgotten
            raise PqRatchetError("SPQR receiving chain of this epoch is closed")
        chain_key, new = half.key, []
        for i in range(half.counter + 1, index):
            chain_key, key = step(chain_key, i)
            new.append((i, key))
        chain_key, key = step(chain_key, index)
        out = self._with_recv(epoch, Half(index, chain_key, half.skipped + tuple(new)))
        return out._evict(), key

    def _with_recv(self, epoch: int, half: Half) -> Chain:
        epochs = list(self.epochs)
        i = epoch - self.oldest
        epochs[i] = Epoch(epochs[i].send, half)
        return Chain(self.direction, self.current, tuple(epochs), self.next_root)

    def _evict(self) -> Chain:
        total = sum(len(e.recv.skipped) for e in self.epochs)
        if total <= MAX_SKIPPED:
            return self
        epochs = list(self.epochs)
        for i, ep in enumerate(epochs):  # oldest epochs first, oldest keys first
            drop = min(total - MAX_SKIPPED, len(ep.recv.skipped))
            if drop:
                recv = Half(ep.recv.counter, ep.recv.key, ep.recv.skipped[drop:])
                epochs[i] = Epoch(ep.send, recv)
                total -= drop
        return Chain(self.direction, self.current, tuple(epochs), self.next_root)
