"""Device certificates: an account's identity key vouches for each of its devices (SPEC.md
§10.1).

Every device has its own identity key (its sessions are bound to it). The account identity
key signs, with XEdDSA::

    "E2E_DEVICE_v1" | CBOR {0: 1, 1: account, 2: device id, 3: device identity key}

A peer pins the account identity key (out of band or on first use) and accepts a device only
with a certificate that verifies under it, so the relay cannot add a device of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from e2e import xeddsa
from e2e.frame import Field, decode_map, encode_map
from e2e.keys import X25519_LEN, KeyPair, Rng
from e2e.platform.envelope import ENVELOPE_VERSION, check_account

__all__ = ["CERT_LABEL", "DeviceCertificate"]

CERT_LABEL: Final = b"E2E_DEVICE_v1"

_SCHEMA: Final = {
    0: Field(int),
    1: Field(bytes),
    2: Field(int),
    3: Field(bytes, X25519_LEN),
    4: Field(bytes, 64),
}


def _signed(account: bytes, device_id: int, identity: bytes) -> bytes:
    return CERT_LABEL + encode_map({0: 1, 1: account, 2: device_id, 3: identity})


@dataclass(frozen=True, slots=True)
class DeviceCertificate:
    account: bytes
    device_id: int
    identity: bytes
    signature: bytes

    @classmethod
    def issue(
        cls,
        account_identity: KeyPair,
        account: bytes,
        device_id: int,
        device_identity: bytes,
        rng: Rng = os.urandom,
    ) -> DeviceCertificate:
        msg = _signed(account, device_id, device_identity)
        sig = xeddsa.sign(account_identity.private_bytes(), msg, rng(64))
        return cls(account, device_id, device_identity, sig)

    def verify(self, account_identity: bytes) -> None:
        """:class:`~e2e.errors.InvalidSignature` unless signed by ``account_identity``."""
        xeddsa.verify(
            account_identity, _signed(self.account, self.device_id, self.identity), self.signature
        )

    def to_bytes(self) -> bytes:
        return encode_map(
            {
                0: ENVELOPE_VERSION,
                1: self.account,
                2: self.device_id,
                3: self.identity,
                4: self.signature,
            }
        )

    @classmethod
    def from_bytes(cls, raw: object) -> DeviceCertificate:
        obj = decode_map(raw, _SCHEMA, "device certificate", 1024, ENVELOPE_VERSION)
        return cls(check_account(obj[1]), obj[2], obj[3], obj[4])
