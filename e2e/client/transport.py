"""How a client device reaches the relay (SPEC.md §10.10): one async interface.

:class:`Transport` is what :class:`~e2e.client.device.Client` needs from the relay, for one
authenticated device; :class:`~e2e.client.http.HttpTransport` implements it over the relay
service's wire API (SPEC §10.7), whether the service runs in another process
(:class:`~e2e.client.http.RelayClient`) or in this one
(:meth:`~e2e.client.http.RelayClient.in_process`). Refusals arrive as the typed errors of
:mod:`e2e.errors` (:class:`~e2e.errors.StaleDeviceList`, :class:`~e2e.errors.WindowClosed`,
...).

Idempotency the client relies on (SPEC.md §10.7): registering the same account key or the
same certificate again succeeds; uploading a one-time prekey id the relay has seen before
is ignored; submitting a batch the relay already accepted from this account returns the
first receipt, and another batch under an accepted message id raises
:class:`~e2e.errors.DuplicateSubmission`, which the client takes as "accepted".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from e2e.attachment.transfer import BlobTransport
from e2e.keys import KeyPair
from e2e.platform.policy import MessageClass, Template
from e2e.platform.templates import CatalogueEntry, TemplateSpec
from e2e.platform.wire import BillLines, Notices, Receipt, ReportVerdict, TierInfo
from e2e.store import Address

__all__ = ["Transport", "Connector"]


class Transport(Protocol):
    """The relay as one device sees it (every call is authenticated as that device)."""

    async def register_account(self, kind: str, identity: KeyPair, tier: int = 0) -> None:
        """Create this device's account with its identity key, signing the registration
        with it (idempotent for the same key). ``tier``: 0 free, 1 API (businesses)."""
        ...

    async def register_device(self, certificate: bytes, device_list: bytes | None = None) -> None:
        """Register this device's certificate, which the account's device list in force (or
        ``device_list``, a newer one the account key signed) must carry (idempotent)."""
        ...

    async def publish_devices(self, device_list: bytes) -> None:
        """(Admin) publish the account's next signed device list: the devices it drops are
        revoked, their mailboxes and prekeys go (logged, SPEC §10.1, §13.4)."""
        ...

    async def provision_send(self, provisioning_id: bytes, sealed: bytes) -> None:
        """(Admin) send a new device its sealed grant (SPEC §10.1, linking)."""
        ...

    async def set_recovery(self, auth_key: bytes, sealed: bytes) -> None:
        """(Admin) set the account's recovery data (SPEC §10.1, recovery)."""
        ...

    async def delete_account(self, device_list: bytes) -> None:
        """(Admin) delete this account with its last, deleted device list (SPEC §10.1)."""
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
    ) -> tuple[bytes, list[bytes], bytes]:
        """``account``'s identity key, device certificates (with ``chat``: only the business
        devices routed that chat) and its signed device list."""
        ...

    async def fetch_bundle(self, device: Address) -> bytes:
        """One bundle of ``device`` (a one-time one while any is left)."""
        ...

    async def precheck(self, cls: MessageClass, to: str, dests: list[Address],
                       template_id: bytes | None = None) -> None:  # fmt: skip
        """The policy refusal a submission of this class to these devices would get (a
        :class:`~e2e.errors.PolicyError`, :class:`~e2e.errors.StaleDeviceList`), changing
        nothing at the relay."""
        ...

    async def submit(self, envelopes: list[bytes], entry: bytes | None = None) -> Receipt:
        """Hand one logical message (all its device copies) to the relay, with an ad's
        entry token (SPEC §17.4) if ``entry``."""
        ...

    async def resend(self, envelopes: list[bytes]) -> Receipt:
        """Hand the relay copies of a message it accepted before from this device, for
        devices of the chat that ask for it again (SPEC §10.11): not billed, no policy
        applied again; the relay checks the message id and its commitment against the
        accepted one and the devices against the chat."""
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

    async def report_verdict(self, report: bytes, block: bool) -> ReportVerdict:
        """(Customer) :meth:`report`, answering the relay's whole verdict (the messages it
        verified, and the reported attachments whose stored blob is the franked one)."""
        ...

    def blobs(self) -> BlobTransport:
        """The relay's blob store as this device (SPEC §10.12, §16.8): uploads and downloads
        of attachment blobs."""
        ...

    async def register_template(self, template_id: bytes, cls: MessageClass, text: bytes) -> None:
        """(Business) register a template's class and text (SPEC §10.4)."""
        ...

    async def templates(self, business: str) -> dict[bytes, Template]:
        """A business's registered templates by id (SPEC §10.2), to check message classes."""
        ...

    async def register_catalogue(self, spec: TemplateSpec) -> CatalogueEntry:
        """(Business) register a template version in the catalogue (SPEC §17.1)."""
        ...

    async def catalogue(self, business: str) -> list[CatalogueEntry]:
        """A business's template catalogue, every version with its review state."""
        ...

    async def tier(self) -> TierInfo:
        """(Business) its messaging tier and quality (SPEC §17.3)."""
        ...

    async def notices(self, after: int) -> Notices:
        """(Business) its customers' controls and spam reports after position ``after``
        (SPEC §17.2), oldest first."""
        ...

    async def report_class(self, item: bytes) -> MessageClass:
        """(Customer) a class report of one message (SPEC §10.4); returns the class the relay
        confirmed its content has (the business is billed a penalty line)."""
        ...

    async def bill(self) -> BillLines:
        """(Business) the caller's billing summary."""
        ...

    async def window_open(self, peer: str) -> bool:
        """Is the 24 h window of this account's chat with ``peer`` open?"""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...

    # -- key directory (SPEC §13.4) ---------------------------------------------------------

    async def log_head(self) -> bytes:
        """The key log's newest signed tree head (wire bytes)."""
        ...

    async def log_vrf_key(self) -> tuple[bytes, bytes]:
        """The relay's VRF public key and the log key's signature vouching for it (SPEC
        §13.5)."""
        ...

    async def log_open(self, index: int, size: int) -> tuple[bytes, bytes]:
        """The opening record of a leaf of this account, and its inclusion proof in the
        tree of ``size`` (the monitor, SPEC §13.5)."""
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
