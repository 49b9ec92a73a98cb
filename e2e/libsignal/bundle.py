"""libsignal prekey bundles and the responder's prekeys (SPEC.md §15.2).

A libsignal bundle carries a registration id, a device id, an optional one-time prekey, a
signed prekey with an XEdDSA signature over its serialized form (0x05 || key) and, for
version 4, a Kyber-1024 prekey with an XEdDSA signature over 0x08 || key, all under the
identity key. :class:`LibsignalPrekeys` is an in-memory :class:`~e2e.prekeys.PrekeySource`
that makes such bundles from e2e key pairs (Kyber keys are generated as ML-KEM-1024, see
:mod:`e2e.libsignal.kyber`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from e2e import xeddsa
from e2e.errors import DecodeError, InvalidKey
from e2e.keys import KemKeyPair, KeyPair, Rng
from e2e.libsignal.kyber import parse_public, serialize_public
from e2e.libsignal.wire import parse_ec, serialize_ec
from e2e.prekeys import KemPrekey, OneTimePrekey, PrekeyTable, SignedPrekey

__all__ = ["LibsignalBundle", "LibsignalPrekeys", "check_uint32"]

_MAX_U32 = 2**32 - 1


def check_uint32(value: object, what: str) -> int:
    """``value`` if it is an int (not a bool) in 0..2^32-1, libsignal's ids and registration
    ids on the wire; :class:`DecodeError` naming ``what`` otherwise."""
    if type(value) is not int or not 0 <= value <= _MAX_U32:
        raise DecodeError(f"{what} must be an int in 0..2^32-1")
    return value


@dataclass(frozen=True, slots=True)
class LibsignalBundle:
    """A libsignal PreKeyBundle; every key is in libsignal's serialized form (type byte first)."""

    registration_id: int
    device_id: int
    prekey_id: int | None
    prekey: bytes | None
    signed_prekey_id: int
    signed_prekey: bytes
    signed_prekey_signature: bytes
    identity_key: bytes
    kyber_prekey_id: int | None = None
    kyber_prekey: bytes | None = None
    kyber_prekey_signature: bytes | None = None

    def verify(self) -> None:
        """Check every field before a session exists: ids and the registration id are
        uint32 (DecodeError), keys have their shapes (InvalidKey), both signatures verify
        (InvalidSignature)."""
        check_uint32(self.registration_id, "bundle registration id")
        check_uint32(self.device_id, "bundle device id")
        check_uint32(self.signed_prekey_id, "bundle signed prekey id")
        for value, what in (
            (self.prekey_id, "bundle one-time prekey id"),
            (self.kyber_prekey_id, "bundle Kyber prekey id"),
        ):
            if value is not None:
                check_uint32(value, what)
        if type(self.signed_prekey_signature) is not bytes:
            raise DecodeError("bundle signed prekey signature must be bytes")
        if (
            self.kyber_prekey_signature is not None
            and type(self.kyber_prekey_signature) is not bytes
        ):
            raise DecodeError("bundle Kyber prekey signature must be bytes")
        identity = parse_ec(self.identity_key)
        parse_ec(self.signed_prekey)
        if self.prekey is not None:
            parse_ec(self.prekey)
        if (self.prekey is None) != (self.prekey_id is None):
            raise InvalidKey("bundle has a one-time prekey without id or an id without key")
        xeddsa.verify(identity, self.signed_prekey, self.signed_prekey_signature)
        if self.kyber_prekey is not None:
            if self.kyber_prekey_id is None or self.kyber_prekey_signature is None:
                raise InvalidKey("bundle's Kyber prekey has no id or signature")
            parse_public(self.kyber_prekey)
            xeddsa.verify(identity, self.kyber_prekey, self.kyber_prekey_signature)

    def to_json(self) -> dict[str, object]:
        """The bundle as a JSON object (hex bytes), the shape the interop harness speaks."""
        out: dict[str, object] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = value.hex() if isinstance(value, bytes) else value
        return out

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> LibsignalBundle:
        """The inverse of :meth:`to_json`."""
        values: dict[str, object] = {}
        for name in cls.__slots__:
            value = obj.get(name)
            values[name] = bytes.fromhex(value) if isinstance(value, str) else value
        return cls(**values)  # type: ignore[arg-type]


@dataclass(slots=True, repr=False)
class LibsignalPrekeys(PrekeyTable):
    """An in-memory responder key set: identity, registration id and prekeys by id, with
    :class:`~e2e.prekeys.PrekeyTable`'s lookups and spending rules."""

    KEM_NAME: ClassVar[str] = "Kyber"

    registration_id: int

    def __repr__(self) -> str:
        return f"LibsignalPrekeys(registration_id={self.registration_id})"

    @classmethod
    def generate(
        cls,
        identity: KeyPair,
        registration_id: int,
        one_time: int = 5,
        kyber: bool = True,
        rng: Rng = os.urandom,
    ) -> LibsignalPrekeys:
        """A signed prekey, ``one_time`` one-time prekeys and (``kyber``) as many one-time
        Kyber prekeys plus a last-resort one."""
        keys = cls(identity, registration_id)
        keys.add_signed_prekey(rng)
        for _ in range(one_time):
            keys.add_one_time_prekey(rng)
        if kyber:
            for _ in range(one_time):
                keys.add_kyber_prekey(False, rng)
            keys.add_kyber_prekey(True, rng)
        return keys

    def add_signed_prekey(self, rng: Rng = os.urandom) -> SignedPrekey:
        pair = KeyPair.generate(rng)
        sig = xeddsa.sign(self.identity.private_bytes(), serialize_ec(pair.public), rng(64))
        spk = SignedPrekey(self._id(), pair, sig)
        self.signed[spk.id] = spk
        return spk

    def add_one_time_prekey(self, rng: Rng = os.urandom) -> OneTimePrekey:
        opk = OneTimePrekey(self._id(), KeyPair.generate(rng))
        self.one_time[opk.id] = opk
        return opk

    def add_kyber_prekey(self, last_resort: bool, rng: Rng = os.urandom) -> KemPrekey:
        pair = KemKeyPair.generate(rng)
        msg = serialize_public(pair.public)
        sig = xeddsa.sign(self.identity.private_bytes(), msg, rng(64))
        kem = KemPrekey(self._id(), pair, sig, last_resort)
        self.kem[kem.id] = kem
        return kem

    def bundle(self, kyber: bool = True, use_one_time: bool = True) -> LibsignalBundle:
        """A bundle: the newest signed prekey, an unused one-time prekey if any, and (``kyber``)
        an unused one-time Kyber prekey or else the last-resort one."""
        spk = self.signed[max(self.signed)]
        opk = next(iter(self.one_time.values()), None) if use_one_time else None
        kem: KemPrekey | None = None
        if kyber:
            kem = self._pick_kem(use_one_time)
            if kem is None:
                raise InvalidKey("no Kyber prekey left")
        return LibsignalBundle(
            registration_id=self.registration_id,
            device_id=1,
            prekey_id=opk.id if opk else None,
            prekey=serialize_ec(opk.pair.public) if opk else None,
            signed_prekey_id=spk.id,
            signed_prekey=serialize_ec(spk.pair.public),
            signed_prekey_signature=spk.signature,
            identity_key=serialize_ec(self.identity.public),
            kyber_prekey_id=kem.id if kem else None,
            kyber_prekey=serialize_public(kem.pair.public) if kem else None,
            kyber_prekey_signature=kem.signature if kem else None,
        )
