"""How a client device reaches the relay: one async interface, two implementations.

:class:`Transport` is what :class:`~e2e.client.device.Client` needs from the relay, for one
authenticated device. :class:`LocalRelay` serves it from an in-process
:class:`~e2e.platform.relay.Relay` (tests, benches); :mod:`e2e.client.http` serves it over
the relay service's wire API. Refusals arrive as the same typed errors either way
(:class:`~e2e.platform.policy.StaleDeviceList`, :class:`~e2e.platform.policy.WindowClosed`,
...).

Idempotency the client relies on (SPEC.md §10.7): registering the same account key or the
same certificate again succeeds; uploading a one-time prekey id the relay has seen before
is ignored; submitting a message id the relay already accepted from this account raises
:class:`~e2e.platform.policy.DuplicateSubmission`, which the client takes as "accepted".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
from collections.abc import Callable
from typing import Protocol, TypeVar

from e2e.errors import UnknownAccount
from e2e.keys import KeyPair
from e2e.platform.policy import MessageClass, Template
from e2e.platform.relay import Relay
from e2e.platform.wire import Receipt
from e2e.store import Address

__all__ = ["Transport", "Connector", "LocalRelay", "LocalTransport"]

_T = TypeVar("_T")


class Transport(Protocol):
    """The relay as one device sees it (every call is authenticated as that device)."""

    async def register_account(self, kind: str, identity: KeyPair, tier: int = 0) -> None:
        """Create this device's account with its identity key, signing the registration
        with it (idempotent for the same key). ``tier``: 0 free, 1 API (businesses)."""
        ...

    async def register_device(self, certificate: bytes) -> None:
        """Register a device certificate of this account (idempotent)."""
        ...

    async def upload_prekeys(self, one_time: list[bytes], last_resort: bytes) -> int:
        """Publish one-time bundles (ids seen before are ignored) and the last-resort
        bundle; returns how many one-time bundles the relay now holds for this device."""
        ...

    async def prekey_count(self) -> int:
        """How many one-time bundles the relay holds for this device."""
        ...

    async def fetch_devices(
        self, account: str, chat: str | None = None
    ) -> tuple[bytes, list[bytes]]:
        """``account``'s identity key and device certificates (with ``chat``: only the
        business devices routed that chat)."""
        ...

    async def fetch_bundle(self, device: Address) -> bytes:
        """One bundle of ``device`` (a one-time one while any is left)."""
        ...

    async def submit(self, envelopes: list[bytes]) -> Receipt:
        """Hand one logical message (all its device copies) to the relay."""
        ...

    async def fetch(self, wait_ms: int = 0) -> list[bytes]:
        """Every delivery waiting for this device, oldest first; with ``wait_ms``, a relay
        that can push holds the request until mail arrives or the wait ends."""
        ...

    async def ack(self, seqs: list[int]) -> None:
        """Drop these deliveries from this device's mailbox."""
        ...

    async def set_route(self, customer: str, devices: list[int]) -> None:
        """(Business) assign the chat with ``customer`` to these devices."""
        ...

    async def set_designated(self, devices: list[int]) -> None:
        """(Business) devices that receive every chat (an archive)."""
        ...

    async def control(self, op: str, business: str, on: bool) -> None:
        """(Customer) ``block`` / ``limit`` / ``opt_in`` a business."""
        ...

    async def report(self, report: bytes, block: bool) -> int:
        """(Customer) a spam report; returns the number of verified messages."""
        ...

    async def register_template(self, template_id: bytes, cls: MessageClass, text: bytes) -> None:
        """(Business) register a template's class and text (SPEC §10.4)."""
        ...

    async def templates(self, business: str) -> dict[bytes, Template]:
        """A business's registered templates by id (SPEC §10.2), to check message classes."""
        ...

    async def report_class(self, item: bytes) -> MessageClass:
        """(Customer) a class report of one message (SPEC §10.4); returns the class the relay
        confirmed its content has (the business is billed a penalty line)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...

    # -- key directory (SPEC §13.4) ---------------------------------------------------------

    async def log_head(self) -> bytes:
        """The key log's newest signed tree head (wire bytes)."""
        ...

    async def log_lookup(self, account: str, size: int) -> tuple[bytes, bytes]:
        """``account``'s newest log entry within ``size`` leaves and its inclusion proof."""
        ...

    async def log_consistency(self, size1: int, size2: int) -> bytes:
        """A consistency proof between two tree sizes."""
        ...

    async def log_entries(self, start: int, size: int) -> list[tuple[bytes, bytes]]:
        """Log entries from ``start`` (a page) with inclusion proofs in the tree of ``size``."""
        ...

    async def business_certificate(self, account: str) -> bytes | None:
        """The platform's certificate of business ``account`` as stored by the relay
        (None: none), unverified (SPEC §13.3)."""
        ...


#: Makes the transport of one device from its address and identity key pair (the key
#: authenticates its requests where the wire API asks for it).
Connector = Callable[[Address, KeyPair], Transport]


class LocalRelay:
    """An in-process relay with a :data:`Connector`. The relay runs on its own thread, as
    a remote relay would, so clients on the event loop never run its work."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="relay")

    def connect(self, addr: Address, identity: KeyPair) -> Transport:
        """The transport of device ``addr``."""
        return LocalTransport(self, addr)

    async def call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the relay's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        """Stop the relay's thread."""
        self._pool.shutdown(wait=True)


class LocalTransport(Transport):
    """:class:`Transport` of one device over a :class:`LocalRelay`."""

    def __init__(self, local: LocalRelay, addr: Address) -> None:
        self._local = local
        self._relay = local.relay
        self.addr = addr
        #: Fault injection for tests: called with the operation name after the relay
        #: processed the request and before the answer is returned.
        self.after: Callable[[str], None] | None = None

    async def _call(self, name: str, fn: Callable[[], _T]) -> _T:
        out = await self._local.call(fn)
        if self.after is not None:
            self.after(name)
        return out

    async def register_account(self, kind: str, identity: KeyPair, tier: int = 0) -> None:
        public = identity.public

        def run() -> None:
            try:
                self._relay.register_account(self.addr.account, kind, public)  # type: ignore[arg-type]
            except UnknownAccount:
                have, _ = self._relay.fetch_devices(self.addr.account)
                if not hmac.compare_digest(have, public):
                    raise
                # the same account key again: a retried registration

        await self._call("register_account", run)

    async def register_device(self, certificate: bytes) -> None:
        await self._call("register_device", lambda: self._relay.register_device(certificate))

    async def upload_prekeys(self, one_time: list[bytes], last_resort: bytes) -> int:
        def run() -> int:
            self._relay.upload_prekeys(self.addr.account, self.addr.device, one_time, last_resort)
            return self._relay.prekey_count(*self.addr.wire)

        return await self._call("upload_prekeys", run)

    async def prekey_count(self) -> int:
        return await self._call("prekey_count", lambda: self._relay.prekey_count(*self.addr.wire))

    async def fetch_devices(
        self, account: str, chat: str | None = None
    ) -> tuple[bytes, list[bytes]]:
        c = None if chat is None else chat.encode()
        return await self._call(
            "fetch_devices", lambda: self._relay.fetch_devices(account.encode(), c)
        )

    async def fetch_bundle(self, device: Address) -> bytes:
        return await self._call("fetch_bundle", lambda: self._relay.fetch_bundle(*device.wire))

    async def log_head(self) -> bytes:
        return await self._call("log_head", self._relay.log_head)

    async def log_lookup(self, account: str, size: int) -> tuple[bytes, bytes]:
        return await self._call(
            "log_lookup", lambda: self._relay.log_lookup(account.encode(), size)
        )

    async def log_consistency(self, size1: int, size2: int) -> bytes:
        return await self._call(
            "log_consistency", lambda: self._relay.log_consistency(size1, size2)
        )

    async def log_entries(self, start: int, size: int) -> list[tuple[bytes, bytes]]:
        return await self._call("log_entries", lambda: self._relay.log_entries(start, size))

    async def submit(self, envelopes: list[bytes]) -> Receipt:
        r = await self._call("submit", lambda: self._relay.submit(self.addr.wire, envelopes))
        return Receipt(r.message_id, r.received_at, r.copies, r.price)

    async def fetch(self, wait_ms: int = 0) -> list[bytes]:
        return await self._call("fetch", lambda: self._relay.fetch(self.addr.wire))

    async def ack(self, seqs: list[int]) -> None:
        await self._call("ack", lambda: self._relay.ack(self.addr.wire, seqs))

    async def set_route(self, customer: str, devices: list[int]) -> None:
        await self._call(
            "set_route", lambda: self._relay.set_route(self.addr.wire, customer.encode(), devices)
        )

    async def set_designated(self, devices: list[int]) -> None:
        await self._call(
            "set_designated", lambda: self._relay.set_designated(self.addr.wire, devices)
        )

    async def control(self, op: str, business: str, on: bool) -> None:
        fns = {"block": self._relay.block, "limit": self._relay.limit, "opt_in": self._relay.opt_in}
        fn = fns[op]
        await self._call("control", lambda: fn(self.addr.account, business.encode(), on))

    async def report(self, report: bytes, block: bool) -> int:
        out = await self._call(
            "report", lambda: self._relay.report(self.addr.account, report, block)
        )
        return len(out)

    async def business_certificate(self, account: str) -> bytes | None:
        return await self._call(
            "business_certificate", lambda: self._relay.business_certificate(account.encode())
        )

    async def register_template(self, template_id: bytes, cls: MessageClass, text: bytes) -> None:
        await self._call(
            "register_template",
            lambda: self._relay.register_template(self.addr.account, template_id, cls, text),
        )

    async def templates(self, business: str) -> dict[bytes, Template]:
        return await self._call("templates", lambda: self._relay.templates(business.encode()))

    async def report_class(self, item: bytes) -> MessageClass:
        out = await self._call(
            "report_class", lambda: self._relay.report_class(self.addr.account, item)
        )
        return out.content

    async def aclose(self) -> None:
        return None
