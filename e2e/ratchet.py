"""The Double Ratchet with header encryption (SPEC.md §4).

:class:`Ratchet` is the one owner of a session's mutable ratchet state. ``decrypt`` computes
everything into locals and assigns to the state only after the body has authenticated, so a
rejected message leaves the state byte-identical. ``encrypt`` advances the sending chain; the
caller persists the state before the frame leaves (see e2e.store).

Skipped message keys are kept per (remote ratchet key, N), oldest first, at most
MAX_STORED_SKIPPED of them, from at most MAX_RECEIVER_CHAINS receiving chains, and none more
than MAX_SKIPPED_AGE messages behind its chain (SPEC.md §4.6).

Bounded work before authentication (SPEC.md §4.5): the sealed header authenticates the whole
frame before any key is derived, and the receiver's new ratchet key pair and sending chain
are made only after the body authenticates.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from e2e.chain_key import MESSAGE_KEY_LEN, kdf_ck
from e2e.constants import (
    MAX_COUNTER,
    MAX_PLAINTEXT_BYTES,
    MAX_RECEIVER_CHAINS,
    MAX_SKIP,
    MAX_SKIPPED_AGE,
    MAX_STORED_SKIPPED,
)
from e2e.errors import (
    AuthenticationFailed,
    DuplicateMessage,
    LimitExceeded,
    RatchetStepRequired,
    StateError,
    TooManySkipped,
)
from e2e.frame import (
    BLANK_SEALED_HEADER,
    MessageFrame,
    PrekeyFields,
    blank_header,
    message_parts,
)
from e2e.header import decode_header, encode_header
from e2e.keys import KeyPair, Rng, checked_rng
from e2e.message_key import NONCE_LEN, TAG_LEN, HeaderCipher, open_, seal
from e2e.root_key import root_step
from e2e.suite import Suite

__all__ = ["Ratchet", "sealed_body_len"]

#: Builds a header key's AEAD (a module attribute so tests can observe every header key used).
header_cipher = HeaderCipher

_NONCE_LEN = NONCE_LEN
#: sealed body = GCM ciphertext | tag (16): its nonce and commitment travel in the header.
_BODY_OVERHEAD = TAG_LEN
_SKIPPED_REC = struct.Struct(f">32sI{MESSAGE_KEY_LEN}s")


def sealed_body_len(suite: Suite, plaintext_len: int) -> int:
    """Exact length of a sealed body for a plaintext of ``plaintext_len`` bytes."""
    return plaintext_len + _BODY_OVERHEAD


@dataclass(slots=True, repr=False)
class _Recv:
    """Result of planning a receive: what to assign once the body authenticates."""

    #: The message key (EK | MC) that opens the body.
    key: bytes
    skipped_key: tuple[bytes, int] | None = None
    new_dhr: bytes | None = None
    #: For a DH ratchet step: (root key after the receiving step, new next header key).
    #: The sending half (new key pair, second root step) is made only after authentication.
    ratchet: tuple[bytes, bytes] | None = None
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
        "must_ratchet",
        "rng",
        "_hks_cipher",
        "_hkr_cipher",
        "_nhkr_cipher",
        "_expire_due",
        "_sent_last",
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
        must_ratchet: bool = False,
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
        #: (remote ratchet key, N) -> message key (EK | MC), oldest first.
        self.skipped: dict[tuple[bytes, int], bytes] = skipped if skipped is not None else {}
        #: Earlier receiving chains, oldest first: (remote ratchet key, header key or None).
        self.old_chains: list[tuple[bytes, bytes | None]] = old_chains or []
        #: Set when the state was restored without proof of freshness (SPEC.md §6.5): no
        #: sending until a received message has made a DH ratchet step (a new sending chain).
        self.must_ratchet = must_ratchet
        self.rng = checked_rng(rng)  # os.urandom unless a test allowed another (e2e._testing)
        # Derived AEADs of hks, hkr and nhkr: a cache, not state (never saved). Each is used
        # only while its .key is the very object in the matching field, else rebuilt.
        self._hks_cipher: HeaderCipher | None = None
        self._hkr_cipher: HeaderCipher | None = None
        self._nhkr_cipher: HeaderCipher | None = None
        # Also a cache: the nr from which _expire_skipped has work (-1: not known yet).
        self._expire_due = -1
        # Not state either: whether this side sent since it last received. Then the peer's
        # next frame most likely starts a new chain, so its header is tried under NHKr first.
        self._sent_last = False

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
        if self.must_ratchet:
            raise RatchetStepRequired(
                "session restored from a state not proven fresh: it sends again after it has "
                "received a message with a new ratchet key"
            )
        size = len(plaintext)
        if size > MAX_PLAINTEXT_BYTES:
            raise LimitExceeded("plaintext larger than MAX_PLAINTEXT_BYTES")
        ns = self.ns
        if ns >= MAX_COUNTER:
            raise LimitExceeded("sending chain exhausted; a DH ratchet step is needed")
        suite = self.suite
        next_ck, mk = kdf_ck(suite, cks)
        header = encode_header(self.dhs.public, self.pn, ns, mk[32:])
        body_len = size + _BODY_OVERHEAD
        hks = self.hks
        if hks is None:  # pragma: no cover - from_bytes refuses a sending chain without HKs
            raise StateError("sending chain without a header key")
        # SPEC.md §4.5, §5.2: one fresh nonce per frame is the GCM nonce of the body (under
        # the message key: a rolled-back state that uses the key again never repeats a
        # nonce) and of the header; the body is sealed with the header blanked, then the
        # header over AD | blanked prefix | body, so it authenticates the body.
        cipher = self._hks_cipher
        if cipher is None or cipher.key is not hks:
            cipher = self._hks_cipher = header_cipher(hks)
        nonce = self.rng(_NONCE_LEN)
        before, after = message_parts(suite, prekey, body_len)
        body_ad = self.ad + before + BLANK_SEALED_HEADER + after
        body = seal(mk, nonce, body_ad, plaintext)
        header = cipher.seal(nonce, body_ad + body, header)
        if len(body) != body_len:  # pragma: no cover - a programming error, not bad input
            raise AssertionError("sealed body length differs from its prediction")
        self.cks = next_ck
        self.ns = ns + 1
        self._sent_last = True
        return before + header + after + body

    # -- receiving ---------------------------------------------------------------------

    def decrypt(self, frame: MessageFrame) -> bytes:
        """Open ``frame``; on any error the state is left exactly as it was."""
        if frame.suite is not self.suite:
            raise AuthenticationFailed("frame suite differs from the session's")
        body = frame.body
        # The body was sealed with the header blanked; the header authenticates
        # AD | blanked prefix | body, so a frame that is not the peer's exactly as sent is
        # refused here, before any chain step or DH (SPEC.md §5.2).
        body_ad = self.ad + blank_header(frame.ad_prefix, len(body))
        sealed = frame.header
        dh, pn, n, commitment, chain = self._read_header(sealed, body_ad + body)
        nonce = sealed[:_NONCE_LEN]
        ckr = self.ckr
        if chain == "current" and n == self.nr and ckr is not None:
            # The common case, the next message of the current receiving chain: no key is
            # skipped, stored or taken from the store (stored keys of this chain are all
            # below nr), so _plan/_apply would only advance the chain. Same result, cheaper.
            ckr, mk = kdf_ck(self.suite, ckr)
            plaintext = open_(mk, commitment, nonce, body_ad, body)
            self.ckr = ckr
            self.nr = n + 1
            self._sent_last = False
            if n >= self._expire_due:
                self._expire_skipped()
            return plaintext
        if chain == "next" and not n and (ckr is None or pn <= self.nr):
            # The first message of the peer's new chain, skipping nothing (ping-pong): the
            # same result as _plan/_apply, without their general bookkeeping.
            if (dh, 0) not in self.skipped:  # (a peer's ratchet key used again: _plan)
                suite = self.suite
                rk, ckr, nhkr = root_step(suite, self.rk, self.dhs.exchange(dh))
                ckr, mk = kdf_ck(suite, ckr)
                plaintext = open_(mk, commitment, nonce, body_ad, body)
                self._ratchet_step(dh, rk, nhkr)
                self.ckr = ckr
                self.nr = 1
                self._after_receive()
                return plaintext
        plan = self._plan(dh, pn, n, chain)
        plaintext = open_(plan.key, commitment, nonce, body_ad, body)
        self._apply(plan)
        return plaintext

    def _read_header(self, data: bytes, ad: bytes) -> tuple[bytes, int, int, bytes, str]:
        """Decrypt a sealed header under associated data ``ad`` and decode it.

        Returns its (DH, PN, N, MC) and which chain it belongs to: "current", "next" or "old".
        A header opens under at most one header key (its commitment, SPEC.md §4.4), so the
        order of the trials changes only their cost: HKr first, where most messages are,
        unless this side has sent since it last received (then NHKr first).
        """
        first = not self._sent_last
        found = self._open_chain(first, data, ad) or self._open_chain(not first, data, ad)
        if found is not None:
            return found
        for _, old_key in reversed(self.old_chains):
            if old_key is not None:
                plain = header_cipher(old_key).open(ad, data)
                if plain is not None:
                    return (*decode_header(plain), "old")
        raise AuthenticationFailed("header does not decrypt under any header key")

    def _open_chain(
        self, current: bool, data: bytes, ad: bytes
    ) -> tuple[bytes, int, int, bytes, str] | None:
        """The header under HKr (``current``; its DH must be DHr) or NHKr, or None. Each key's
        AEAD is cached while the key stays in its field."""
        if current:
            key, cipher = self.hkr, self._hkr_cipher
        else:
            key, cipher = self.nhkr, self._nhkr_cipher
        if key is None:
            return None
        if cipher is None or cipher.key is not key:
            cipher = header_cipher(key)
            if current:
                self._hkr_cipher = cipher
            else:
                self._nhkr_cipher = cipher
        plain = cipher.open(ad, data)
        if plain is None:
            return None
        dh, pn, n, commitment = decode_header(plain)
        if not current:
            return dh, pn, n, commitment, "next"
        if dh != self.dhr:
            raise AuthenticationFailed("header names another ratchet key")
        return dh, pn, n, commitment, "current"

    def _plan(self, dh: bytes, pn: int, n: int, chain: str) -> _Recv:
        """What receiving message ``n`` of the chain of ratchet key ``dh`` (named ``chain`` by
        :meth:`_read_header`) would do, computed without changing the state."""
        key = (dh, n)
        stored = self.skipped.get(key)
        if stored is not None:
            return _Recv(stored, skipped_key=key)
        if chain == "old":
            raise DuplicateMessage("message already decrypted (or its key was discarded)")
        # The frame's budget of derivations: its sealed header has already authenticated
        # the whole frame.
        budget = MAX_SKIP
        if chain == "current":
            ckr, nr = self.ckr, self.nr
            if n < nr:
                raise DuplicateMessage("message already decrypted (or its key was discarded)")
            assert ckr is not None
            new_skipped: list[tuple[tuple[bytes, int], bytes]] = []
            if n > nr:
                ckr, nr = self._skip(self.suite, ckr, nr, n, dh, new_skipped, budget)
            ckr, mk = kdf_ck(self.suite, ckr)
            return _Recv(mk, ckr=ckr, nr=nr + 1, new_skipped=new_skipped)
        # A new remote ratchet key: the receiving half of a DH ratchet step. The sending half
        # (a new key pair, a second DH and root step) waits until the body authenticates.
        suite = self.suite
        new_skipped = []
        if n > budget:  # checked before any skipping or DH: no work for it
            raise TooManySkipped("message number beyond the frame's skip budget")
        if self.ckr is not None and self.dhr is not None:
            # Keys of the current chain up to PN, within what is left of this frame's budget;
            # the chain's later keys (if any) are abandoned: those messages are lost.
            until = min(pn, self.nr + budget - n)
            if until > self.nr:
                self._skip(suite, self.ckr, self.nr, until, self.dhr, new_skipped, budget)
        rk, ckr, nhkr = root_step(suite, self.rk, self.dhs.exchange(dh))
        if n:
            ckr, _ = self._skip(suite, ckr, 0, n, dh, new_skipped, budget)
        ckr, mk = kdf_ck(suite, ckr)
        return _Recv(
            mk,
            ratchet=(rk, nhkr),
            ckr=ckr,
            nr=n + 1,
            new_skipped=new_skipped,
            new_dhr=dh,
        )

    @staticmethod
    def _skip(
        suite: Suite,
        ck: bytes,
        n: int,
        until: int,
        dh: bytes,
        out: list[tuple[tuple[bytes, int], bytes]],
        budget: int,
    ) -> tuple[bytes, int]:
        if until - n > budget:
            raise TooManySkipped("message is further ahead than the frame's skip budget")
        while n < until:
            ck, mk = kdf_ck(suite, ck)
            out.append(((dh, n), mk))
            n += 1
        return ck, n

    def _apply(self, plan: _Recv) -> None:
        if plan.skipped_key is not None:
            del self.skipped[plan.skipped_key]
            self._sent_last = False
            return
        if plan.ratchet is not None:
            assert plan.new_dhr is not None
            self._ratchet_step(plan.new_dhr, *plan.ratchet)
        assert plan.new_skipped is not None
        skipped = self.skipped
        for key, mk in plan.new_skipped:
            skipped[key] = mk
        self.ckr = plan.ckr
        self.nr = plan.nr
        self._after_receive()

    def _ratchet_step(self, dh: bytes, rk: bytes, nhkr: bytes) -> None:
        """Assign a DH ratchet step to remote key ``dh`` whose receiving half gave root key
        ``rk`` and next header key ``nhkr``: make the sending half (a new key pair, its DH
        and root step) now that the body is genuine, and move the chains and header keys
        (SPEC.md §4.5 step 6). The caller sets CKr and Nr."""
        dhs = KeyPair.generate(self.rng)
        rk, cks, nhks = root_step(self.suite, rk, dhs.exchange(dh))
        if self.dhr is not None and self.ckr is not None:
            self.old_chains.append((self.dhr, self.hkr))
        self.pn = self.ns
        self.ns = 0
        self.dhr = dh
        self.hks = self.nhks
        self.hkr = self.nhkr
        self.nhkr = nhkr
        self._hkr_cipher, self._nhkr_cipher = self._nhkr_cipher, None
        self.nhks = nhks
        self.dhs = dhs
        self.rk = rk
        self.cks = cks
        self.must_ratchet = False  # a new sending chain no older state has seen

    def _after_receive(self) -> None:
        """The limits of SPEC.md §4.6, after a received message that used no stored key."""
        self._sent_last = False
        if len(self.old_chains) >= MAX_RECEIVER_CHAINS:
            self._drop_chains(len(self.old_chains) - MAX_RECEIVER_CHAINS + 1)
        self._expire_skipped()
        skipped = self.skipped
        while len(skipped) > MAX_STORED_SKIPPED:
            del skipped[next(iter(skipped))]

    def _expire_skipped(self) -> None:
        """Drop the current chain's skipped keys more than MAX_SKIPPED_AGE behind ``nr``.

        Keys of one chain are stored in increasing N, so this stops at the first young one.
        """
        dhr, limit = self.dhr, self.nr - MAX_SKIPPED_AGE
        if limit <= 0:  # no key can be that old yet: the earliest is N = 0, due at nr > AGE
            self._expire_due = MAX_SKIPPED_AGE
            return
        skipped = self.skipped
        expired = []
        due = 2**63  # no key of the current chain: nothing will expire until it changes
        for key in skipped:
            if key[0] == dhr:
                if key[1] >= limit:
                    due = key[1] + MAX_SKIPPED_AGE  # expires once nr exceeds this
                    break
                expired.append(key)
        for key in expired:
            del skipped[key]
        self._expire_due = due

    def _drop_chains(self, count: int) -> None:
        dropped = self.old_chains[:count]
        del self.old_chains[:count]
        skipped = self.skipped
        if skipped:
            gone = {dh for dh, _ in dropped}
            for key in [k for k in skipped if k[0] in gone]:
                del skipped[key]

    # -- serialization helpers -----------------------------------------------------------

    def skipped_bytes(self) -> bytes:
        """Skipped keys as concatenated records: dh (32) | N (u32) | message key (64)."""
        return b"".join(_SKIPPED_REC.pack(dh, n, mk) for (dh, n), mk in self.skipped.items())

    @staticmethod
    def skipped_from_bytes(data: bytes) -> dict[tuple[bytes, int], bytes]:
        size = _SKIPPED_REC.size
        if len(data) % size or len(data) // size > MAX_STORED_SKIPPED:
            raise StateError("skipped-key records are malformed")
        out: dict[tuple[bytes, int], bytes] = {}
        for dh, n, mk in _SKIPPED_REC.iter_unpack(data):
            out[(dh, n)] = mk
        if len(out) * size != len(data):  # a repeated (dh, N): not a state we wrote
            raise StateError("skipped-key records are malformed")
        return out
