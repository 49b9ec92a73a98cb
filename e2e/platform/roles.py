"""Customers, businesses and their devices (SPEC.md §8.2).

An :class:`Account` (a :class:`Customer` or a :class:`Business`) has an account identity key
that certifies its devices; a business's devices are its agents. A :class:`Device` holds its
own identity key, prekeys and one pairwise :class:`~e2e.session.Session` per peer device.

Sending fans one logical message out to every device of the recipient and to the sender's
own other devices, each copy over its own session, as one batch the relay accepts or refuses
whole. If the relay answers :class:`~e2e.platform.policy.StaleDeviceList`, the device refreshes
both device lists (dropping sessions of removed devices) and retries. A refused send leaves
every session exactly as it was.
"""

from __future__ import annotations

import copy
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from e2e.errors import (
    AuthenticationFailed,
    CertificateError,
    DecodeError,
    DuplicateMessage,
    E2EError,
    EnvelopeMismatch,
    FrankingMismatch,
    KeyChangePending,
    PolicyError,
    StaleDeviceList,
    StateError,
    UntrustedDevice,
)
from e2e.fingerprint import SafetyNumber, safety_number
from e2e.frame import PrekeyFields, decode_message
from e2e.keys import KeyPair, Rng
from e2e.platform.certificates import BusinessIdentity, KeyChange, KeyChanges, verify_business
from e2e.platform.directory import DeviceCertificate
from e2e.platform.envelope import (
    FRANKING_KEY_LEN,
    MESSAGE_ID_LEN,
    Delivery,
    Envelope,
    Inner,
)
from e2e.platform.franking import MAX_REPORTED, Report, ReportItem, VerifiedMessage, commit
from e2e.platform.merkle import ConsistencyProof, InclusionProof, SignedTreeHead
from e2e.platform.policy import ClassCheck, MessageClass, check_class
from e2e.platform.relay import Receipt, Relay
from e2e.platform.transparency import DirectoryEntry, LogView, devices_hash
from e2e.prekeys import LocalPrekeys, PrekeyBundle
from e2e.session import Session
from e2e.suite import DEFAULT, Suite

__all__ = ["Message", "Device", "Account", "Customer", "Business", "SessionSink"]

Addr = tuple[bytes, int]
#: Called with (device, peer address, that peer's sessions, current first) after every change
#: (an empty list: the peer device is gone). Persist them here, e.g. in an e2e.store.
SessionSink = Callable[["Device", Addr, list[Session]], None]


@dataclass(frozen=True, slots=True, repr=False)
class Message:
    """One message as a device holds it (received, or sent by this account)."""

    conversation: bytes
    from_account: bytes
    from_device: int
    cls: MessageClass
    message_id: bytes
    body: bytes
    time: int
    outgoing: bool
    delivery: bytes = b""
    franking_key: bytes = b""
    template_id: bytes | None = None
    #: For a business message: the device's check of its declared class against its content
    #: (flagged, not refused, so the customer can see it and report it).
    class_check: ClassCheck | None = None

    def __repr__(self) -> str:
        return f"Message({self.cls.name}, id={self.message_id.hex()[:8]}, {len(self.body)} B)"

    @property
    def misdeclared(self) -> bool:
        return self.class_check is not None and not self.class_check.ok


def _clone(session: Session) -> Session:
    """An independent in-memory copy of a session (to restore after a refused operation)."""
    r = copy.copy(session.ratchet)
    r.skipped = dict(r.skipped)
    r.old_chains = list(r.old_chains)
    return Session(
        r, session.local_identity, session.remote_identity, session.base_key, session.pending
    )


class Device:
    """One device (a customer's phone, a business agent). Not thread-safe."""

    def __init__(
        self,
        account: Account,
        device_id: int,
        *,
        one_time: int = 10,
        suite: Suite = DEFAULT,
        rng: Rng = os.urandom,
        session_sink: SessionSink | None = None,
    ) -> None:
        self.account = account
        self.device_id = device_id
        self.rng = rng
        self.suite = suite
        self.identity = KeyPair.generate(rng)
        self.prekeys = LocalPrekeys.generate(self.identity, suite, one_time, rng)
        self.sessions: dict[Addr, list[Session]] = {}
        #: Verified device identity keys of each account this device talks to.
        self.peers: dict[bytes, dict[int, bytes]] = {}
        self.history: dict[bytes, list[Message]] = {}
        self.seen: set[tuple[bytes, bytes]] = set()
        self.session_sink = session_sink
        self.errors: dict[str, int] = {}
        #: The log head we last carried to each account.
        self._gossiped: dict[bytes, bytes] = {}
        #: Optional classifier of free text for :func:`check_class` (None: no opinion).
        self.classify: Callable[[bytes], MessageClass | None] | None = None

    def __repr__(self) -> str:
        return f"Device({self.account.name.decode(errors='replace')}/{self.device_id})"

    @property
    def addr(self) -> Addr:
        return (self.account.name, self.device_id)

    @property
    def relay(self) -> Relay:
        return self.account.relay

    # -- directory ------------------------------------------------------------------------

    def publish(self) -> None:
        cert = DeviceCertificate.issue(
            self.account.identity, self.account.name, self.device_id, self.identity.public, self.rng
        )
        self.account.certificates[self.device_id] = cert.to_bytes()
        self.account.published_version(self.relay.register_device(cert.to_bytes()))
        self.upload_prekeys()

    def upload_prekeys(self) -> None:
        pk = self.prekeys
        spk = pk.signed[max(pk.signed)]
        fresh_kem = [k for k in pk.kem.values() if not k.last_resort]
        bundles: list[bytes] = []
        for i, opk in enumerate(pk.one_time.values()):
            kem = fresh_kem[i] if i < len(fresh_kem) else None
            if kem is None:
                break
            bundles.append(
                PrekeyBundle(
                    self.suite,
                    self.identity.public,
                    spk.id,
                    spk.pair.public,
                    spk.signature,
                    opk.id,
                    opk.pair.public,
                    kem.id if kem else None,
                    kem.pair.public if kem else None,
                    kem.signature if kem else None,
                ).to_bytes()  # fmt: skip
            )
        last = pk.bundle(use_one_time=False).to_bytes()
        self.relay.upload_prekeys(self.account.name, self.device_id, bundles, last)

    def refresh(self, account: bytes) -> dict[int, bytes]:
        """Fetch and verify ``account``'s device list; drop sessions of removed devices."""
        identity, certs = self.relay.fetch_devices(account)
        # Nothing served is used before the key directory proves it (SPEC §13.4).
        self.account.verify_directory(account, identity, certs)
        pinned = self.account.trust(account, identity)
        devices: dict[int, bytes] = {}
        for raw in certs:
            cert = DeviceCertificate.from_bytes(raw)
            if cert.account != account:
                raise UntrustedDevice("certificate of another account")
            cert.verify(pinned)
            devices[cert.device_id] = cert.identity
        for addr in [a for a in self.sessions if a[0] == account and a[1] not in devices]:
            del self.sessions[addr]
            self._persist(addr)
        self.peers[account] = devices
        return devices

    def _devices(self, account: bytes) -> dict[int, bytes]:
        known = self.peers.get(account)
        return known if known is not None else self.refresh(account)

    def _peer_identity(self, addr: Addr) -> bytes:
        ident = self._devices(addr[0]).get(addr[1])
        if ident is None:
            ident = self.refresh(addr[0]).get(addr[1])
        if ident is None:
            raise UntrustedDevice("device not in its account's certified device list")
        return ident

    def _persist(self, addr: Addr) -> None:
        if self.session_sink is not None:
            self.session_sink(self, addr, list(self.sessions.get(addr, [])))

    # -- sending --------------------------------------------------------------------------

    def _dests(self, to_account: bytes) -> list[Addr]:
        own = [(self.account.name, d) for d in self._devices(self.account.name)]
        peer = [(to_account, d) for d in self._devices(to_account)]
        return sorted(peer) + sorted(a for a in own if a != self.addr)

    def _session_for(self, dest: Addr) -> Session:
        sessions = self.sessions.get(dest)
        if sessions:
            return sessions[0]
        identity = self._peer_identity(dest)
        bundle = PrekeyBundle.from_bytes(self.relay.fetch_bundle(*dest))
        if not hmac.compare_digest(bundle.identity_key, identity):
            raise UntrustedDevice("bundle identity differs from the certified device key")
        session = Session.initiate(
            self.identity, bundle, allowed_suites=(self.suite,), rng=self.rng
        )
        self.sessions[dest] = [session]
        return session

    def send(
        self,
        to_account: bytes,
        text: str | bytes,
        cls: MessageClass = MessageClass.SERVICE,
        template_id: bytes | None = None,
    ) -> Receipt:
        """Send one message to every device of ``to_account`` and to our other devices; the
        class and template id travel inside the frame and in the franking commitment."""
        body = text.encode() if isinstance(text, str) else text
        self.account.key_changes.check_send(to_account)
        for attempt in range(3):
            dests = self._dests(to_account)
            try:
                self.relay.precheck(self.addr, cls, to_account, dests)
                message_id = self.rng(MESSAGE_ID_LEN)
                fk = self.rng(FRANKING_KEY_LEN)
                # Our newest log head rides along whenever it changed since our last
                # message to this account (SPEC §13.4: split views show up at the peer).
                gossip = self.account.log.gossip()
                carry = b"" if self._gossiped.get(to_account) == gossip else gossip
                inner = Inner(
                    cls, self.account.name, to_account, message_id, fk, body, carry,
                    template_id=template_id,
                )  # fmt: skip
                padded = inner.to_padded()
                commitment = commit(
                    fk, cls, self.account.name, to_account, message_id, body, template_id
                )
                envs = []
                for dest in dests:
                    # Once a frame is made its message key is spent: a refused send below
                    # does not roll the session back (that would reuse the key).
                    frame = self._session_for(dest).encrypt(padded)
                    env = Envelope(
                        cls, self.account.name, self.device_id, to_account, dest[0], dest[1],
                        message_id, commitment, frame, template_id,
                    )  # fmt: skip
                    envs.append(env.to_bytes())
                for dest in dests:
                    self._persist(dest)
                receipt = self.relay.submit(self.addr, envs)
            except StaleDeviceList:
                if attempt == 2:
                    raise
                self.refresh(to_account)
                self.refresh(self.account.name)
                continue
            self.seen.add((self.account.name, message_id))
            self._gossiped[to_account] = gossip
            self._remember(
                Message(
                    to_account,
                    self.account.name,
                    self.device_id,
                    cls,
                    message_id,
                    body,
                    receipt.received_at,
                    True,
                )  # fmt: skip
            )
            return receipt
        raise PolicyError("device list kept changing")  # pragma: no cover

    def _remember(self, msg: Message) -> None:
        self.history.setdefault(msg.conversation, []).append(msg)

    # -- receiving ------------------------------------------------------------------------

    def receive(self, raw: bytes) -> Message:
        """Open one delivery. Raises an E2EError subclass (state unchanged) if it is bad,
        :class:`DuplicateMessage` if it was already received."""
        delivery = Delivery.from_bytes(raw)
        env = delivery.open_envelope()
        if env.dest != self.addr:
            raise EnvelopeMismatch("delivery addressed to another device")
        peer = env.sender
        identity = self._peer_identity(peer)
        parsed = decode_message(env.frame)
        sessions = self.sessions.get(peer, [])
        saved = [_clone(s) for s in sessions]
        pk = self.prekeys
        saved_pk = (
            set(pk.used_one_time), set(pk.used_kem), set(pk.last_resort_uses),
            dict(pk.one_time), dict(pk.kem),
        )  # fmt: skip
        try:
            session, plaintext, new = self._open(peer, identity, parsed.prekey, sessions, env.frame)
            inner = Inner.from_padded(plaintext)
            if not inner.matches(env):
                raise EnvelopeMismatch("envelope metadata differs from the sealed metadata")
            if (inner.from_account, inner.message_id) in self.seen:
                raise DuplicateMessage("message id already received")
            expected = commit(
                inner.franking_key, inner.cls, inner.from_account, inner.to_account,
                inner.message_id, inner.body, inner.template_id,
            )  # fmt: skip
            if not hmac.compare_digest(expected, env.commitment):
                raise FrankingMismatch("franking commitment does not match the message")
            if inner.log_head:
                self.account.check_peer_head(inner.log_head)
        except E2EError as exc:
            self.sessions[peer] = saved
            if not saved:
                del self.sessions[peer]
            (pk.used_one_time, pk.used_kem, pk.last_resort_uses, pk.one_time, pk.kem) = saved_pk
            name = type(exc).__name__
            self.errors[name] = self.errors.get(name, 0) + 1
            raise
        if new:
            self.sessions[peer] = [session, *sessions]
        elif sessions and sessions[0] is not session:
            # Reply on the session the peer last used: both ends converge on one.
            self.sessions[peer] = [session, *[s for s in sessions if s is not session]]
        self._persist(peer)
        self.seen.add((inner.from_account, inner.message_id))
        own = inner.from_account == self.account.name
        verdict = None
        if not own and self.relay.kind(inner.from_account) == "business":
            verdict = check_class(
                inner.cls, inner.template_id, inner.body,
                self.relay.templates(inner.from_account), self.classify,
            )  # fmt: skip
        msg = Message(
            inner.to_account if own else inner.from_account,
            inner.from_account, env.from_device, inner.cls, inner.message_id, inner.body,
            delivery.received_at, own, raw, inner.franking_key, inner.template_id, verdict,
        )  # fmt: skip
        self._remember(msg)
        return msg

    def _open(
        self,
        peer: Addr,
        identity: bytes,
        prekey: PrekeyFields | None,
        sessions: list[Session],
        frame: bytes,
    ) -> tuple[Session, bytes, bool]:
        if prekey is not None:
            for s in sessions:
                if s.base_key == prekey.base_key and s.remote_identity == prekey.identity_key:
                    return s, s.decrypt(frame), False
            if not hmac.compare_digest(prekey.identity_key, identity):
                raise UntrustedDevice("prekey message identity is not the sender's device key")
            session, pt = Session.respond(
                self.identity, self.prekeys, frame, allowed_suites=(self.suite,), rng=self.rng
            )
            return session, pt, True
        if not sessions:
            raise StateError("no session with this device")
        last: E2EError = AuthenticationFailed("no session opens this message")
        for s in sessions:
            if not hmac.compare_digest(s.remote_identity, identity):
                continue
            try:
                return s, s.decrypt(frame), False
            except DuplicateMessage:
                raise
            except E2EError as exc:
                last = exc
        raise last

    def sync(self, *, on_error: Callable[[bytes, E2EError], None] | None = None) -> list[Message]:
        """Fetch, open and acknowledge everything waiting. Duplicates are acknowledged and
        skipped; any other failure is acknowledged and passed to ``on_error`` (or raised)."""
        out: list[Message] = []
        for raw in self.relay.fetch(self.addr):
            seq = Delivery.from_bytes(raw).seq
            try:
                out.append(self.receive(raw))
            except DuplicateMessage:
                pass
            except E2EError as exc:
                self.relay.ack(self.addr, [seq])
                if on_error is None:
                    raise
                on_error(raw, exc)
                continue
            self.relay.ack(self.addr, [seq])
        return out

    def conversation(self, peer: bytes) -> list[Message]:
        return list(self.history.get(peer, []))


def _check_text(name: str) -> bytes:
    raw = name.encode()
    if not 1 <= len(raw) <= 64:
        raise DecodeError("account name must be 1 to 64 bytes")
    return raw


class Account:
    kind: str = ""

    def __init__(
        self,
        name: str,
        relay: Relay,
        *,
        rng: Rng = os.urandom,
        session_sink: SessionSink | None = None,
        log_key: bytes | None = None,
        platform_key: bytes | None = None,
        on_key_change: Callable[[KeyChange], None] | None = None,
    ) -> None:
        self.name = _check_text(name)
        self.relay = relay
        self.rng = rng
        self.identity = KeyPair.generate(rng)
        self.devices: dict[int, Device] = {}
        #: Account identity keys this account trusts (its own, pinned ones, verified ones).
        self.pinned: dict[bytes, bytes] = {self.name: self.identity.public}
        self.session_sink = session_sink
        self._next_device = 1
        #: The key directory as this account saw it; the log key is pinned here (shipped
        #: with the application; by default the relay's at creation time).
        self.log = LogView(relay.log_public_key if log_key is None else log_key)
        #: Platform key that certifies businesses (None: nothing shows as verified).
        self.platform_key = platform_key
        self.key_changes = KeyChanges(on_change=on_key_change)
        #: Our own device certificates and, per directory version, our device-list hash.
        self.certificates: dict[int, bytes] = {}
        self.published: dict[int, bytes] = {}
        self.published_version(
            relay.register_account(self.name, self.kind, self.identity.public)  # type: ignore[arg-type]
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name.decode(errors='replace')})"

    def add_device(self, *, one_time: int = 10, suite: Suite = DEFAULT) -> Device:
        device = Device(
            self,
            self._next_device,
            one_time=one_time,
            suite=suite,
            rng=self.rng,
            session_sink=self.session_sink,
        )
        self._next_device += 1
        device.publish()
        self.devices[device.device_id] = device
        return device

    def remove_device(self, device_id: int) -> None:
        self.certificates.pop(device_id, None)
        self.published_version(self.relay.remove_device(self.name, device_id))
        del self.devices[device_id]

    def pin(self, other: Account) -> None:
        """Trust ``other``'s identity key as verified out of band (a QR scan, a green tick)."""
        self.pinned[other.name] = other.identity.public
        self.key_changes.trusted[other.name] = other.identity.public

    # -- keys users can check (SPEC §13) ---------------------------------------------------

    def published_version(self, version: int) -> None:
        """Record that directory ``version`` of our account is our current device list."""
        self.published[version] = devices_hash(
            [self.certificates[d] for d in sorted(self.certificates)]
        )

    def _consistency(self, size1: int, size2: int) -> ConsistencyProof:
        return ConsistencyProof.from_bytes(self.relay.log_consistency(size1, size2))

    def log_head(self) -> SignedTreeHead:
        """Fetch the relay's newest tree head and accept it only if it is signed by the
        pinned log key and consistent with every head seen before."""
        head = SignedTreeHead.from_bytes(self.relay.log_head())
        self.log.check_head(head, self._consistency)
        return head

    def verify_directory(
        self, account: bytes, identity: bytes, certificates: list[bytes]
    ) -> DirectoryEntry:
        """Prove that ``identity`` and ``certificates`` (as the relay served them) are
        ``account``'s newest logged state; a :class:`~e2e.errors.KeyTransparencyError`
        otherwise, before anything is encrypted to them."""
        head = self.log_head()
        raw, proof = self.relay.log_lookup(account, head.size)
        return self.log.check_served(
            account, identity, certificates, raw, InclusionProof.from_bytes(proof), head
        )

    def trust(self, account: bytes, identity: bytes) -> bytes:
        """The identity key to use for ``account`` once the directory proved ``identity``:
        the first one is trusted; a different one is a key change the application must
        accept first (:class:`~e2e.errors.KeyChangePending`)."""
        pinned = self.pinned.get(account)
        if pinned is None:
            self.pinned[account] = identity
            self.key_changes.observe(account, identity)
            return identity
        if not hmac.compare_digest(pinned, identity):
            if account == self.name:
                raise UntrustedDevice("our own account key differs in the directory")
            self.key_changes.observe(account, identity)
            raise KeyChangePending("the account key changed; the application must accept it")
        return pinned

    def accept_key_change(self, account: bytes) -> None:
        """The application accepts ``account``'s new key: drop what was pinned and trust it."""
        change = self.key_changes.pending.get(account)
        if change is None:
            return
        self.key_changes.accept(account)
        self.pinned[account] = change.new
        for device in self.devices.values():
            device.peers.pop(account, None)

    def monitor(self) -> None:
        """Audit every log entry since the last audit: one under our name that we did not
        publish raises :class:`~e2e.errors.KeyMismatch` (a substituted key, a rogue device)."""
        head = self.log_head()
        entries = [
            (raw, InclusionProof.from_bytes(p))
            for raw, p in self.relay.log_entries(self.log.audited, head.size)
        ]
        self.log.audit(self.name, self.identity.public, self.published, entries)

    def check_peer_head(self, gossip: bytes) -> None:
        """A peer's log head from inside an end-to-end message: :class:`LogForked` if the
        relay showed the two of us different logs."""
        self.log.check_peer(gossip, self._consistency, self.log_head)

    def safety_number(self, other: bytes) -> SafetyNumber:
        """The safety number with ``other`` (its key as pinned) to compare out of band."""
        key = self.pinned.get(other)
        if key is None:
            raise UntrustedDevice("no verified key for this account yet")
        return safety_number(self.name, self.identity.public, other, key)

    def business_identity(self, other: bytes, now: int) -> BusinessIdentity:
        """Verified (with its certified name) or unverified; :class:`CertificateError` for a
        certificate that does not check out."""
        key = self.pinned.get(other)
        if key is None:
            raise UntrustedDevice("no verified key for this account yet")
        if self.platform_key is None:
            raise CertificateError("no platform key pinned")
        cert = self.relay.business_certificate(other)
        return verify_business(cert, self.platform_key, other, key, now)

    @property
    def device(self) -> Device:
        """The first device."""
        return self.devices[min(self.devices)]


class Customer(Account):
    kind = "customer"

    def block(self, business: Account, on: bool = True) -> None:
        self.relay.block(self.name, business.name, on)

    def limit(self, business: Account, on: bool = True) -> None:
        self.relay.limit(self.name, business.name, on)

    def opt_in(self, business: Account, on: bool = True) -> None:
        self.relay.opt_in(self.name, business.name, on)

    def report_class(self, message: Message) -> ClassCheck:
        """Report a received business message flagged as misdeclared: reveal it (delivery
        record, franking key, text) so the relay can verify and penalize the business."""
        item = ReportItem(message.delivery, message.franking_key, message.body)
        return self.relay.report_class(self.name, item.to_bytes())

    def report_spam(
        self, business: Account, device: Device | None = None, block: bool = True
    ) -> tuple[VerifiedMessage, ...]:
        """Reveal the last (at most 5) messages ``business`` sent us and report them."""
        dev = device or self.device
        received = [m for m in dev.conversation(business.name) if not m.outgoing and m.delivery][
            -MAX_REPORTED:
        ]
        items = tuple(ReportItem(m.delivery, m.franking_key, m.body) for m in received)
        report = Report(self.name, business.name, items)
        return self.relay.report(self.name, report.to_bytes(), block)


class Business(Account):
    kind = "business"

    @property
    def agents(self) -> list[Device]:
        return [self.devices[d] for d in sorted(self.devices)]
