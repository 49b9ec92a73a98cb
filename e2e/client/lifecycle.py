"""A device's part in its account's lifecycle (SPEC.md §10.1, §10.10): certifying new
devices into the account's signed device list and revoking them, on an admin device (the
devices holding the account key). A part of :class:`~e2e.client.device.Client`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from e2e.client import contacts, state
from e2e.client.trust import Trust
from e2e.errors import KeyMismatch, NotAllowed, StateError, UnknownAccount
from e2e.keys import KeyPair, Rng
from e2e.platform.directory import ADMIN, DeviceCertificate, SignedDeviceList
from e2e.store import StoreTransaction

__all__ = ["Lifecycle", "Grant"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, repr=False)
class Grant:
    """What an admin device gives a new device of its account: its id and certificate, the
    account's next device list (carrying it, signed, not yet published: the new device's
    registration publishes it), the account key's public half and, for a new admin, the
    account key itself."""

    device_id: int
    certificate: bytes
    device_list: bytes
    account_identity: bytes
    account_key: KeyPair | None

    def __repr__(self) -> str:
        return f"Grant(device {self.device_id})"


class Lifecycle(Trust):
    """Certifying and revoking devices, for :class:`~e2e.client.device.Client` (which
    supplies the attributes below); on top of what the device trusts."""

    rng: Rng

    async def _own_list(self) -> None:
        """Bring this device's copy of its account's device list up to the one in force
        (proven in the key log when a log key is pinned)."""
        await self.refresh(self.profile.account)

    async def _certify(self, identity: bytes, role: int) -> Grant:
        """(Admin) certify the device key ``identity`` with ``role`` under a new device id
        and serial, in the account's next device list."""
        await self._own_list()
        me = self.profile.account

        def certify(tx: StoreTransaction) -> Grant:
            acct = state.account_key(tx)
            current = contacts.device_list(tx, me)
            if acct is None or current is None:
                raise StateError("this device does not hold the account key")
            device_id = max(state.allocate_device_id(tx), max(current.devices(), default=0) + 1)
            cert = DeviceCertificate.issue(acct, me.encode(), device_id, identity,
                                           current.next_serial(), role, self.rng)  # fmt: skip
            nxt = SignedDeviceList.sign(acct, me.encode(), current.version + 1,
                                        [*current.certificates, cert.to_bytes()],
                                        current.tombstones, rng=self.rng)  # fmt: skip
            return Grant(device_id, cert.to_bytes(), nxt.to_bytes(), acct.public,
                         acct if role == ADMIN else None)  # fmt: skip

        return await self._tx(certify)

    async def revoke_device(self, device_id: int) -> None:
        """(Admin) revoke device ``device_id`` of this account: the account's next device
        list drops it and tombstones its certificate's serial for ever; once the relay has
        it, that device can no longer authenticate or register again, its mailbox and
        prekeys are gone, and peers' next sends to the account are refused until they drop
        it (SPEC §10.1). The last admin device cannot be revoked (:class:`NotAllowed`)."""
        await self._own_list()
        me = self.profile.account

        def sign(tx: StoreTransaction) -> bytes:
            acct = state.account_key(tx)
            current = contacts.device_list(tx, me)
            if acct is None or current is None:
                raise StateError("this device does not hold the account key")
            cert = current.devices().get(device_id)
            if cert is None:
                raise UnknownAccount("no such device in the account's device list")
            keep = [raw for raw, c in zip(current.certificates, current.certs, strict=True)
                    if c.device_id != device_id]  # fmt: skip
            stones = [*current.tombstones, cert.serial]
            nxt = SignedDeviceList.sign(acct, me.encode(), current.version + 1, keep, stones,
                                        rng=self.rng)  # fmt: skip
            try:
                current.check_successor(nxt)
            except KeyMismatch as exc:
                raise NotAllowed(str(exc)) from None
            return nxt.to_bytes()

        await self.transport.publish_devices(await self._tx(sign))
        if device_id != self.profile.device:
            await self._own_list()
