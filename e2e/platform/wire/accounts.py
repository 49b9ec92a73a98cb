"""Wire bodies of accounts, devices and routing (SPEC.md §10.7, §10.1, §10.10)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from e2e import xeddsa
from e2e.keys import X25519_LEN, KeyPair
from e2e.platform.directory import MAX_CERT_BYTES, MAX_LIST_BYTES
from e2e.platform.provisioning import ID_LEN, MAX_SEALED
from e2e.platform.wire.codec import (
    MAX_BATCH,
    Body,
    F,
    account_field,
    encode_body,
    key,
)

__all__ = [
    "ACCOUNT_LABEL",
    "account_signature_message",
    "RegisterAccount",
    "RegisterDevice",
    "PublishDevices",
    "DeleteAccount",
    "ProvisionSend",
    "ProvisionFetch",
    "Provisioned",
    "SetRecovery",
    "RecoveryFetch",
    "Recovered",
    "ListDevices",
    "DeviceList",
    "Route",
    "Designate",
]

ACCOUNT_LABEL: Final = b"E2E_RELAY_ACCOUNT_v1"
_KEY: Final = F(bytes, X25519_LEN, X25519_LEN)
_KIND: Final = F(int, max_int=1)
_DEVICES: Final = F(int, array=True, count=MAX_BATCH, max_int=2**32 - 1)
_CERTIFICATE: Final = F(bytes, 1, MAX_CERT_BYTES)
_LIST: Final = F(bytes, 1, MAX_LIST_BYTES)


def account_signature_message(name: bytes, kind: int, identity: bytes, tier: int) -> bytes:
    """What an account key signs to register its account (proof of possession)."""
    return ACCOUNT_LABEL + encode_body({0: 1, 1: name, 2: kind, 3: identity, 4: tier})


@dataclass(frozen=True, slots=True)
class RegisterAccount(Body):
    """``{1: name, 2: kind (0 customer, 1 business), 3: account identity key, 4: tier
    (0 free, 1 API; customers 0), 5: XEdDSA signature by the identity key over
    account_signature_message}``. Unauthenticated; idempotent for the same name and key."""

    name: bytes = account_field(1)
    kind: int = key(2, _KIND)
    identity: bytes = key(3, _KEY)
    tier: int = key(4, F(int, max_int=1))
    signature: bytes = key(5, F(bytes, 64, 64))

    @classmethod
    def create(cls, name: bytes, kind: int, identity: KeyPair, tier: int = 0,
               rng: Callable[[int], bytes] = os.urandom) -> RegisterAccount:  # fmt: skip
        msg = account_signature_message(name, kind, identity.public, tier)
        sig = xeddsa.sign(identity.private_bytes(), msg, rng(64))
        return cls(name, kind, identity.public, tier, sig)

    def verify(self) -> None:
        xeddsa.verify(
            self.identity,
            account_signature_message(self.name, self.kind, self.identity, self.tier),
            self.signature,
        )


@dataclass(frozen=True, slots=True)
class RegisterDevice(Body):
    """``{1: device certificate, 2?: signed device list}`` (SPEC §10.1); authenticated as the
    certified device. The certificate must be in the account's device list in force (with
    ``2``, a newer list the account key signed, adopted first)."""

    certificate: bytes = key(1, _CERTIFICATE)
    device_list: bytes | None = key(2, F(bytes, 1, MAX_LIST_BYTES, required=False), None)


@dataclass(frozen=True, slots=True)
class PublishDevices(Body):
    """``{1: signed device list}``: (an admin device) the account's next device list; the
    devices it drops are revoked (SPEC §10.1)."""

    device_list: bytes = key(1, _LIST)


@dataclass(frozen=True, slots=True)
class DeleteAccount(Body):
    """``{1: the account's last signed device list}`` (deleted, no device): (an admin
    device) delete the caller's account; its devices, mailboxes, prekeys and routes go, the
    list is logged as the account's tombstone and the name stays taken (SPEC §10.1)."""

    device_list: bytes = key(1, _LIST)


@dataclass(frozen=True, slots=True)
class ListDevices(Body):
    """``{1: account, 2?: chat}``. With ``chat`` (a customer) and ``account`` a business, only
    the business devices that receive that chat: its route plus the designated devices, or
    every device if the chat has no route (SPEC §10.10)."""

    account: bytes = account_field(1)
    chat: bytes | None = account_field(2, required=False)


@dataclass(frozen=True, slots=True)
class DeviceList(Body):
    """``{1: account identity key, 2: kind, 3: [device certificates, by device id],
    4: the account's signed device list (empty: none yet)}``."""

    identity: bytes = key(1, _KEY)
    kind: int = key(2, _KIND)
    certificates: tuple[bytes, ...] = key(
        3, F(bytes, 1, MAX_CERT_BYTES, array=True, count=MAX_BATCH)
    )
    device_list: bytes = key(4, F(bytes, 0, MAX_LIST_BYTES))


@dataclass(frozen=True, slots=True)
class Route(Body):
    """``{1: customer, 2: [device ids]}``: (a business device) the devices of the caller's
    business that receive the chat with ``customer``; an empty list removes the route."""

    customer: bytes = account_field(1)
    devices: tuple[int, ...] = key(2, _DEVICES)


@dataclass(frozen=True, slots=True)
class Designate(Body):
    """``{1: [device ids]}``: (a business device) devices of the caller's business that
    receive every routed chat (an archive, a supervisor); replaces the previous set."""

    devices: tuple[int, ...] = key(1, _DEVICES)


@dataclass(frozen=True, slots=True)
class ProvisionSend(Body):
    """``{1: provisioning id (16), 2: sealed grant}``: (an admin device) the grant for the
    new device that showed this id (SPEC §10.1, linking); one per id, kept 10 minutes."""

    provisioning_id: bytes = key(1, F(bytes, ID_LEN, ID_LEN))
    sealed: bytes = key(2, F(bytes, 1, MAX_SEALED))


@dataclass(frozen=True, slots=True)
class ProvisionFetch(Body):
    """``{1: provisioning id}`` (unauthenticated: the new device has no account yet)."""

    provisioning_id: bytes = key(1, F(bytes, ID_LEN, ID_LEN))


@dataclass(frozen=True, slots=True)
class Provisioned(Body):
    """``{1: sealed grant, or empty: none yet}``; a grant is handed out once."""

    sealed: bytes = key(1, F(bytes, 0, MAX_SEALED))


@dataclass(frozen=True, slots=True)
class SetRecovery(Body):
    """``{1: recovery auth key (Ed25519, 32), 2: the account key sealed under the recovery
    key}``: (an admin device) what recovers the account (SPEC §10.1, recovery)."""

    auth_key: bytes = key(1, F(bytes, 32, 32))
    sealed: bytes = key(2, F(bytes, 92, 92))


@dataclass(frozen=True, slots=True)
class RecoveryFetch(Body):
    """``{1: account, 2: time, 3: nonce (16), 4: Ed25519 signature by the recovery auth key
    over fetch_message}`` (unauthenticated: every device of the account is lost)."""

    account: bytes = account_field(1)
    time: int = key(2, F(int, max_int=2**63 - 1))
    nonce: bytes = key(3, F(bytes, 16, 16))
    signature: bytes = key(4, F(bytes, 64, 64))


@dataclass(frozen=True, slots=True)
class Recovered(Body):
    """``{1: sealed account key, 2: account identity key, 3: kind, 4: tier, 5: the signed
    device list in force (empty: none)}``."""

    sealed: bytes = key(1, F(bytes, 92, 92))
    identity: bytes = key(2, _KEY)
    kind: int = key(3, _KIND)
    tier: int = key(4, F(int, max_int=1))
    device_list: bytes = key(5, F(bytes, 0, MAX_LIST_BYTES))
