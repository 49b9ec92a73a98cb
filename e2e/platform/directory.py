"""Device certificates and the account-signed device list (SPEC.md §10.1).

Every device has its own identity key (its sessions are bound to it). The account identity
key certifies each device with XEdDSA, giving it a *serial* (a number the account never
gives twice) and a *role*::

    "E2E_DEVICE_v2" | CBOR {0: 2, 1: account, 2: device id, 3: device identity key,
                            4: serial, 5: role (1 admin, 2 agent)}

and signs, for every change, the whole *device list*: a version that only grows, the
certificates in force, and the *tombstones* (serials of every certificate it revoked, kept
for ever)::

    "E2E_DEVICE_LIST_v1" | CBOR {0: 1, 1: account, 2: version, 3: certificates,
                                 4: tombstones, 5: deleted}

A peer pins the account key and accepts a device only if a device list signed by it lists
that certificate; the relay stores the newest list and refuses every certificate it does not
list (:class:`~e2e.errors.Revoked` for a tombstoned one). A device list can be replaced only
by a later version that keeps every tombstone and tombstones every certificate it drops
(:meth:`SignedDeviceList.check_successor`), so a removed device stays removed: the relay cannot
bring it back with an older list, and no signed list can list it again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from e2e import xeddsa
from e2e.errors import DecodeError, InvalidSignature, KeyMismatch
from e2e.frame import Field, decode_map, encode_map
from e2e.keys import X25519_LEN, KeyPair, Rng
from e2e.platform.envelope import check_account

__all__ = [
    "CERT_LABEL",
    "LIST_LABEL",
    "ADMIN",
    "AGENT",
    "MAX_DEVICES",
    "MAX_TOMBSTONES",
    "MAX_LIST_BYTES",
    "DeviceCertificate",
    "SignedDeviceList",
    "check_signed",
]

CERT_LABEL: Final = b"E2E_DEVICE_v2"
LIST_LABEL: Final = b"E2E_DEVICE_LIST_v1"
CERT_VERSION: Final = 2
LIST_VERSION: Final = 1
#: Roles a certificate gives: an admin holds the account key (it certifies devices, signs
#: device lists, routes chats); an agent only sends and receives.
ADMIN: Final = 1
AGENT: Final = 2
#: Most devices one list holds, and most tombstones it keeps.
MAX_DEVICES: Final = 64
MAX_TOMBSTONES: Final = 4096
MAX_CERT_BYTES: Final = 1024
#: Largest signed device list: MAX_DEVICES certificates and MAX_TOMBSTONES serials.
MAX_LIST_BYTES: Final = 128 + MAX_DEVICES * (2 + MAX_CERT_BYTES) + 8 * MAX_TOMBSTONES
_MAX_SERIAL: Final = 2**63 - 1

_CERT_SCHEMA: Final = {
    0: Field(int),
    1: Field(bytes),
    2: Field(int, max_int=2**32 - 1),
    3: Field(bytes, X25519_LEN),
    4: Field(int, max_int=_MAX_SERIAL),
    5: Field(int, max_int=AGENT),
    6: Field(bytes, 64),
}
_LIST_SCHEMA: Final = {
    0: Field(int),
    1: Field(bytes),
    2: Field(int, max_int=_MAX_SERIAL),
    3: Field(bytes),
    4: Field(bytes),
    5: Field(int, max_int=1),
    6: Field(bytes, 64),
}


@dataclass(frozen=True, slots=True)
class DeviceCertificate:
    """The account key's statement that ``identity`` is device ``device_id`` of ``account``,
    with serial ``serial`` and role ``role`` (:data:`ADMIN` or :data:`AGENT`)."""

    account: bytes
    device_id: int
    identity: bytes
    serial: int
    role: int
    signature: bytes

    def _fields(self) -> dict[int, int | bytes]:
        return {0: CERT_VERSION, 1: self.account, 2: self.device_id, 3: self.identity,
                4: self.serial, 5: self.role}  # fmt: skip

    @classmethod
    def issue(
        cls,
        account_identity: KeyPair,
        account: bytes,
        device_id: int,
        device_identity: bytes,
        serial: int = 1,
        role: int = ADMIN,
        rng: Rng = os.urandom,
    ) -> DeviceCertificate:
        if role not in (ADMIN, AGENT) or not 1 <= serial <= _MAX_SERIAL:
            raise DecodeError("a certificate has a serial >= 1 and the role admin or agent")
        unsigned = cls(account, device_id, device_identity, serial, role, b"")
        msg = CERT_LABEL + encode_map(unsigned._fields())
        sig = xeddsa.sign(account_identity.private_bytes(), msg, rng(64))
        return cls(account, device_id, device_identity, serial, role, sig)

    @property
    def admin(self) -> bool:
        return self.role == ADMIN

    def verify(self, account_identity: bytes) -> None:
        """:class:`~e2e.errors.InvalidSignature` unless signed by ``account_identity``."""
        xeddsa.verify(account_identity, CERT_LABEL + encode_map(self._fields()), self.signature)

    def to_bytes(self) -> bytes:
        return encode_map({**self._fields(), 6: self.signature})

    @classmethod
    def from_bytes(cls, raw: object) -> DeviceCertificate:
        obj = decode_map(raw, _CERT_SCHEMA, "device certificate", MAX_CERT_BYTES, CERT_VERSION)
        if obj[5] not in (ADMIN, AGENT) or obj[4] < 1:
            raise DecodeError("device certificate: serial >= 1, role admin or agent")
        return cls(check_account(obj[1]), obj[2], obj[3], obj[4], obj[5], obj[6])


def _pack(certs: Iterable[bytes]) -> bytes:
    return b"".join(len(c).to_bytes(2, "big") + c for c in certs)


def _unpack(raw: bytes) -> tuple[bytes, ...]:
    out, pos = [], 0
    while pos < len(raw):
        if pos + 2 > len(raw):
            raise DecodeError("device list: certificates truncated")
        n = int.from_bytes(raw[pos : pos + 2], "big")
        if n == 0 or pos + 2 + n > len(raw):
            raise DecodeError("device list: certificates truncated")
        out.append(raw[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SignedDeviceList:
    """Version ``version`` of ``account``'s devices, signed by the account key: the
    certificates in force (by device id) and the serials revoked for ever. ``deleted``: the
    account was deleted (no certificates; the last list it will have)."""

    account: bytes
    version: int
    certificates: tuple[bytes, ...]
    tombstones: tuple[int, ...]
    deleted: bool
    signature: bytes
    #: The certificates decoded (made by :meth:`from_bytes` / :meth:`sign`).
    certs: tuple[DeviceCertificate, ...] = ()

    def _fields(self) -> dict[int, int | bytes]:
        return {0: LIST_VERSION, 1: self.account, 2: self.version,
                3: _pack(self.certificates),
                4: b"".join(s.to_bytes(8, "big") for s in self.tombstones),
                5: int(self.deleted)}  # fmt: skip

    @classmethod
    def sign(
        cls,
        account_identity: KeyPair,
        account: bytes,
        version: int,
        certificates: Iterable[bytes],
        tombstones: Iterable[int] = (),
        deleted: bool = False,
        rng: Rng = os.urandom,
    ) -> SignedDeviceList:
        """Sign a device list (certificates sorted by device id, tombstones ascending)."""
        certs = sorted((DeviceCertificate.from_bytes(c) for c in certificates),
                       key=lambda c: c.device_id)  # fmt: skip
        unsigned = cls(account, version, tuple(c.to_bytes() for c in certs),
                       tuple(sorted(set(tombstones))), deleted, b"")  # fmt: skip
        sig = xeddsa.sign(account_identity.private_bytes(),
                          LIST_LABEL + encode_map(unsigned._fields()), rng(64))  # fmt: skip
        return cls.from_bytes(encode_map({**unsigned._fields(), 6: sig}))

    def to_bytes(self) -> bytes:
        return encode_map({**self._fields(), 6: self.signature})

    @classmethod
    def from_bytes(cls, raw: object) -> SignedDeviceList:
        """Decode and check the list's own rules (each certificate of this account, ids and
        serials each once, none of them a tombstone, no device in a deleted account's
        list); the signature is :meth:`verify`'s."""
        obj = decode_map(raw, _LIST_SCHEMA, "device list", MAX_LIST_BYTES, LIST_VERSION)
        account = check_account(obj[1])
        raw_certs = _unpack(obj[3])
        if len(obj[4]) % 8 or len(obj[4]) > 8 * MAX_TOMBSTONES or len(raw_certs) > MAX_DEVICES:
            raise DecodeError("device list: too many devices or tombstones")
        stones = tuple(int.from_bytes(obj[4][i : i + 8], "big") for i in range(0, len(obj[4]), 8))
        if list(stones) != sorted(set(stones)):
            raise DecodeError("device list: tombstones not ascending")
        certs = tuple(DeviceCertificate.from_bytes(c) for c in raw_certs)
        ids = [c.device_id for c in certs]
        serials = {c.serial for c in certs}
        if any(c.account != account for c in certs) or ids != sorted(set(ids)):
            raise DecodeError("device list: certificates of another account, or not by device id")
        if len(serials) != len(certs) or serials & set(stones):
            raise DecodeError("device list: a serial listed twice, or listed and revoked")
        if obj[2] < 1 or (obj[5] and certs):
            raise DecodeError("device list: version 0, or devices in a deleted account")
        return cls(account, obj[2], raw_certs, stones, bool(obj[5]), obj[6], certs)

    def verify(self, account_identity: bytes) -> None:
        """The account key signed the list and every certificate in it
        (:class:`~e2e.errors.InvalidSignature` otherwise)."""
        xeddsa.verify(account_identity, LIST_LABEL + encode_map(self._fields()), self.signature)
        for c in self.certs:
            c.verify(account_identity)

    def devices(self) -> dict[int, DeviceCertificate]:
        """The devices in force: {device id: certificate}."""
        return {c.device_id: c for c in self.certs}

    def certificate(self, raw: bytes) -> DeviceCertificate:
        """The listed certificate ``raw`` (:class:`KeyMismatch` if it is not listed)."""
        for listed, cert in zip(self.certificates, self.certs, strict=True):
            if listed == raw:
                return cert
        raise KeyMismatch("certificate not in the account's device list")

    def revoked(self, serial: int) -> bool:
        return serial in set(self.tombstones)

    def next_serial(self) -> int:
        """A serial no certificate of this account has had (as far as this list says)."""
        return max([0, *self.tombstones, *(c.serial for c in self.certs)]) + 1

    def check_successor(self, new: SignedDeviceList) -> None:
        """``new`` may replace this list: same account, a higher version, every tombstone
        kept, every certificate it drops tombstoned, at least one admin left (unless the
        account is deleted), and this one not a deleted account's.
        :class:`~e2e.errors.KeyMismatch` otherwise."""
        if new.account != self.account or new.version <= self.version:
            raise KeyMismatch("a device list must follow the newest one with a higher version")
        if self.deleted:
            raise KeyMismatch("the account was deleted")
        kept = set(new.tombstones)
        if not set(self.tombstones) <= kept:
            raise KeyMismatch("a device list dropped a tombstone")
        listed = {c.serial for c in new.certs}
        if any(c.serial not in listed and c.serial not in kept for c in self.certs):
            raise KeyMismatch("a device list dropped a device without revoking it")
        new.check_admin()

    def check_admin(self) -> None:
        """A live account's list names at least one admin device."""
        if not self.deleted and not any(c.admin for c in self.certs):
            raise KeyMismatch("a device list without an admin device")


def check_signed(raw: bytes, account: bytes, identity: bytes) -> SignedDeviceList:
    """``raw`` decoded as ``account``'s device list and verified under its key; any failure
    is :class:`~e2e.errors.InvalidSignature` or :class:`~e2e.errors.DecodeError`."""
    dl = SignedDeviceList.from_bytes(raw)
    if dl.account != account:
        raise InvalidSignature("device list of another account")
    dl.verify(identity)
    return dl
