"""A device's part in its account's lifecycle (SPEC.md §10.1, §10.10): certifying new
devices into the account's signed device list and revoking them, on an admin device (the
devices holding the account key). A part of :class:`~e2e.client.device.Client`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import cbor2

from e2e.client import contacts, state
from e2e.client.records import dump
from e2e.client.state import Profile
from e2e.client.trust import Trust
from e2e.errors import DecodeError, E2EError, KeyMismatch, NotAllowed, StateError, UnknownAccount
from e2e.keys import KeyPair, Rng
from e2e.platform.directory import ADMIN, AGENT, DeviceCertificate, SignedDeviceList
from e2e.platform.provisioning import LinkCode, seal_grant
from e2e.platform.recovery import RecoveryKey
from e2e.store import StoreTransaction
from e2e.suite import get_suite

__all__ = ["Lifecycle", "Grant"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Grant:
    """What an admin device gives a new device of its account: its id and certificate, the
    account's next device list (carrying it, signed, not yet published: the new device's
    registration publishes it), the account key's public half and, for a new admin, the
    account key itself; with the account's name, kind, tier and suite for a linked device.
    Its ``repr`` shows no key."""

    device_id: int
    certificate: bytes
    device_list: bytes
    account_identity: bytes
    account_key: KeyPair | None = field(repr=False)
    profile: Profile | None = None

    def to_bytes(self) -> bytes:
        """``{0: 1, 1: account, 2: device id, 3: kind, 4: tier, 5: suite, 6: certificate,
        7: device list, 8: account identity key, 9?: account key secret | public}``."""
        p = self.profile
        assert p is not None  # noqa: S101 - a linking grant names its account
        key = {} if self.account_key is None else {
            9: self.account_key.private_bytes() + self.account_key.public}  # fmt: skip
        return dump({0: 1, 1: p.account, 2: self.device_id, 3: p.kind, 4: p.tier,
                     5: p.suite.id, 6: self.certificate, 7: self.device_list,
                     8: self.account_identity, **key})  # fmt: skip

    @classmethod
    def from_bytes(cls, raw: bytes) -> Grant:
        """Inverse of :meth:`to_bytes`; :class:`DecodeError` for anything else (whatever it
        carries is checked again as the new device adopts it)."""
        try:
            obj = cbor2.loads(raw)
            key = obj.get(9)
            pair = None if key is None else KeyPair.from_stored(key[:32], key[32:])
            profile = Profile(obj[1], obj[2], obj[3], get_suite(obj[5]), obj[4])
            return cls(obj[2], obj[6], obj[7], obj[8], pair, profile)
        except E2EError:
            raise
        except Exception:  # any malformed grant
            raise DecodeError("malformed grant") from None


def _admin_keys(tx: StoreTransaction, me: str) -> tuple[KeyPair, SignedDeviceList]:
    """The account key and the account's device list in force, as an admin device holds
    them (:class:`StateError` on a device without the account key)."""
    acct = state.account_key(tx)
    current = contacts.device_list(tx, me)
    if acct is None or current is None:
        raise StateError("this device does not hold the account key")
    return acct, current


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
            acct, current = _admin_keys(tx, me)
            device_id = max(state.allocate_device_id(tx), max(current.devices(), default=0) + 1)
            cert = DeviceCertificate.issue(acct, me.encode(), device_id, identity,
                                           current.next_serial(), role, self.rng)  # fmt: skip
            nxt = SignedDeviceList.sign(acct, me.encode(), current.version + 1,
                                        [*current.certificates, cert.to_bytes()],
                                        current.tombstones, rng=self.rng)  # fmt: skip
            return Grant(device_id, cert.to_bytes(), nxt.to_bytes(), acct.public,
                         acct if role == ADMIN else None, self.profile)  # fmt: skip

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
            acct, current = _admin_keys(tx, me)
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

    async def delete_account(self) -> None:
        """(Admin) delete this account (SPEC §10.1): the account key signs its last device
        list (deleted: no device, every serial tombstoned), which the relay logs as the
        account's tombstone; every device of the account, its mailboxes, prekeys and
        routes go, and the name stays taken. Peers find the account deleted
        (:class:`~e2e.errors.UnknownAccount`). This device can reach the relay no more."""
        await self._own_list()
        me = self.profile.account

        def sign(tx: StoreTransaction) -> bytes:
            acct, current = _admin_keys(tx, me)
            stones = [*current.tombstones, *(c.serial for c in current.certs)]
            final = SignedDeviceList.sign(acct, me.encode(), current.version + 1, [], stones,
                                          deleted=True, rng=self.rng)  # fmt: skip
            return final.to_bytes()

        await self.transport.delete_account(await self._tx(sign))

    async def link_device(self, code: str, *, role: int = AGENT) -> int:
        """(Admin) link the new device that shows ``code`` (its link code, read from its
        screen, never through the relay): certify its key with ``role`` into the account's
        next device list and send it the grant sealed to its ephemeral key through the
        relay's provisioning mailbox (SPEC §10.1). Returns its device id; the new device's
        registration publishes the list."""
        link = LinkCode.parse(code)
        grant = await self._certify(link.identity, role)
        sealed = seal_grant(link, grant.to_bytes(), self.rng)
        await self.transport.provision_send(link.provisioning_id, sealed)
        return grant.device_id

    async def setup_recovery(self) -> str:
        """(Admin) make a new recovery key for this account and give the relay what it
        needs to check it and the account key sealed under it (SPEC §10.1, recovery);
        returns the key's text to show the user once. A new key replaces the one before."""
        me = self.profile.account.encode()
        key = RecoveryKey.generate(self.rng)
        acct = await self._tx(state.account_key)
        if acct is None:
            raise StateError("this device does not hold the account key")
        await self.transport.set_recovery(key.auth_public(me), key.seal(me, acct, self.rng))
        return key.text()
