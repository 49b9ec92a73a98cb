"""A device that joins an existing account (SPEC.md §10.1): linked from a device the account
already has, or recovering an account whose devices are all lost.

Linking: :func:`begin_link` makes the new device's identity key and a link code (a random
provisioning id and a fresh ephemeral key); the application shows the code, an admin
device of the account reads it (:meth:`~e2e.client.device.Client.link_device`) and sends
the grant through the relay sealed to the ephemeral key; :meth:`LinkRequest.finish` waits
for it, opens it, checks it (the certificate is for this device's key, the device list the
account key signed carries it) and registers the device, which publishes that list.

Recovery: :func:`recover_account` proves the recovery key to the relay, opens the account
key sealed under it, and signs the account's next device list: this device its only one
(an admin), every device before it revoked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from dataclasses import dataclass, field

from e2e.client.device import Client, StoreOpener
from e2e.client.http import RelayClient
from e2e.client.lifecycle import Grant
from e2e.client.state import DeviceListHook, Profile
from e2e.errors import KeyMismatch, WireFailure
from e2e.keys import KeyPair, Rng
from e2e.platform.directory import ADMIN, DeviceCertificate, SignedDeviceList, check_signed
from e2e.platform.provisioning import ID_LEN, LinkCode, open_grant
from e2e.platform.recovery import RecoveryKey
from e2e.store import Store
from e2e.suite import DEFAULT, Suite

__all__ = ["LinkRequest", "begin_link", "recover_account"]

_KINDS = ("customer", "business")


@dataclass
class LinkRequest:
    """A new device waiting to be linked: show :attr:`text`, then :meth:`finish`."""

    relay: RelayClient
    store: Store
    code: LinkCode
    ephemeral: KeyPair = field(repr=False)
    pool: concurrent.futures.ThreadPoolExecutor = field(repr=False)
    rng: Rng = field(repr=False, default=os.urandom)

    @property
    def text(self) -> str:
        """The link code to show (a QR code or text the admin device reads)."""
        return self.code.text()

    async def finish(
        self,
        *,
        timeout: float = 120.0,
        poll: float = 0.5,
        prekeys: int = 20,
        hook: DeviceListHook | None = None,
        auto_receipts: bool = True,
    ) -> Client:
        """Wait (at most ``timeout`` s, polling the relay) for the admin device's grant,
        open and check it, and register this device. :class:`~e2e.errors.WireFailure` if
        no grant came; :class:`~e2e.errors.AuthenticationFailed` for one not sealed to
        this device; :class:`~e2e.errors.KeyMismatch` for one that is not for it."""
        deadline = time.monotonic() + timeout
        while True:
            sealed = await self.relay.provision_fetch(self.code.provisioning_id)
            if sealed:
                break
            if time.monotonic() >= deadline:
                raise WireFailure("no grant arrived for this link code")
            await asyncio.sleep(poll)
        grant = Grant.from_bytes(open_grant(self.code, self.ephemeral, sealed))
        return await Client._adopt(self.pool, self.store, self.relay.connect, grant,
                                   prekeys=prekeys, hook=hook, auto_receipts=auto_receipts,
                                   rng=self.rng)  # fmt: skip


async def begin_link(store: StoreOpener, relay: RelayClient, *, rng: Rng = os.urandom
                     ) -> LinkRequest:  # fmt: skip
    """Start linking a new device on ``store`` (a new store) to an account: its identity
    key and a link code (SPEC §10.1). Nothing is sent to the relay yet."""
    pool = Client._new_pool()
    st = await Client._open_store(pool, store)
    ident = await Client._new_identity(pool, st, rng)
    eph = KeyPair.generate(rng)
    return LinkRequest(relay, st, LinkCode(rng(ID_LEN), eph.public, ident), eph, pool, rng)


async def recover_account(
    store: StoreOpener,
    relay: RelayClient,
    name: str,
    recovery_key: str,
    *,
    suite: Suite = DEFAULT,
    prekeys: int = 20,
    hook: DeviceListHook | None = None,
    auto_receipts: bool = True,
    rng: Rng = os.urandom,
) -> Client:
    """Recover account ``name`` whose devices are all lost, with the recovery key shown when
    it was made (SPEC §10.1): this device (on a new ``store``) becomes its only device, an
    admin holding the account key; every device before it is revoked. A mistyped key is a
    :class:`~e2e.errors.DecodeError` before anything is sent; a wrong one is refused by the
    relay (:class:`~e2e.errors.Unauthenticated`, and after five failures in an hour
    :class:`~e2e.errors.RateLimited`)."""
    key = RecoveryKey.parse(recovery_key)
    account = name.encode()
    got = await relay.recovery_fetch(name, lambda t, n: key.prove(account, t, n))
    acct = key.open(account, got.sealed)
    if acct.public != got.identity:
        raise KeyMismatch("the relay serves another account key than the one recovered")
    current = check_signed(got.device_list, account, got.identity) if got.device_list else None
    pool = Client._new_pool()
    st = await Client._open_store(pool, store)
    ident = await Client._new_identity(pool, st, rng)
    device_id = 1 if current is None else max([*current.devices(), 0]) + 1
    serial = 1 if current is None else current.next_serial()
    cert = DeviceCertificate.issue(acct, account, device_id, ident, serial, ADMIN, rng)
    stones = [] if current is None else [*current.tombstones, *(c.serial for c in current.certs)]
    version = 1 if current is None else current.version + 1
    only = SignedDeviceList.sign(acct, account, version, [cert.to_bytes()], stones, rng=rng)
    profile = Profile(name, device_id, _KINDS[got.kind], suite, got.tier)
    grant = Grant(device_id, cert.to_bytes(), only.to_bytes(), acct.public, acct, profile)
    return await Client._adopt(pool, st, relay.connect, grant, prekeys=prekeys, hook=hook,
                               auto_receipts=auto_receipts, rng=rng)  # fmt: skip
