"""The Double Ratchet, with optional header encryption (SPEC.md §4).

:class:`Ratchet` is the one owner of a session's mutable ratchet state. ``decrypt`` computes
everything into locals and assigns to the state only after the body has authenticated, so a
rejected message leaves the state byte-identical. ``encrypt`` advances the sending chain; the
caller persists the state before the frame leaves (see e2e.store).

Skipped message keys are kept per (remote ratchet key, N), oldest first, at most
MAX_STORED_SKIPPED of them, from at most MAX_RECEIVER_CHAINS receiving chains.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from e2e.chain_key import chain_step
from e2e.constants import (
    MAX_COUNTER,
    MAX_PLAINTEXT_BYTES,
    MAX_RECEIVER_CHAINS,
    MAX_SKIP,
    MAX_STORED_SKIPPED,
)
from e2e.errors import (
    AuthenticationFailed,
    DuplicateMessage,
    LimitExceeded,
    StateError,
    TooManySkipped,
)
from e2e.frame import MessageFrame, PrekeyFields, message_prefix
from e2e.header import HEADER_STRUCT, Header, decode_header, encode_header
from e2e.keys import KeyPair, Rng
from e2e.message_key import HeaderCipher, open_, seal
from e2e.root_key import root_step
from e2e.suite import Suite

__all__ = ["Ratchet", "sealed_body_len"]

#: Builds a header key's AEAD (a module attribute so tests can observe every header key used).
header_cipher = HeaderCipher

_HEADER_NONCE_LEN = 12
_unpack_header = HEADER_STRUCT.unpack
_HEADER_LEN = HEADER_STRUCT.size
_SKIPPED_REC = struct.Struct(">32sI32s")


def sealed_body_len(suite: Suite, plaintext_len: int) -> int:
    """Exact length of a sealed body for a plaintext of ``plaintext_len`` bytes."""
    if suite.pq:
        return 32 + plaintext_len + 16
    return (plaintext_len // 16 + 1) * 16 + suite.tag_len


@dataclass(slots=True, repr=False)
class _Recv:
    """Result of planning a receive: what to assign once the body authenticates."""

    seed: bytes
    skipped_key: tuple[bytes, int] | None = None
    new_dhr: bytes | None = None
    ratchet: tuple[KeyPair, bytes, bytes, bytes | None, bytes | None] | None = None
    ckr: bytes | None = None
    nr: int = 0
    new_skipped: list[tuple[tuple[bytes, int], bytes]] | None = None


class Ratchet:
    """Double Ratchet state of one session. Not thread-safe; one owner at a time."""

    __slots__ = (
        "suite",
        "ad",
        "dhs",
        "dhr",
        "rk",
        "cks",
        "ckr",
        "ns",
        "nr",
        "pn",
        "hks",
        "hkr",
        "nhks",
        "nhkr",
        "skipped",
        "old_chains",
        "rng",
        "_hks_cipher",
        "_hkr_cipher",
        "_nhkr_cipher",
    )

    def __init__(
        self,
        suite: Suite,
        ad: bytes,
        dhs: KeyPair,
        dhr: bytes | None,
        rk: bytes,
        cks: bytes | None = None,
        ckr: bytes | None = None,
        ns: int = 0,
        nr: int = 0,
        pn: int = 0,
        hks: bytes | None = None,
        hkr: bytes | None = None,
        nhks: bytes | None = None,
        nhkr: bytes | None = None,
        skipped: dict[tuple[bytes, int], bytes] | None = None,
        old_chains: list[tuple[bytes, bytes | None]] | None = None,
        rng: Rng = os.urandom,
    ) -> None:
        self.suite = suite
        self.ad = ad
        self.dhs = dhs
        self.dhr = dhr
        self.rk = rk
        self.cks = cks
        self.ckr = ckr
        self.ns = ns
        self.nr = nr
        self.pn = pn
        self.hks = hks
        self.hkr = hkr
        self.nhks = nhks
        self.nhkr = nhkr
        #: (remote ratchet key, N) -> message key seed, oldest first.
        self.skipped: dict[tuple[bytes, int], bytes] = skipped if skipped is not None else {}
        #: Earlier receiving chains, oldest first: (remote ratchet key, header key or None).
        self.old_chains: list[tuple[bytes, bytes | None]] = old_chains or []
        self.rng = rng
        # Derived AEADs of hks, hkr and nhkr: a cache, not state (never saved). Each is used
        # only while its .key is the very object in the matching field, else rebuilt.
        self._hks_cipher: HeaderCipher | None = None
        self._hkr_cipher: HeaderCipher | None = None
        self._nhkr_cipher: HeaderCipher | None = None

    def __repr__(self) -> str:
        return f"Ratchet(suite={self.suite.id}, ns={self.ns}, nr={self.nr})"

    @classmethod
    def initiator(
        cls,
        suite: Suite,
        ad: bytes,
        root_key: bytes,
        remote_ratchet_key: bytes,
        header_key_a: bytes | None,
        header_key_b: bytes | None,
        rng: Rng = os.urandom,
    ) -> Ratchet:
        """Alice: ratchet once against Bob's signed prekey, so she can send at once."""
        dhs = KeyPair.generate(rng)
        rk, cks, nhks = root_step(suite, root_key, dhs.exchange(remote_ratchet_key))
        return cls(
            suite, ad, dhs, remote_ratchet_key, rk, cks=cks,
            hks=header_key_a, nhks=nhks, nhkr=header_key_b, rng=rng,
        )  # fmt: skip

    @classmethod
    def responder(
        cls,
        suite: Suite,
        ad: bytes,
        root_key: bytes,
        signed_prekey: KeyPair,
        header_key_a: bytes | None,
        header_key_b: bytes | None,
        rng: Rng = os.urandom,
    ) -> Ratchet:
        """Bob: his signed prekey is his first ratchet key; he sends after he has received."""
        return cls(
            suite, ad, signed_prekey, None, root_key,
            nhks=header_key_b, nhkr=header_key_a, rng=rng,
        )  # fmt: skip

    # -- sending -----------------------------------------------------------------------

    def can_send(self) -> bool:
        return self.cks is not None

    def encrypt(self, plaintext: bytes, prekey: PrekeyFields | None = None) -> bytes:
        """Seal ``plaintext`` into a frame and advance the sending chain."""
        cks = self.cks
        if cks is None:
            raise StateError("this session cannot send before it has received a message")
        size = len(plaintext)
        if size > MAX_PLAINTEXT_BYTES:
            raise LimitExceeded("plaintext larger than MAX_PLAINTEXT_BYTES")
        ns = self.ns
        if ns >= MAX_COUNTER:
            raise LimitExceeded("sending chain exhausted; a DH ratchet step is needed")
        suite = self.suite
        next_ck, seed = chain_step(cks)
        header = encode_header(self.dhs.public, self.pn, ns)
        ad = self.ad
        hks = self.hks
        if hks is not None:
            cipher = self._hks_cipher
            if cipher is None or cipher.key is not hks:
                cipher = self._hks_cipher = header_cipher(hks)
            header = cipher.seal(self.rng(_HEADER_NONCE_LEN), ad, header)
        body_len = sealed_body_len(suite, size)
        prefix = message_prefix(suite, header, prekey, body_len)
        body = seal(suite, seed, ad + prefix, plaintext)
        if len(body) != body_len:  # pragma: no cover - a programming error, not bad input
            raise AssertionError("sealed body length differs from its prediction")
        self.cks = next_ck
        self.ns = ns + 1
        return prefix + body

    # -- receiving ---------------------------------------------------------------------

    def decrypt(self, frame: MessageFrame) -> bytes:
        """Open ``frame``; on any error the state is left exactly as it was."""
        if frame.suite is not self.suite:
            raise AuthenticationFailed("frame suite differs from the session's")
        dh, pn, n, chain = self._read_header(frame.header)
        ckr = self.ckr
        if chain == "current" and n == self.nr and ckr is not None:
            # The common case, the next message of the current receiving chain: no key is
            # skipped, stored or taken from the store (stored keys of this chain are all
            # below nr), so _plan/_apply would only advance the chain. Same result, cheaper.
            ckr, seed = chain_step(ckr)
            plaintext = open_(self.suite, seed, self.ad + frame.ad_prefix, frame.body)
            self.ckr = ckr
            self.nr = n + 1
            return plaintext
        plan = self._plan(Header(dh, pn, n), chain)
        plaintext = open_(self.suite, plan.seed, self.ad + frame.ad_prefix, frame.body)
        self._apply(plan)
        return plaintext

    def _read_header(self, data: bytes) -> tuple[bytes, int, int, str]:
        """Decode (and with header encryption, decrypt) a header.

        Returns its (DH, PN, N) and which chain it belongs to: "current", "next" or "old".
        """
        if self.suite.header_encryption:
            ad = self.ad
            hkr = self.hkr
            if hkr is not None:  # the current chain's key first: most messages are there
                cipher = self._hkr_cipher
                if cipher is None or cipher.key is not hkr:
                    cipher = self._hkr_cipher = header_cipher(hkr)
                plain = cipher.open(ad, data)
                if plain is not None:
                    if len(plain) != _HEADER_LEN:  # decode_header, inlined for the hot path
                        raise AuthenticationFailed("header has the wrong length")
                    dh, pn, n = _unpack_header(plain)
                    if dh != self.dhr:
                        raise AuthenticationFailed("header names another ratchet key")
                    return dh, pn, n, "current"
            nhkr = self.nhkr
            if nhkr is not None:
                cipher = self._nhkr_cipher
                if cipher is None or cipher.key is not nhkr:
                    cipher = self._nhkr_cipher = header_cipher(nhkr)
                plain = cipher.open(ad, data)
                if plain is not None:
                    return (*decode_header(plain), "next")
            for _, old_key in reversed(self.old_chains):
                if old_key is not None:
                    plain = header_cipher(old_key).open(ad, data)
                    if plain is not None:
                        return (*decode_header(plain), "old")
            raise AuthenticationFailed("header does not decrypt under any header key")
        dh, pn, n = decode_header(data)
        if dh == self.dhr and self.ckr is not None:
            return dh, pn, n, "current"
        if any(dh == old for old, _ in self.old_chains):
            return dh, pn, n, "old"
        return dh, pn, n, "next"

    def _plan(self, header: Header, chain: str) -> _Recv:
        key = (header.dh, header.n)
        seed = self.skipped.get(key)
        if seed is not None:
            return _Recv(seed, skipped_key=key)
        if chain == "old":
            raise DuplicateMessage("message already decrypted (or its key was discarded)")
        if chain == "current":
            ckr, nr = self.ckr, self.nr
            if header.n < nr:
                raise DuplicateMessage("message already decrypted (or its key was discarded)")
            assert ckr is not None
            new_skipped: list[tuple[tuple[bytes, int], bytes]] = []
            if header.n > nr:
                ckr, nr = self._skip(ckr, nr, header.n, header.dh, new_skipped)
            ckr, seed = chain_step(ckr)
            return _Recv(seed, ckr=ckr, nr=nr + 1, new_skipped=new_skipped)
        # A new remote ratchet key: one DH ratchet step (two root-key steps).
        suite = self.suite
        new_skipped = []
        if header.n > MAX_SKIP:  # checked before any skipping or DH: no work for it
            raise TooManySkipped("message number beyond MAX_SKIP")
        if self.ckr is not None and self.dhr is not None:
            self._skip(self.ckr, self.nr, header.pn, self.dhr, new_skipped)
        rk, ckr, nhkr = root_step(suite, self.rk, self.dhs.exchange(header.dh))
        dhs = KeyPair.generate(self.rng)
        rk, cks, nhks = root_step(suite, rk, dhs.exchange(header.dh))
        ckr, nr = self._skip(ckr, 0, header.n, header.dh, new_skipped)
        ckr, seed = chain_step(ckr)
        return _Recv(
            seed,
            ratchet=(dhs, rk, cks, nhkr, nhks),
            ckr=ckr,
            nr=nr + 1,
            new_skipped=new_skipped,
            new_dhr=header.dh,
        )

    @staticmethod
    def _skip(
        ck: bytes,
        n: int,
        until: int,
        dh: bytes,
        out: list[tuple[tuple[bytes, int], bytes]],
    ) -> tuple[bytes, int]:
        if until - n > MAX_SKIP:
            raise TooManySkipped("message is further ahead than MAX_SKIP")
        while n < until:
            ck, seed = chain_step(ck)
            out.append(((dh, n), seed))
            n += 1
        return ck, n

    def _apply(self, plan: _Recv) -> None:
        if plan.skipped_key is not None:
            del self.skipped[plan.skipped_key]
            return
        skipped = self.skipped
        if plan.ratchet is not None:
            dhs, rk, cks, nhkr, nhks = plan.ratchet
            if self.dhr is not None and self.ckr is not None:
                self.old_chains.append((self.dhr, self.hkr))
            self.pn = self.ns
            self.ns = 0
            self.dhr = plan.new_dhr
            self.hks = self.nhks
            self.hkr = self.nhkr
            self.nhkr = nhkr
            self._hkr_cipher, self._nhkr_cipher = self._nhkr_cipher, None
            self.nhks = nhks
            self.dhs = dhs
            self.rk = rk
            self.cks = cks
        assert plan.new_skipped is not None
        for key, seed in plan.new_skipped:
            skipped[key] = seed
        self.ckr = plan.ckr
        self.nr = plan.nr
        if len(self.old_chains) >= MAX_RECEIVER_CHAINS:
            self._drop_chains(len(self.old_chains) - MAX_RECEIVER_CHAINS + 1)
        while len(skipped) > MAX_STORED_SKIPPED:
            del skipped[next(iter(skipped))]

    def _drop_chains(self, count: int) -> None:
        dropped = {dh for dh, _ in self.old_chains[:count]}
        del self.old_chains[:count]
        for key in [k for k in self.skipped if k[0] in dropped]:
            del self.skipped[key]

    # -- serialization helpers -----------------------------------------------------------

    def skipped_bytes(self) -> bytes:
        """Skipped keys as concatenated records: dh (32) | N (u32) | seed (32)."""
        return b"".join(_SKIPPED_REC.pack(dh, n, seed) for (dh, n), seed in self.skipped.items())

    @staticmethod
    def skipped_from_bytes(data: bytes) -> dict[tuple[bytes, int], bytes]:
        size = _SKIPPED_REC.size
        if len(data) % size or len(data) // size > MAX_STORED_SKIPPED:
            raise StateError("skipped-key records are malformed")
        out: dict[tuple[bytes, int], bytes] = {}
        for dh, n, seed in _SKIPPED_REC.iter_unpack(data):
            out[(dh, n)] = seed
        if len(out) * size != len(data):  # a repeated (dh, N): not a state we wrote
            raise StateError("skipped-key records are malformed")
        return out
