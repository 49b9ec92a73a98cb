"""What the relay does with each request, as functions of records in one transaction
(SPEC.md §10.7, §10.8).

:class:`RelayService` holds no conversation state of its own: every decision reads the records
it needs through a :class:`~e2e.relay.store.Tx`, applies the pure rules of
:mod:`e2e.platform.policy`, and writes the outcome in the same transaction. A refused request
raises a typed error before anything is committed, so it changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from e2e.errors import (
    CertificateError,
    Conflict,
    DecodeError,
    DuplicateSubmission,
    E2EError,
    Forbidden,
    InvalidSignature,
    MisdeclaredClass,
    NotAllowed,
    RateLimited,
    ReportRejected,
    StaleDeviceList,
    Unauthenticated,
    UnknownAccount,
)
from e2e.keys import check_x25519_public
from e2e.platform.adservice import ChatView
from e2e.platform.certificates import BusinessCertificate
from e2e.platform.directory import DeviceCertificate
from e2e.platform.envelope import Delivery, Envelope, check_account
from e2e.platform.franking import (
    MAX_REPORTED,
    Report,
    ReportItem,
    VerifiedMessage,
    relay_tag,
    verify_class_report,
    verify_item,
)
from e2e.platform.merkle import LogSigner, TreeHead
from e2e.platform.policy import (
    ChatState,
    MessageClass,
    PolicyConfig,
    Template,
    Tier,
    billable,
    billed_price,
    opens_window,
)
from e2e.platform.transparency import DirectoryEntry, KeyLog, devices_hash
from e2e.platform.wire import (
    AUTH_SKEW,
    MAX_LOG_ENTRIES,
    MAX_TEMPLATES,
    Ack,
    AuthToken,
    BillLines,
    BusinessCert,
    BusinessCertQuery,
    ClaimedPrekey,
    ClaimPrekey,
    ClassVerdict,
    Control,
    Designate,
    DeviceList,
    Fetch,
    ListDevices,
    ListTemplates,
    LogConsistency,
    LogConsistencyQuery,
    LogEntries,
    LogEntriesQuery,
    LogEntry,
    LogHead,
    LogLookup,
    Mailbox,
    Ok,
    Precheck,
    PrekeyCount,
    Receipt,
    RegisterAccount,
    RegisterDevice,
    RegisterTemplate,
    RemoveDevice,
    ReportVerdict,
    Route,
    Submit,
    SubmitClassReport,
    SubmitReport,
    TemplateList,
    UploadPrekeys,
    WindowQuery,
    WindowState,
)
from e2e.prekeys import PrekeyBundle
from e2e.relay.secrets import SecretSealer
from e2e.relay.store import Account, FrankingKey, RelayStore, SeenSubmission, Tx

__all__ = ["RelayService", "Caller", "CUSTOMER", "BUSINESS"]

Caller = tuple[bytes, int]


@dataclass(frozen=True, slots=True)
class PreparedSubmit:
    """A submission checked as far as it can be without the store (see
    :meth:`RelayService.prepare_submit`): its raw copies, decoded, and the digest that
    identifies a retry of it."""

    raw: tuple[bytes, ...]
    envs: tuple[Envelope, ...]
    digest: bytes


CUSTOMER: Final = 0
BUSINESS: Final = 1
#: How long a message id is remembered for de-duplication (bounded retention).
DEDUP_SECONDS: Final = 7 * 24 * 3600
#: A new franking key is made when the newest is this old; keys older than
#: FRANKING_RETIRE_SECONDS are retired (erased): reports must come within that time.
FRANKING_ROTATE_SECONDS: Final = 30 * 24 * 3600
FRANKING_RETIRE_SECONDS: Final = 180 * 24 * 3600
#: Most device identity keys remembered per process (the cache is emptied when full).
IDENTITY_CACHE: Final = 100_000


class RelayService:
    """The relay's request handlers over one :class:`RelayStore`. Thread-safe."""

    def __init__(
        self,
        store: RelayStore,
        config: PolicyConfig | None = None,
        clock: Callable[[], int] = lambda: int(time.time()),
        rng: Callable[[int], bytes] = os.urandom,
        share: Callable[[bytes], None] | None = None,
        dedup_seconds: int = DEDUP_SECONDS,
        log_key: bytes | None = None,
        secret_key: bytes | None = None,
    ) -> None:
        self.store = store
        self._sealer = SecretSealer(secret_key)
        self.config = config or PolicyConfig()
        self.clock = clock
        self.rng = rng
        self.share = share
        self.dedup_seconds = dedup_seconds
        self._identities: dict[Caller, bytes] = {}
        self._keys: list[FrankingKey] = []
        self._keys_lock = threading.Lock()
        self.refresh_franking_keys()
        self._log = KeyLog(LogSigner(self._log_secret(log_key)))
        self._log_lock = threading.Lock()

    # -- key directory (SPEC §13.4) ------------------------------------------------------

    def _log_secret(self, given: bytes | None) -> bytes:
        """The log key: ``given``, else the stored one, else a new one (stored)."""
        if given is not None:
            return given

        def step(tx: Tx) -> bytes:
            stored = tx.log_secret()
            if stored is None:
                secret = LogSigner().private_bytes()
                tx.set_log_secret(self._sealer.seal(b"log", 1, secret))
                stored = tx.log_secret()
            assert stored is not None  # noqa: S101 - just written in this transaction
            secret = self._sealer.open(b"log", 1, stored)
            if self._sealer.sealing and not self._sealer.is_sealed(stored):
                tx.replace_log_secret(self._sealer.seal(b"log", 1, secret))
            return secret

        return self.store.run(step)

    @property
    def log_public_key(self) -> bytes:
        """The Ed25519 key clients pin to check tree heads."""
        return self._log.signer.public

    def _log_account(self, tx: Tx, name: bytes, identity: bytes) -> None:
        """Append the account's current key and device list to the key log (same tx)."""
        certs = [c for c, _ in tx.devices(name).values()]
        version = tx.log_version(name) + 1
        entry = DirectoryEntry(name, version, identity, devices_hash(certs), len(certs))
        tx.append_log(name, version, entry.to_bytes())

    def _synced_log(self, tx: Tx) -> tuple[KeyLog, int]:
        """The cached log, caught up with this transaction's view, and that view's size.
        Call with ``_log_lock`` held; only committed entries ever reach the cache."""
        size = tx.log_size()
        have = len(self._log.entries)
        if have < size:
            self._log.extend(tx.log_entries(have, size))
        return self._log, size

    def log_head(self, tx: Tx, caller: Caller, req: object = None) -> LogHead:
        with self._log_lock:
            log, size = self._synced_log(tx)
            head = log.signer.sign(TreeHead(size, log.tree.root(size), self.clock()))
        return LogHead(head.to_bytes(), self.log_public_key)

    def log_lookup(self, tx: Tx, caller: Caller, req: LogLookup) -> LogEntry:
        with self._log_lock:
            log, size = self._synced_log(tx)
            if not 0 < req.size <= size:
                raise DecodeError("tree size beyond the log")
            raw, proof = log.lookup(req.account, req.size)
        return LogEntry(raw, proof.to_bytes())

    def log_consistency(self, tx: Tx, caller: Caller, req: LogConsistencyQuery) -> LogConsistency:
        with self._log_lock:
            log, size = self._synced_log(tx)
            if not 0 < req.size1 <= req.size2 <= size:
                raise DecodeError("consistency proof needs 0 < size1 <= size2 <= log size")
            proof = log.consistency(req.size1, req.size2)
        return LogConsistency(proof.to_bytes())

    def log_entries(self, tx: Tx, caller: Caller, req: LogEntriesQuery) -> LogEntries:
        with self._log_lock:
            log, size = self._synced_log(tx)
            if not 0 <= req.start <= req.size <= size:
                raise DecodeError("entries outside the log")
            end = min(req.size, req.start + MAX_LOG_ENTRIES)
            got = log.entries_since(req.start, req.size, end)
        return LogEntries(tuple(r for r, _ in got), tuple(p.to_bytes() for _, p in got))

    # -- verified businesses (SPEC §13.3) ----------------------------------------------------

    def business_certificate(self, tx: Tx, caller: Caller, req: BusinessCertQuery) -> BusinessCert:
        """The stored platform certificate of a business (empty: none). The relay does not
        vouch for it: clients verify it under the platform key they pin."""
        self._account(tx, req.account)
        return BusinessCert(tx.business_certificate(req.account) or b"")

    def store_business_certificate(self, raw: bytes) -> BusinessCertificate:
        """Store a platform certificate of a business (the operator's ``certify-business``).
        It must name a business account of this relay and that account's current key
        (:class:`~e2e.errors.CertificateError` otherwise); its signature is the client's
        to check."""
        cert = BusinessCertificate.from_bytes(raw)

        def step(tx: Tx) -> None:
            acct = self._account(tx, cert.account)
            if acct.kind != BUSINESS:
                raise CertificateError("only a business account is certified")
            if not hmac.compare_digest(acct.identity, cert.identity):
                raise CertificateError("certificate of another account key")
            tx.put_business_certificate(cert.account, raw)

        self.store.run(step)
        return cert

    # -- franking keys -------------------------------------------------------------------

    def refresh_franking_keys(self) -> None:
        """Load the franking keys; make a new one if there is none or the newest is old;
        retire the ones past their retention."""

        def step(tx: Tx) -> list[FrankingKey]:
            now = self.clock()
            keys = []
            for stored in tx.franking_keys():
                if now - stored.created >= FRANKING_RETIRE_SECONDS:
                    tx.retire_franking_key(stored.key_id, now)
                    continue
                secret = self._sealer.open(b"franking", stored.key_id, stored.secret)
                if self._sealer.sealing and not self._sealer.is_sealed(stored.secret):
                    tx.reseal_franking_key(
                        stored.key_id, self._sealer.seal(b"franking", stored.key_id, secret)
                    )
                keys.append(FrankingKey(stored.key_id, secret, stored.created))
            if not keys or now - keys[0].created >= FRANKING_ROTATE_SECONDS:
                keys.insert(0, self._new_franking_key(tx, now))
            return keys

        keys = self.store.run(step)
        with self._keys_lock:
            self._keys = keys

    def rotate_franking_key(self) -> int:
        """Make a new current franking key now; its key id."""

        def step(tx: Tx) -> int:
            return self._new_franking_key(tx, self.clock()).key_id

        key_id = self.store.run(step)
        self.refresh_franking_keys()
        return key_id

    def _new_franking_key(self, tx: Tx, now: int) -> FrankingKey:
        """A new franking key, stored (sealed if the relay has a secret key)."""
        key = FrankingKey(tx.max_franking_key_id() + 1, self.rng(32), now)
        sealed = self._sealer.seal(b"franking", key.key_id, key.secret)
        tx.insert_franking_key(FrankingKey(key.key_id, sealed, now))
        return key

    def _current_key(self) -> bytes:
        with self._keys_lock:
            return self._keys[0].secret

    # -- authentication ------------------------------------------------------------------

    def identity_of(self, token: AuthToken) -> bytes:
        """The registered identity key of the token's device (401 if none), read from the
        store and remembered for :meth:`known_identity`."""
        caller = (token.account, token.device_id)
        ident = self.store.read(lambda tx: tx.device_identity(*caller))
        if ident is None:
            raise Unauthenticated("unknown device")
        if len(self._identities) >= IDENTITY_CACHE:
            self._identities.clear()
        self._identities[caller] = ident
        return ident

    def known_identity(self, caller: Caller) -> bytes | None:
        """The identity key this process last read for the device, if any. Only a hint for
        checking a request's signature early: :meth:`admit` compares it with the
        stored key inside the request's transaction, so a stale entry (a device removed or
        re-keyed, maybe by another relay process) refuses the request and is forgotten."""
        return self._identities.get(caller)

    def forget_identity(self, caller: Caller) -> None:
        self._identities.pop(caller, None)

    def check_time(self, token: AuthToken) -> None:
        if abs(token.timestamp - self.clock()) > AUTH_SKEW:
            raise Unauthenticated("request time outside the allowed skew")

    def admit(self, tx: Tx, token: AuthToken, identity: bytes | None, now: float,
              rate: float, burst: float, want: int) -> int:  # fmt: skip
        """Inside the request's transaction: the device still has ``identity`` (else 401),
        its rate bucket (``rate`` per second, bursts of ``burst``, shared by every relay
        process; ``now`` in Unix seconds) gives up to ``want`` tokens (else 429; ``want`` 0:
        the request spends a token its process took before, see
        :class:`~e2e.relay.app.RateLimit`), and the nonce is fresh (else 401, a replay). The
        number of tokens taken. A refusal rolls the transaction back: nothing is taken or
        recorded."""
        if identity is not None:
            current = tx.device_identity(token.account, token.device_id)
            if current is None or not hmac.compare_digest(current, identity):
                self.forget_identity((token.account, token.device_id))
                raise Unauthenticated("device changed during the request")
        taken, fresh = tx.admit(
            token.account, token.device_id, token.nonce, token.timestamp + AUTH_SKEW + 1,
            now, rate, burst, want,
        )  # fmt: skip
        if want and not taken:
            raise RateLimited("device rate limit exceeded")
        if not fresh:
            raise Unauthenticated("request replayed")
        return taken

    # -- handlers (each runs inside one transaction) -------------------------------------

    @staticmethod
    def _account(tx: Tx, name: bytes) -> Account:
        acct = tx.account(name)
        if acct is None:
            raise UnknownAccount("unknown account")
        return acct

    def register_account(self, tx: Tx, req: RegisterAccount) -> Ok:
        check_account(req.name)
        check_x25519_public(req.identity)
        if req.kind == CUSTOMER and req.tier != Tier.FREE:
            raise DecodeError("a customer account has no billing tier")
        req.verify()
        acct = tx.account(req.name)
        if acct is not None:
            if (acct.kind, acct.tier) == (req.kind, req.tier) and hmac.compare_digest(
                acct.identity, req.identity
            ):
                return Ok()  # a retried registration
            raise Conflict("account name already taken")
        tx.insert_account(Account(req.name, req.kind, req.tier, req.identity))
        self._log_account(tx, req.name, req.identity)
        return Ok()

    @staticmethod
    def certificate_of(req: RegisterDevice) -> DeviceCertificate:
        return DeviceCertificate.from_bytes(req.certificate)

    def register_device(self, tx: Tx, caller: Caller, req: RegisterDevice) -> Ok:
        cert = DeviceCertificate.from_bytes(req.certificate)
        if (cert.account, cert.device_id) != caller:
            raise Forbidden("certificate of another device")
        acct = self._account(tx, cert.account)
        cert.verify(acct.identity)
        held = tx.devices(cert.account).get(cert.device_id)
        if held is not None and held[0] == req.certificate:
            return Ok()  # a retried registration: nothing changed, nothing to log
        tx.put_device(cert.account, cert.device_id, req.certificate, cert.identity)
        self._log_account(tx, cert.account, acct.identity)
        return Ok()

    def remove_device(self, tx: Tx, caller: Caller, req: RemoveDevice) -> Ok:
        if tx.device_identity(caller[0], req.device_id) is None:
            raise UnknownAccount("unknown device")
        tx.delete_device(caller[0], req.device_id)
        self._log_account(tx, caller[0], self._account(tx, caller[0]).identity)
        return Ok()

    def list_devices(self, tx: Tx, caller: Caller, req: ListDevices) -> DeviceList:
        acct = self._account(tx, req.account)
        devices = tx.devices(req.account)
        if req.chat is not None and acct.kind == BUSINESS:
            keep = self._chat_devices(tx, req.account, req.chat, set(devices))
            devices = {d: v for d, v in devices.items() if d in keep}
        certs = tuple(c for c, _ in devices.values())
        return DeviceList(acct.identity, acct.kind, certs)

    @staticmethod
    def _chat_devices(tx: Tx, business: bytes, customer: bytes, devices: set[int]) -> set[int]:
        """The business side of a chat: its route plus the designated devices (every
        device if the chat has no route), registered devices only."""
        route = tx.route(business, customer)
        if not route:
            return devices
        return (route | tx.designated(business)) & devices

    def _business_caller(self, tx: Tx, caller: Caller, devices: Sequence[int]) -> None:
        if self._account(tx, caller[0]).kind != BUSINESS:
            raise NotAllowed("only a business routes its chats")
        registered = tx.devices(caller[0])
        for d in devices:
            if d not in registered:  # registered = certified by the account key
                raise UnknownAccount("unknown device")

    def set_route(self, tx: Tx, caller: Caller, req: Route) -> Ok:
        self._business_caller(tx, caller, req.devices)
        if self._account(tx, check_account(req.customer)).kind != CUSTOMER:
            raise NotAllowed("a business routes chats with customers")
        tx.set_route(caller[0], req.customer, req.devices)
        return Ok()

    def designate(self, tx: Tx, caller: Caller, req: Designate) -> Ok:
        self._business_caller(tx, caller, req.devices)
        tx.set_designated(caller[0], req.devices)
        return Ok()

    def upload_prekeys(self, tx: Tx, caller: Caller, req: UploadPrekeys) -> PrekeyCount:
        identity = tx.device_identity(*caller)
        if identity is None:
            raise Unauthenticated("unknown device")
        parsed: list[tuple[int, bytes]] = []
        for raw in req.one_time:
            bundle = self._bundle(raw, identity)
            if bundle.opk_id is None:
                raise DecodeError("a one-time bundle without a one-time prekey id")
            parsed.append((bundle.opk_id, raw))
        if len({i for i, _ in parsed}) != len(parsed):
            raise DecodeError("one-time prekey id uploaded twice in one request")
        if req.last_resort is not None:
            if self._bundle(req.last_resort, identity).opk_id is not None:
                raise DecodeError("a last-resort bundle carries a one-time prekey")
        tx.insert_prekeys(caller[0], caller[1], parsed)
        if req.last_resort is not None:
            tx.set_last_resort(caller[0], caller[1], req.last_resort)
        return self.count_prekeys(tx, caller)

    @staticmethod
    def _bundle(raw: bytes, identity: bytes) -> PrekeyBundle:
        bundle = PrekeyBundle.from_bytes(raw)
        if not hmac.compare_digest(bundle.identity_key, identity):
            raise InvalidSignature("bundle identity differs from the certified device key")
        bundle.verify()
        return bundle

    def count_prekeys(self, tx: Tx, caller: Caller, req: object = None) -> PrekeyCount:
        return PrekeyCount(tx.count_prekeys(*caller), tx.last_resort(*caller) is not None)

    def claim_prekey(self, tx: Tx, caller: Caller, req: ClaimPrekey) -> ClaimedPrekey:
        if tx.device_identity(req.account, req.device_id) is None:
            raise UnknownAccount("unknown device")
        bundle = tx.claim_prekey(req.account, req.device_id)
        if bundle is not None:
            return ClaimedPrekey(bundle, True)
        last = tx.last_resort(req.account, req.device_id)
        if last is None:
            raise UnknownAccount("device has not published prekeys")
        return ClaimedPrekey(last, False)

    def _check(
        self, tx: Tx, sender: Caller, cls: MessageClass, to_account: bytes,
        given: list[tuple[bytes, int]],
    ) -> tuple[Account, bytes, bytes, ChatState, bool, int]:  # fmt: skip
        accounts = tx.accounts(sender[0], to_account)
        ids = tx.device_ids(sender[0], to_account)
        if sender[1] not in ids[sender[0]]:
            raise UnknownAccount("unknown device")
        src = accounts.get(sender[0])
        dst = accounts.get(to_account)
        if src is None or dst is None:
            raise UnknownAccount("unknown account")
        if src.kind == dst.kind:
            raise NotAllowed("customers write to businesses and businesses to customers")
        if src.kind == CUSTOMER and cls not in (MessageClass.SERVICE, MessageClass.RECEIPT):
            raise NotAllowed("customers send service messages and receipts only")
        if src.kind == BUSINESS:
            own = self._chat_devices(tx, sender[0], to_account, ids[sender[0]])
            if sender[1] not in own:
                raise NotAllowed("this device is not assigned to the chat")
            peer = ids[to_account]
        else:
            own = ids[sender[0]]
            peer = self._chat_devices(tx, to_account, sender[0], ids[to_account])
        want = {(to_account, d) for d in peer} | {(sender[0], d) for d in own if d != sender[1]}
        if len(set(given)) != len(given) or set(given) != want:
            raise StaleDeviceList(sorted(want - set(given)), sorted(set(given) - want))
        now = self.clock()
        if src.kind == BUSINESS:
            business, customer = sender[0], to_account
        else:
            business, customer = to_account, sender[0]
        tx.lock_chat(business, customer)
        chat = tx.chat(business, customer) or ChatState()
        in_window = False
        if src.kind == BUSINESS:
            in_window = chat.check_business_send(cls, now, self.config)
        return src, business, customer, chat, in_window, now

    def precheck(self, tx: Tx, caller: Caller, req: Precheck) -> Ok:
        cls = _message_class(req.cls)
        src = self._check(tx, caller, cls, check_account(req.to_account), req.dests)[0]
        if req.template_id is not None:
            self._check_template(tx, src, req.template_id, cls)
        return Ok()

    @staticmethod
    def prepare_submit(caller: Caller, req: Submit, body: bytes | None = None) -> PreparedSubmit:
        """The checks of a submission that need no store: its copies decoded, from the
        authenticated device, agreeing on their metadata. ``body``, if given, is the
        request's canonical encoding (it is hashed instead of encoding ``req`` again). Run
        before the transaction, so the store's writer does only what needs the store."""
        if not req.envelopes:
            raise DecodeError("empty batch")
        envs = tuple(Envelope.from_bytes(raw) for raw in req.envelopes)
        first = envs[0]
        for env in envs:
            if env.sender != caller:
                raise Forbidden("envelope sender differs from the authenticated device")
            if (env.message_id, env.cls, env.to_account, env.template_id) != (
                first.message_id, first.cls, first.to_account, first.template_id,
            ) or env.commitment != first.commitment:  # fmt: skip
                raise DecodeError("batch copies disagree on their message metadata")
        digest = hashlib.sha256(req.to_bytes() if body is None else body).digest()
        return PreparedSubmit(req.envelopes, envs, digest)

    def submit(self, tx: Tx, caller: Caller, req: Submit | PreparedSubmit) -> Receipt:
        prep = req if isinstance(req, PreparedSubmit) else self.prepare_submit(caller, req)
        envs, first, digest = prep.envs, prep.envs[0], prep.digest
        seen = tx.seen(caller[0], first.message_id)
        if seen is not None:
            if hmac.compare_digest(seen.digest, digest):
                # A retry of an accepted submission: the same receipt, nothing stored again.
                return Receipt(first.message_id, seen.received_at, seen.copies, seen.price)
            raise DuplicateSubmission("message id already used by this sender")
        src, business, customer, chat, in_window, now = self._check(
            tx, caller, first.cls, first.to_account, [env.dest for env in envs]
        )
        if first.template_id is not None:
            self._check_template(tx, src, first.template_id, first.cls)
        price = 0
        if src.kind == BUSINESS:
            price = billed_price(self.config.prices, Tier(src.tier), first.cls, in_window)
            if billable(first.cls):
                tx.insert_bill(business, first.message_id, int(first.cls), in_window, price, now)
            if first.cls is MessageClass.TEMPLATE:
                chat.template_times = [
                    t for t in chat.template_times if now - t < self.config.window_seconds
                ] + [now]
            chat.counts["business"] = chat.counts.get("business", 0) + 1
        else:
            if opens_window(first.cls):
                chat.last_customer_message = now
            chat.counts["customer"] = chat.counts.get("customer", 0) + 1
        tx.put_chat(business, customer, chat)
        key = self._current_key()
        for env, raw in zip(envs, prep.raw, strict=True):
            tx.insert_mail(env.dest_account, env.dest_device, raw, now, relay_tag(key, env, now))
            tx.notify(env.dest_account, env.dest_device)
        tx.insert_seen(
            caller[0],
            first.message_id,
            SeenSubmission(digest, now, len(envs), price),
            now + self.dedup_seconds,
        )
        self._share(business, customer, chat, now)
        return Receipt(first.message_id, now, len(envs), price)

    def fetch(self, tx: Tx, caller: Caller, req: Fetch) -> Mailbox:
        if (req.account, req.device_id) != caller:
            raise Forbidden("another device's mailbox")
        mail = tx.fetch_mail(req.account, req.device_id, req.limit)
        out = tuple(Delivery(m.envelope, m.received_at, m.tag, m.seq).to_bytes() for m in mail)
        more = 0
        if len(mail) == req.limit:
            more = tx.count_mail(req.account, req.device_id) - len(mail)
        return Mailbox(out, more)

    def ack(self, tx: Tx, caller: Caller, req: Ack) -> Ok:
        if (req.account, req.device_id) != caller:
            raise Forbidden("another device's mailbox")
        tx.ack(req.account, req.device_id, req.seqs)
        return Ok()

    def control(self, tx: Tx, caller: Caller, req: Control) -> Ok:
        customer = self._account(tx, caller[0])
        business = self._account(tx, req.business)
        if customer.kind != CUSTOMER or business.kind != BUSINESS:
            raise NotAllowed("controls are a customer's, over a business")
        tx.lock_chat(req.business, caller[0])
        chat = tx.chat(req.business, caller[0]) or ChatState()
        if req.op == Control.BLOCK:
            chat.blocked = req.on
        elif req.op == Control.LIMIT:
            chat.limited = req.on
        else:
            chat.opted_in = req.on
        tx.put_chat(req.business, caller[0], chat)
        self._share(req.business, caller[0], chat, self.clock())
        return Ok()

    def window(self, tx: Tx, caller: Caller, req: WindowQuery) -> WindowState:
        me = self._account(tx, caller[0])
        if me.kind == BUSINESS:
            chat = tx.chat(caller[0], req.peer)
        else:
            chat = tx.chat(req.peer, caller[0])
        return WindowState(chat is not None and chat.window_open(self.clock(), self.config))

    def report(self, tx: Tx, caller: Caller, req: SubmitReport) -> ReportVerdict:
        """Verify and record a spam report. Call :meth:`refresh_franking_keys` before (outside
        the transaction) so keys made by other relay processes are known."""
        try:
            parsed = Report.from_bytes(req.report)
        except ReportRejected:
            raise
        except E2EError:
            raise ReportRejected("report is malformed") from None
        if parsed.reporter != caller[0]:
            raise ReportRejected("report signed for another customer")
        customer = self._account(tx, caller[0])
        business = self._account(tx, parsed.business)
        if customer.kind != CUSTOMER or business.kind != BUSINESS:
            raise NotAllowed("reports are a customer's, over a business")
        if len(parsed.items) > MAX_REPORTED:
            raise ReportRejected("too many reported messages")
        verified = tuple(self._verify(item, caller[0], parsed.business) for item in parsed.items)
        if len({v.message_id for v in verified}) != len(verified):
            raise ReportRejected("a message reported twice")
        now = self.clock()
        tx.lock_chat(parsed.business, caller[0])
        chat = tx.chat(parsed.business, caller[0]) or ChatState()
        chat.spam_reports += 1
        if req.block:
            chat.blocked = True
        tx.put_chat(parsed.business, caller[0], chat)
        tx.insert_report(caller[0], parsed.business, now, len(verified), req.report)
        self._share(parsed.business, caller[0], chat, now)
        return ReportVerdict(
            tuple(v.message_id for v in verified),
            tuple(v.received_at for v in verified),
            tuple(int(v.cls) for v in verified),
        )

    def _verify(self, item: object, reporter: bytes, business: bytes) -> VerifiedMessage:
        return self._verify_key(item, reporter, business)[1]

    def _verify_key(
        self, item: object, reporter: bytes, business: bytes
    ) -> tuple[bytes, VerifiedMessage]:
        """The franking key the item's tag verifies under, and the verified message."""
        assert isinstance(item, ReportItem)
        with self._keys_lock:
            keys = list(self._keys)
        last: E2EError = ReportRejected("no franking key")
        for key in keys:
            try:
                return key.secret, verify_item(key.secret, item, reporter, business)
            except ReportRejected as exc:
                last = exc
        raise last

    def register_template(self, tx: Tx, caller: Caller, req: RegisterTemplate) -> Ok:
        """Register (approve) one of the caller business's templates: its class (TEMPLATE or
        MARKETING) and the SHA-256 of its text. Retrying the same registration is Ok; another
        class or text under a registered id is refused."""
        cls = _message_class(req.cls)
        if cls not in (MessageClass.TEMPLATE, MessageClass.MARKETING):
            raise NotAllowed("a template is a template or a marketing message")
        if self._account(tx, caller[0]).kind != BUSINESS:
            raise NotAllowed("only businesses register templates")
        tpl = Template.of(req.template_id, cls, req.text)
        held = self._templates(tx, caller[0])
        if tpl.template_id not in held and len(held) >= MAX_TEMPLATES:
            raise NotAllowed("too many templates")
        if not tx.insert_template(caller[0], tpl.template_id, int(cls), tpl.text_hash):
            found = self._templates(tx, caller[0]).get(tpl.template_id)
            if found != tpl:
                raise NotAllowed("template id already registered")
        return Ok()

    def list_templates(self, tx: Tx, caller: Caller, req: ListTemplates) -> TemplateList:
        """A business's registered templates, for devices to check message classes with."""
        if self._account(tx, req.business).kind != BUSINESS:
            raise NotAllowed("only businesses have templates")
        held = sorted(self._templates(tx, req.business).values(), key=lambda t: t.template_id)
        return TemplateList(
            tuple(t.template_id for t in held),
            tuple(int(t.cls) for t in held),
            tuple(t.text_hash for t in held),
        )

    def _check_template(self, tx: Tx, src: Account, template_id: bytes, cls: MessageClass) -> None:
        """A message naming a template must be its business's, of a registered template of
        the class it declares (the text is for the devices, and a class report, to check)."""
        if src.kind != BUSINESS:
            raise NotAllowed("only a business sends templates")
        found = self._templates(tx, src.name).get(template_id)
        if found is None:
            raise MisdeclaredClass("unknown template id")
        if found.cls is not cls:
            raise MisdeclaredClass("template registered as another class")

    @staticmethod
    def _templates(tx: Tx, business: bytes) -> dict[bytes, Template]:
        return {
            tid: Template(tid, _message_class(cls), digest)
            for tid, cls, digest in tx.templates(business)
        }

    def report_class(self, tx: Tx, caller: Caller, req: SubmitClassReport) -> ClassVerdict:
        """Verify a customer's report that one message's content does not fit its declared
        class (:func:`~e2e.platform.franking.verify_class_report` with the business's
        registered templates) and bill the business one penalty line at the outside-window
        price of the class it should have declared. Once per message: a second report of it
        is refused and adds nothing. Call :meth:`refresh_franking_keys` before."""
        try:
            item = ReportItem.from_bytes(req.item)
            business = Delivery.from_bytes(item.delivery).open_envelope().from_account
        except ReportRejected:
            raise
        except E2EError:
            raise ReportRejected("class report is malformed") from None
        customer = self._account(tx, caller[0])
        if customer.kind != CUSTOMER or self._account(tx, business).kind != BUSINESS:
            raise NotAllowed("reports are a customer's, over a business")
        key, _ = self._verify_key(item, caller[0], business)
        verified, verdict = verify_class_report(
            key, item, caller[0], business, self._templates(tx, business)
        )
        price = self.config.prices.price(verdict.content, False)
        now = self.clock()
        if not tx.insert_penalty(
            business, verified.message_id, int(verdict.declared), int(verdict.content), price,
            now, caller[0],
        ):  # fmt: skip
            raise ReportRejected("message already reported for its class")
        return ClassVerdict(verified.message_id, int(verdict.declared), int(verdict.content), price)

    def bill(self, tx: Tx, caller: Caller, req: object = None) -> BillLines:
        acct = self._account(tx, caller[0])
        if acct.kind != BUSINESS:
            raise NotAllowed("only businesses have bills")
        lines = tx.bill(caller[0])
        pen = tx.penalties(caller[0])
        return BillLines(
            acct.tier,
            tuple(r[0] for r in lines),
            tuple(r[1] for r in lines),
            tuple(r[2] for r in lines),
            tuple(r[3] for r in lines),
            *(tuple(r[i] for r in pen) for i in range(4)),
        )

    def _share(self, business: bytes, customer: bytes, chat: ChatState, now: int) -> None:
        if self.share is not None:
            self.share(ChatView.of(business, customer, chat, now, self.config).to_bytes())

    def purge(self) -> None:
        now = self.clock()
        self.store.run(lambda tx: tx.purge(now))


def _message_class(value: int) -> MessageClass:
    try:
        return MessageClass(value)
    except ValueError:
        raise DecodeError("unknown message class") from None
