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

from dataclasses import dataclass, replace
from typing import Final

from e2e.errors import DuplicateMessage, PqRatchetError, TooManySkipped
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


def step(key: bytes, counter: int) -> tuple[bytes, bytes]:
    """(next chain key, message key) of index ``counter``: HKDF(salt = 0^32, ikm = key,
    info = be32(counter) || "Signal PQ Ratchet V1 Chain Next")[:64], split 32/32."""
    out = hkdf(None, key, counter.to_bytes(4, "big") + NEXT_INFO, 64)
    return out[:32], out[32:]


@dataclass(frozen=True, slots=True, repr=False)
class Half:
    """One direction of one epoch: keys given out so far, the next chain key (None once
    forgotten) and, for receiving, the keys of skipped indices (oldest first)."""

    counter: int
    key: bytes | None
    skipped: tuple[tuple[int, bytes], ...] = ()

    def __repr__(self) -> str:
        return f"Half(counter={self.counter})"


@dataclass(frozen=True, slots=True, repr=False)
class Epoch:
    send: Half
    recv: Half

    def __repr__(self) -> str:
        return f"Epoch({self.send!r}, {self.recv!r})"


def _epoch(material: bytes, direction: int) -> tuple[bytes, Epoch]:
    a2b, b2a = Half(0, material[32:64]), Half(0, material[64:96])
    pair = Epoch(a2b, b2a) if direction == A2B else Epoch(b2a, a2b)
    return material[:32], pair


@dataclass(frozen=True, slots=True, repr=False)
class Chain:
    """The chain state: epochs ``current - len(epochs) + 1 .. current`` and the root the next
    epoch is derived from."""

    direction: int
    current: int
    epochs: tuple[Epoch, ...]
    next_root: bytes

    def __repr__(self) -> str:
        return f"Chain(direction={self.direction}, current={self.current})"

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

    def recv_key(self, epoch: int, index: int, max_jump: int) -> tuple[Chain, bytes]:
        """(chain after, key) of receiving index ``index`` (>= 1) of ``epoch``.

        An index ahead of the chain walks it, keeping the skipped keys; ``max_jump`` bounds
        the walk before any step. An index behind it takes its kept key, once.
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
            raise DuplicateMessage("SPQR key already used or no longer kept")
        if index - half.counter > max_jump:
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
        return replace(self, epochs=tuple(epochs))

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
        return replace(self, epochs=tuple(epochs))
