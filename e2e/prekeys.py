"""Identity, signed, one-time and ML-KEM prekeys, and prekey bundles (SPEC.md §2).

A bundle is what the relay publishes for a device. Its signatures are XEdDSA signatures
by the identity key over:

"E2E_PQXDH_v1" | suite id (1 byte) | Encode_EC(SPK), and the same prefix with
Encode_KEM(PQSPK) for the KEM prekey. The prefix keeps these signatures from ever passing as
libsignal's (which sign Encode_EC(SPK) alone), so a signed prekey cannot be replayed between
an e2e bundle and a libsignal one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Final, Protocol

from e2e import xeddsa
from e2e.constants import FRAME_VERSION, MAX_BUNDLE_BYTES
from e2e.errors import DecodeError, InvalidKey, PrekeyReused, UnknownPrekey
from e2e.frame import Field, K, T, decode_map, encode_map
from e2e.keys import KEM_PUBLIC_LEN, KemKeyPair, KeyPair, Rng, encode_ec, encode_kem
from e2e.suite import DEFAULT, Suite, get_suite

__all__ = [
    "PQ_SIGNATURE_PREFIX",
    "signed_prekey_message",
    "kem_prekey_message",
    "PrekeyBundle",
    "SignedPrekey",
    "OneTimePrekey",
    "KemPrekey",
    "PrekeySource",
    "PrekeyTable",
    "LocalPrekeys",
]

PQ_SIGNATURE_PREFIX: Final = b"E2E_PQXDH_v1"
SIGNATURE_LEN: Final = 64


def signed_prekey_message(suite: Suite, spk: bytes) -> bytes:
    """The bytes the identity key signs for a signed prekey."""
    return PQ_SIGNATURE_PREFIX + bytes([suite.id]) + encode_ec(spk)


def kem_prekey_message(suite: Suite, kem_pk: bytes) -> bytes:
    """The bytes the identity key signs for an ML-KEM prekey."""
    return PQ_SIGNATURE_PREFIX + bytes([suite.id]) + encode_kem(kem_pk)


_BUNDLE_SCHEMA: Final = {
    K.VERSION: Field(int),
    K.SUITE: Field(int),
    K.TYPE: Field(int),
    K.IDENTITY: Field(bytes, 32),
    K.SPK_ID: Field(int),
    K.OPK_ID: Field(int, required=False),
    K.KEM_ID: Field(int, required=False),
    K.SPK: Field(bytes, 32),
    K.SPK_SIG: Field(bytes, SIGNATURE_LEN),
    K.OPK: Field(bytes, 32, required=False),
    K.KEM_PK: Field(bytes, KEM_PUBLIC_LEN, required=False),
    K.KEM_SIG: Field(bytes, SIGNATURE_LEN, required=False),
}


@dataclass(frozen=True, slots=True)
class PrekeyBundle:
    """A device's published keys. Decoding checks shape; :meth:`verify` checks signatures."""

    suite: Suite
    identity_key: bytes
    spk_id: int
    spk: bytes
    spk_signature: bytes
    opk_id: int | None = None
    opk: bytes | None = None
    kem_id: int | None = None
    kem_pk: bytes | None = None
    kem_signature: bytes | None = None

    @classmethod
    def from_keys(
        cls,
        suite: Suite,
        identity_key: bytes,
        spk: SignedPrekey,
        opk: OneTimePrekey | None,
        kem: KemPrekey | None,
    ) -> PrekeyBundle:
        """The bundle publishing these (already signed) prekeys."""
        return cls(
            suite,
            identity_key,
            spk.id,
            spk.pair.public,
            spk.signature,
            opk.id if opk else None,
            opk.pair.public if opk else None,
            kem.id if kem else None,
            kem.pair.public if kem else None,
            kem.signature if kem else None,
        )

    def verify(self) -> None:
        """Raise :class:`~e2e.errors.InvalidSignature` unless every signature verifies
        (:class:`~e2e.errors.InvalidKey` if the bundle has no KEM prekey to verify)."""
        xeddsa.verify(
            self.identity_key, signed_prekey_message(self.suite, self.spk), self.spk_signature
        )
        if self.kem_pk is None or self.kem_signature is None:
            raise InvalidKey("PQXDH bundle has no KEM prekey")
        xeddsa.verify(
            self.identity_key, kem_prekey_message(self.suite, self.kem_pk), self.kem_signature
        )

    def to_bytes(self) -> bytes:
        fields: dict[int, int | bytes] = {
            K.VERSION: FRAME_VERSION,
            K.SUITE: self.suite.id,
            K.TYPE: T.BUNDLE,
            K.IDENTITY: self.identity_key,
            K.SPK_ID: self.spk_id,
        }
        if self.opk_id is not None:
            fields[K.OPK_ID] = self.opk_id
        if self.kem_id is not None:
            fields[K.KEM_ID] = self.kem_id
        fields[K.SPK] = self.spk
        fields[K.SPK_SIG] = self.spk_signature
        if self.opk is not None:
            fields[K.OPK] = self.opk
        if self.kem_pk is not None and self.kem_signature is not None:
            fields[K.KEM_PK] = self.kem_pk
            fields[K.KEM_SIG] = self.kem_signature
        return encode_map(fields)

    @classmethod
    def from_bytes(cls, raw: object) -> PrekeyBundle:
        """Strictly decode a bundle (shape only; call :meth:`verify` before use)."""
        obj = decode_map(raw, _BUNDLE_SCHEMA, "prekey bundle", MAX_BUNDLE_BYTES)
        suite = get_suite(obj[K.SUITE])
        if obj[K.TYPE] != T.BUNDLE:
            raise DecodeError("not a prekey bundle")
        if (K.OPK_ID in obj) != (K.OPK in obj):
            raise DecodeError("prekey bundle one-time prekey fields are incomplete")
        if K.KEM_ID not in obj or K.KEM_PK not in obj or K.KEM_SIG not in obj:
            raise DecodeError("prekey bundle lacks its KEM prekey fields")
        return cls(
            suite,
            obj[K.IDENTITY],
            obj[K.SPK_ID],
            obj[K.SPK],
            obj[K.SPK_SIG],
            obj.get(K.OPK_ID),
            obj.get(K.OPK),
            obj.get(K.KEM_ID),
            obj.get(K.KEM_PK),
            obj.get(K.KEM_SIG),
        )


@dataclass(frozen=True, slots=True)
class SignedPrekey:
    id: int
    pair: KeyPair = field(repr=False)
    signature: bytes


@dataclass(frozen=True, slots=True)
class OneTimePrekey:
    id: int
    pair: KeyPair = field(repr=False)


@dataclass(frozen=True, slots=True)
class KemPrekey:
    id: int
    pair: KemKeyPair = field(repr=False)
    signature: bytes
    last_resort: bool


class PrekeySource(Protocol):
    """What a responder needs from its key store. Lookups never consume; ``mark_used`` does.

    Lookups raise :class:`UnknownPrekey` for an id it never held and :class:`PrekeyReused`
    for a one-time key already used or a last-resort KEM key already used with ``base_key``.
    """

    def signed_prekey(self, spk_id: int) -> KeyPair: ...

    def one_time_prekey(self, opk_id: int) -> KeyPair: ...

    def kem_prekey(self, kem_id: int, base_key: bytes) -> KemKeyPair: ...

    def mark_used(self, opk_id: int | None, kem_id: int | None, base_key: bytes) -> None: ...


@dataclass(slots=True, repr=False)
class PrekeyTable:
    """An in-memory :class:`PrekeySource`: an identity and its prekeys by id, with the
    lookups and the spending rules every in-memory key set shares.

    Lookups never consume; :meth:`mark_used` removes a one-time prekey and retires a
    one-time KEM prekey (a last-resort KEM prekey is only refused again with the same base
    key). Subclasses add generation and their bundle format.
    """

    #: The KEM's name in error messages.
    KEM_NAME: ClassVar[str] = "KEM"

    identity: KeyPair
    signed: dict[int, SignedPrekey] = field(default_factory=dict, kw_only=True)
    one_time: dict[int, OneTimePrekey] = field(default_factory=dict, kw_only=True)
    kem: dict[int, KemPrekey] = field(default_factory=dict, kw_only=True)
    used_one_time: set[int] = field(default_factory=set, kw_only=True)
    used_kem: set[int] = field(default_factory=set, kw_only=True)
    last_resort_uses: set[tuple[int, bytes]] = field(default_factory=set, kw_only=True)
    next_id: int = field(default=1, kw_only=True)

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def _pick_kem(self, use_one_time: bool) -> KemPrekey | None:
        """The KEM prekey for a bundle: an unused one-time one (with ``use_one_time``), else
        the last-resort one, else any one-time one; None without any."""
        fresh = [k for k in self.kem.values() if not k.last_resort]
        resort = [k for k in self.kem.values() if k.last_resort]
        pool = (fresh if use_one_time else []) + resort + fresh
        return pool[0] if pool else None

    # PrekeySource
    def signed_prekey(self, spk_id: int) -> KeyPair:
        spk = self.signed.get(spk_id)
        if spk is None:
            raise UnknownPrekey("unknown signed prekey id")
        return spk.pair

    def one_time_prekey(self, opk_id: int) -> KeyPair:
        if opk_id in self.used_one_time:
            raise PrekeyReused("one-time prekey already used")
        opk = self.one_time.get(opk_id)
        if opk is None:
            raise UnknownPrekey("unknown one-time prekey id")
        return opk.pair

    def kem_prekey(self, kem_id: int, base_key: bytes) -> KemKeyPair:
        if kem_id in self.used_kem or (kem_id, base_key) in self.last_resort_uses:
            raise PrekeyReused(f"{self.KEM_NAME} prekey already used")
        kem = self.kem.get(kem_id)
        if kem is None:
            raise UnknownPrekey(f"unknown {self.KEM_NAME} prekey id")
        return kem.pair

    def mark_used(self, opk_id: int | None, kem_id: int | None, base_key: bytes) -> None:
        if opk_id is not None:
            self.used_one_time.add(opk_id)
            self.one_time.pop(opk_id, None)
        if kem_id is not None:
            kem = self.kem.get(kem_id)
            if kem is not None and kem.last_resort:
                self.last_resort_uses.add((kem_id, base_key))
            else:
                self.used_kem.add(kem_id)
                self.kem.pop(kem_id, None)


@dataclass(slots=True, repr=False)
class LocalPrekeys(PrekeyTable):
    """An in-memory :class:`PrekeySource` of e2e prekeys, with generation of fresh ones."""

    suite: Suite = DEFAULT

    def add_signed_prekey(self, rng: Rng = os.urandom) -> SignedPrekey:
        pair = KeyPair.generate(rng)
        msg = signed_prekey_message(self.suite, pair.public)
        spk = SignedPrekey(
            self._id(), pair, xeddsa.sign(self.identity.private_bytes(), msg, rng(64))
        )
        self.signed[spk.id] = spk
        return spk

    def add_one_time_prekeys(self, count: int, rng: Rng = os.urandom) -> list[OneTimePrekey]:
        made = [OneTimePrekey(self._id(), KeyPair.generate(rng)) for _ in range(count)]
        self.one_time.update((p.id, p) for p in made)
        return made

    def add_kem_prekey(self, last_resort: bool, rng: Rng = os.urandom) -> KemPrekey:
        pair = KemKeyPair.generate(rng)
        msg = kem_prekey_message(self.suite, pair.public)
        sig = xeddsa.sign(self.identity.private_bytes(), msg, rng(64))
        kem = KemPrekey(self._id(), pair, sig, last_resort)
        self.kem[kem.id] = kem
        return kem

    @classmethod
    def generate(
        cls, identity: KeyPair, suite: Suite = DEFAULT, one_time: int = 5, rng: Rng = os.urandom
    ) -> LocalPrekeys:
        """A fresh set: one signed prekey, ``one_time`` one-time prekeys, ``one_time``
        one-time KEM prekeys and one last-resort KEM prekey."""
        keys = cls(identity, suite)
        keys.add_signed_prekey(rng)
        keys.add_one_time_prekeys(one_time, rng)
        for _ in range(one_time):
            keys.add_kem_prekey(False, rng)
        keys.add_kem_prekey(True, rng)
        return keys

    def bundle(self, use_one_time: bool = True) -> PrekeyBundle:
        """A bundle with the newest signed prekey, an unused one-time prekey if any (and
        ``use_one_time``), and an unused one-time KEM prekey or else the last-resort one."""
        spk = self.signed[max(self.signed)]
        opk = next(
            (p for i, p in self.one_time.items() if use_one_time and i not in self.used_one_time),
            None,
        )
        kem = self._pick_kem(use_one_time)
        return PrekeyBundle.from_keys(self.suite, self.identity.public, spk, opk, kem)

    def used_ids(self) -> Iterable[int]:
        return sorted(self.used_one_time | self.used_kem)
