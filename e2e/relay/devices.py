"""The relay's device directory (SPEC.md §10.1, §10.10): each account's signed device list
in force, the devices it lists (the only ones that can authenticate, receive mail or be
routed), device roles, and routing.

The relay never makes a device list: the account key signs each one, and the relay only
adopts a list that follows the one in force (a higher version, every tombstone kept, every
dropped device tombstoned, an admin left, at most ``limits.devices_per_account`` devices unless
it adds none, SPEC §10.13). Adopting a list deletes every device it drops
(certificate, prekeys, mailbox, routes) and logs the account's new state in the key log in
the same transaction. A certificate the list does not carry is refused everywhere: at
registration (:class:`~e2e.errors.Revoked` for a tombstoned one), and by authentication,
since only listed devices have a key the relay knows.

A mixin of :class:`~e2e.relay.service.RelayService`; its handlers run in the request's
transaction like every other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from e2e.errors import (
    Conflict,
    DecodeError,
    Forbidden,
    KeyMismatch,
    NotAllowed,
    Revoked,
    UnknownAccount,
)
from e2e.platform.directory import DeviceCertificate, SignedDeviceList, check_signed
from e2e.platform.envelope import check_account
from e2e.platform.wire import (
    DeleteAccount,
    Designate,
    DeviceList,
    ListDevices,
    Ok,
    PublishDevices,
    RegisterDevice,
    Route,
)
from e2e.relay.config import RelayConfig
from e2e.relay.store import BUSINESS, CUSTOMER, Account, Caller, Tx, account_of

__all__ = ["Devices", "chat_devices"]


def chat_devices(tx: Tx, business: bytes, customer: bytes, devices: set[int]) -> set[int]:
    """The business side of a chat: its route plus the designated devices (every device if
    the chat has no route), registered devices only."""
    route = tx.route(business, customer)
    if not route:
        return devices
    return (route | tx.designated(business)) & devices


class Devices:
    """Device registration, device lists, roles and routing."""

    #: Appends the account's new state to the key log (:class:`~e2e.relay.keydir.KeyDirectory`).
    _log_account: Callable[[Tx, bytes, bytes], None]
    #: The relay's settings (:class:`~e2e.relay.service.RelayService`'s).
    settings: RelayConfig

    @staticmethod
    def certificate_of(req: RegisterDevice) -> DeviceCertificate:
        return DeviceCertificate.from_bytes(req.certificate)

    def register_device(self, tx: Tx, caller: Caller, req: RegisterDevice) -> Ok:
        """A device confirms its certificate, which the account's device list in force
        must carry (a newer list signed by the account key, sent along, is adopted first)."""
        cert = DeviceCertificate.from_bytes(req.certificate)
        if (cert.account, cert.device_id) != caller:
            raise Forbidden("certificate of another device")
        acct = account_of(tx, cert.account)
        if req.device_list is not None:
            self._adopt(tx, acct, req.device_list, newer_only=False)
        stored = tx.device_list(acct.name)
        if stored is None:
            raise Forbidden("the account has no device list yet")
        current = SignedDeviceList.from_bytes(stored)
        try:
            current.certificate(req.certificate)
        except KeyMismatch:
            if current.revoked(cert.serial):
                raise Revoked("this certificate was revoked by its account") from None
            raise Forbidden("certificate not in the account's device list") from None
        return Ok()

    def publish_devices(self, tx: Tx, caller: Caller, req: PublishDevices) -> Ok:
        """(Admin) the account's next device list."""
        self._require_admin(tx, caller)
        self._adopt(tx, account_of(tx, caller[0]), req.device_list, newer_only=True)
        return Ok()

    def delete_account(self, tx: Tx, caller: Caller, req: DeleteAccount) -> Ok:
        """(Admin) delete the caller's account: its last device list (deleted, signed by
        the account key) is adopted and logged as the account's tombstone, every device
        goes with its mailbox and prekeys, and so do the routes, designations and recovery
        data; the name stays taken (a new registration of it is a conflict)."""
        self._require_admin(tx, caller)
        final = SignedDeviceList.from_bytes(req.device_list)
        if not final.deleted:
            raise DecodeError("an account is deleted with a deleted device list")
        self._adopt(tx, account_of(tx, caller[0]), req.device_list, newer_only=True)
        tx.forget_account(caller[0])
        return Ok()

    def _adopt(self, tx: Tx, acct: Account, raw: bytes, *, newer_only: bool) -> None:
        """Make ``raw`` the account's device list if it follows the one in force; apply it
        to the devices and log it. An older list is ignored (``newer_only``: refused)."""
        new = check_signed(raw, acct.name, acct.identity)
        stored = tx.device_list(acct.name)
        try:
            if stored is not None:
                old = SignedDeviceList.from_bytes(stored)
                if new.version <= old.version:
                    if stored == raw or not newer_only:
                        return  # a retry, or a device bringing an older list along
                    raise Conflict("a device list of this version or newer is in force")
                old.check_successor(new)
            else:
                new.check_admin()
        except KeyMismatch as exc:
            raise NotAllowed(str(exc)) from None
        held = tx.devices(acct.name)
        if len(new.certs) > max(self.settings.limits.devices_per_account, len(held)):
            raise NotAllowed("the account has as many devices as it may")
        listed = dict(zip((c.device_id for c in new.certs), new.certificates, strict=True))
        for device_id, (cert, _) in held.items():
            if listed.get(device_id) != cert:
                tx.delete_device(acct.name, device_id)  # revoked, or re-keyed
        for c, cert_raw in zip(new.certs, new.certificates, strict=True):
            if held.get(c.device_id, (b"",))[0] != cert_raw:
                tx.put_device(acct.name, c.device_id, cert_raw, c.identity)
        tx.put_device_list(acct.name, new.version, raw)
        self._log_account(tx, acct.name, acct.identity)

    @staticmethod
    def _require_admin(tx: Tx, caller: Caller) -> None:
        held = tx.devices(caller[0]).get(caller[1])
        if held is None:
            raise UnknownAccount("unknown device")
        if not DeviceCertificate.from_bytes(held[0]).admin:
            raise NotAllowed("only an admin device of the account may do this")

    def list_devices(self, tx: Tx, caller: Caller, req: ListDevices) -> DeviceList:
        """An account's devices; with a chat, the business devices routed to it -- only to a
        party of that chat (its customer, or the business itself): who serves whom is not
        another device's to learn (SPEC §10.6)."""
        acct = account_of(tx, req.account)
        devices = tx.devices(req.account)
        if req.chat is not None and acct.kind == BUSINESS:
            if caller[0] not in (req.chat, req.account):
                raise Forbidden("the routing of another account's chat")
            keep = chat_devices(tx, req.account, req.chat, set(devices))
            devices = {d: v for d, v in devices.items() if d in keep}
        certs = tuple(c for c, _ in devices.values())
        return DeviceList(acct.identity, acct.kind, certs, tx.device_list(req.account) or b"")

    def _business_caller(self, tx: Tx, caller: Caller, devices: Sequence[int]) -> None:
        if account_of(tx, caller[0]).kind != BUSINESS:
            raise NotAllowed("only a business routes its chats")
        self._require_admin(tx, caller)
        registered = tx.devices(caller[0])
        for d in devices:
            if d not in registered:  # registered = listed by the account's device list
                raise UnknownAccount("unknown device")

    def set_route(self, tx: Tx, caller: Caller, req: Route) -> Ok:
        """(Admin) the devices of the caller's business that receive one customer's chat."""
        self._business_caller(tx, caller, req.devices)
        if account_of(tx, check_account(req.customer)).kind != CUSTOMER:
            raise NotAllowed("a business routes chats with customers")
        tx.set_route(caller[0], req.customer, req.devices)
        return Ok()

    def designate(self, tx: Tx, caller: Caller, req: Designate) -> Ok:
        """(Admin) the devices of the caller's business that receive every routed chat."""
        self._business_caller(tx, caller, req.devices)
        tx.set_designated(caller[0], req.devices)
        return Ok()
