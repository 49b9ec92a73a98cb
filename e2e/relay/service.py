"""What the relay does with each request, as functions of records in one transaction
(SPEC.md §10.7, §10.8, §10.3).

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from e2e.errors import (
    Conflict,
    DecodeError,
    DuplicateSubmission,
    EntryRefused,
    Forbidden,
    LimitExceeded,
    MailboxFull,
    NoSuchEndpoint,
    NotAllowed,
    RateLimited,
    StaleDeviceList,
    Unauthenticated,
    UnknownAccount,
)
from e2e.keys import check_x25519_public
from e2e.platform.adentry import Conversion, Conversions, EntryToken, bucket_of, entry_verifier
from e2e.platform.adservice import ChatView
from e2e.platform.envelope import Delivery, Envelope, check_account
from e2e.platform.franking import (
    relay_tag,
)
from e2e.platform.merkle import LogSigner
from e2e.platform.names import check_account_name
from e2e.platform.policy import (
    ChatState,
    MessageClass,
    PolicyConfig,
    Tier,
    billable,
    billed_price,
    opens_window,
    parse_class,
)
from e2e.platform.transparency import KeyLog
from e2e.platform.vrf import VrfKey
from e2e.platform.wire import (
    AUTH_SKEW,
    Ack,
    AuthToken,
    Control,
    Fetch,
    Mailbox,
    Ok,
    Precheck,
    Receipt,
    RegisterAccount,
    Resend,
    Submit,
    WindowQuery,
    WindowState,
)
from e2e.relay.blobs import BlobStore
from e2e.relay.blobsvc import BlobHandlers
from e2e.relay.catalogue import CatalogueHandlers
from e2e.relay.config import RelayConfig
from e2e.relay.devices import Devices, chat_devices
from e2e.relay.keydir import KeyDirectory
from e2e.relay.lifecycle import Lifecycle
from e2e.relay.prekeys import Prekeys
from e2e.relay.quality import BLOCK, QualityHandlers
from e2e.relay.reports import Reports
from e2e.relay.secrets import SecretSealer
from e2e.relay.store import (
    BUSINESS,
    CUSTOMER,
    Account,
    Caller,
    FrankingKey,
    RelayStore,
    SeenSubmission,
    Tx,
    account_of,
)

__all__ = ["RelayService", "PreparedSubmit"]


@dataclass(frozen=True, slots=True)
class PreparedSubmit:
    """A submission checked as far as it can be without the store (see
    :meth:`RelayService.prepare_submit`): its raw copies, decoded, and the digest that
    identifies a retry of it."""

    raw: tuple[bytes, ...]
    envs: tuple[Envelope, ...]
    digest: bytes
    #: An ad's entry token the customer presented (SPEC §17.4), its signature, business and
    #: time already checked.
    entry: EntryToken | None = None


#: How long a message id is remembered for de-duplication (bounded retention).
DEDUP_SECONDS: Final = 7 * 24 * 3600
#: Most device identity keys remembered per process (the cache is emptied when full).
IDENTITY_CACHE: Final = 100_000
#: Bytes a fetch answer spends on each delivery besides its envelope (the delivery record's
#: other fields and its array item head), and on the answer itself.
DELIVERY_OVERHEAD: Final = 80
MAILBOX_OVERHEAD: Final = 32
#: Seconds a nonce is kept beyond the skew: a relay process whose clock is up to this far
#: behind the one that purges nonces still refuses a replay (SPEC §10.7).
CLOCK_MARGIN: Final = 120
#: The rate bucket of account registrations in all (SPEC §10.13), with device id -1.
REGISTRATIONS: Final = b""
#: Seconds after its time bucket ends before an ad conversion is reported (SPEC §17.4): a
#: transaction that recorded one in the bucket has committed by then.
CONVERSION_MARGIN: Final = 60
#: Most conversions in one answer to the ad service.
CONVERSIONS_PER_ANSWER: Final = 1000


class RelayService(
    Devices,
    Lifecycle,
    KeyDirectory,
    Reports,
    Prekeys,
    BlobHandlers,
    CatalogueHandlers,
    QualityHandlers,
):
    """The relay's request handlers over one :class:`RelayStore`. Thread-safe.

    Here: authentication and admission, accounts, prekeys, messages and mailboxes, customer
    controls. Devices, device lists, roles and routing are
    :class:`~e2e.relay.devices.Devices`', linking and recovery
    :class:`~e2e.relay.lifecycle.Lifecycle`'s; the key directory's handlers are
    :class:`~e2e.relay.keydir.KeyDirectory`'s, the franking keys', reports', templates' and
    the bill's :class:`~e2e.relay.reports.Reports`', the prekey directory's
    :class:`~e2e.relay.prekeys.Prekeys`', the blob store's
    :class:`~e2e.relay.blobsvc.BlobHandlers`' (over ``blobs``; a relay without one refuses
    attachments), the template catalogue's :class:`~e2e.relay.catalogue.CatalogueHandlers`',
    messaging tiers' :class:`~e2e.relay.quality.QualityHandlers`'."""

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
        blobs: BlobStore | None = None,
        settings: RelayConfig | None = None,
    ) -> None:
        self.store = store
        self._blobs = blobs
        self._sealer = SecretSealer(secret_key)
        #: The relay's settings (SPEC §10.9); the policy's are ``config`` if given.
        self.settings = settings or RelayConfig()
        self.config = config or self.settings.policy_config()
        self.clock = clock
        self.rng = rng
        self.share = share
        self.dedup_seconds = dedup_seconds
        self._identities: dict[Caller, bytes] = {}
        self._init_prekeys()
        self._keys: list[FrankingKey] = []
        self._keys_lock = threading.Lock()
        self.refresh_franking_keys()
        self._vrf = VrfKey(self._log_secret(None, 2, b"vrf"))
        self._log = KeyLog(LogSigner(self._log_secret(log_key)), self._vrf)
        self._log_lock = threading.Lock()
        ads = self.settings.ads
        self._entry_verify = entry_verifier(bytes.fromhex(ads.entry_key)) if ads.entry_key else None

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
        :class:`~e2e.relay.ratelimit.RateLimit`), and the nonce is fresh (else 401, a replay). The
        number of tokens taken. A refusal rolls the transaction back: nothing is taken or
        recorded."""
        if identity is not None:
            current = tx.device_identity(token.account, token.device_id)
            if current is None or not hmac.compare_digest(current, identity):
                self.forget_identity((token.account, token.device_id))
                raise Unauthenticated("device changed during the request")
        taken, fresh = tx.admit(
            token.account, token.device_id, token.nonce,
            token.timestamp + AUTH_SKEW + CLOCK_MARGIN,
            now, rate, burst, want,
        )  # fmt: skip
        if want and not taken:
            raise RateLimited("device rate limit exceeded")
        if not fresh:
            raise Unauthenticated("request replayed")
        return taken

    # -- handlers (each runs inside one transaction) -------------------------------------

    def register_account(self, tx: Tx, req: RegisterAccount) -> Ok:
        check_account_name(check_account(req.name))
        check_x25519_public(req.identity)
        if req.kind == CUSTOMER and req.tier != Tier.FREE:
            raise DecodeError("a customer account has no billing tier")
        req.verify()
        acct = tx.account(req.name)
        if acct is not None:
            if acct.kind == req.kind and hmac.compare_digest(acct.identity, req.identity):
                return Ok()  # a retried registration
            raise Conflict("account name already taken")
        # The billing tier is the operator's (SPEC §10.3), whatever the registration declares.
        tier = self.settings.admission.business_tier
        if req.kind == CUSTOMER or tier < 0:
            tier = req.tier
        a = self.settings.admission
        if not tx.take_token(REGISTRATIONS, -1, self.clock(), a.per_hour / 3600, a.burst):
            raise RateLimited("too many accounts registered; try later")
        tx.insert_account(Account(req.name, req.kind, tier, req.identity))
        self._log_account(tx, req.name, req.identity)
        return Ok()

    def _chat_set(
        self, tx: Tx, sender: Caller, cls: MessageClass, to_account: bytes
    ) -> tuple[Account, set[tuple[bytes, int]]]:
        """The sending account and the devices a message from ``sender`` to ``to_account``
        goes to (the recipient's devices of the chat and the sender's other devices, SPEC
        §10.10), after the role checks: ``UnknownAccount``, ``NotAllowed``."""
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
            own = chat_devices(tx, sender[0], to_account, ids[sender[0]])
            if sender[1] not in own:
                raise NotAllowed("this device is not assigned to the chat")
            peer = ids[to_account]
        else:
            own = ids[sender[0]]
            peer = chat_devices(tx, to_account, sender[0], ids[to_account])
        want = {(to_account, d) for d in peer} | {(sender[0], d) for d in own if d != sender[1]}
        return src, want

    def _check(
        self, tx: Tx, sender: Caller, cls: MessageClass, to_account: bytes,
        given: list[tuple[bytes, int]],
    ) -> tuple[Account, bytes, bytes, ChatState, bool, int]:  # fmt: skip
        src, want = self._chat_set(tx, sender, cls, to_account)
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
        else:
            chat.check_customer_send()
        if cls is MessageClass.RECEIPT:
            chat.check_receipt("business" if src.kind == BUSINESS else "customer")
        return src, business, customer, chat, in_window, now

    def precheck(self, tx: Tx, caller: Caller, req: Precheck) -> Ok:
        cls = parse_class(req.cls)
        checked = self._check(tx, caller, cls, check_account(req.to_account), req.dests)
        src, in_window = checked[0], checked[4]
        category = self.template_gate(tx, src, req.template_id, cls, in_window)
        if req.template_id is not None and category is None:
            self._check_template(tx, src, req.template_id, cls)
        if src.kind == BUSINESS:
            self.tier_gate(tx, checked[1], checked[2], cls, in_window, checked[5], False)
        return Ok()

    def prepare_submit(
        self, caller: Caller, req: Submit | Resend, body: bytes | None = None
    ) -> PreparedSubmit:
        """The checks of a submission that need no store: each copy small enough to be
        fetched (``mailbox.fetch_bytes``), decoded, from the authenticated device, agreeing
        on their metadata. ``body``, if given, is the
        request's canonical encoding (it is hashed instead of encoding ``req`` again). Run
        before the transaction, so the store's writer does only what needs the store."""
        if not req.envelopes:
            raise DecodeError("empty batch")
        fetch_bytes = self.settings.mailbox.fetch_bytes
        for raw in req.envelopes:
            if len(raw) + DELIVERY_OVERHEAD + MAILBOX_OVERHEAD > fetch_bytes:
                raise LimitExceeded("envelope larger than a recipient's fetch answer can carry")
        envs = tuple(Envelope.from_bytes(raw) for raw in req.envelopes)
        first = envs[0]
        if first.cls is MessageClass.RECEIPT:
            cap = self.settings.limits.receipt_bytes
            if any(len(raw) > cap for raw in req.envelopes):
                raise LimitExceeded("a receipt larger than limits.receipt_bytes")
        for env in envs:
            if env.sender != caller:
                raise Forbidden("envelope sender differs from the authenticated device")
            if (env.message_id, env.cls, env.to_account, env.template_id, env.blob_id) != (
                first.message_id, first.cls, first.to_account, first.template_id, first.blob_id,
            ) or env.commitment != first.commitment:  # fmt: skip
                raise DecodeError("batch copies disagree on their message metadata")
        digest = hashlib.sha256(req.to_bytes() if body is None else body).digest()
        entry = None
        if isinstance(req, Submit) and req.entry is not None:
            entry = self._entry_token(req.entry, first)
        return PreparedSubmit(req.envelopes, envs, digest, entry)

    def _entry_token(self, raw: bytes, first: Envelope) -> EntryToken:
        """An entry token presented with ``first`` (SPEC §17.4), decoded and checked as far
        as it can be without the store: the ad service's signature, the business the
        message goes to, its time; else :class:`~e2e.errors.EntryRefused`."""
        if self._entry_verify is None:
            raise EntryRefused("this relay takes no entry tokens (no ads.entry_key)")
        if first.cls is not MessageClass.SERVICE:
            raise EntryRefused("an entry token comes with a customer's message, not a receipt")
        try:
            token = EntryToken.from_bytes(raw)
        except DecodeError:
            raise EntryRefused("not an entry token") from None
        token.check(self._entry_verify, first.to_account, self.clock(),
                    self.settings.ads.token_seconds)  # fmt: skip
        return token

    def submit(self, tx: Tx, caller: Caller, req: Submit | PreparedSubmit) -> Receipt:
        prep = req if isinstance(req, PreparedSubmit) else self.prepare_submit(caller, req)
        envs, first, digest = prep.envs, prep.envs[0], prep.digest
        # The chat's lock first (a backend may send it, and read the chat, with the lookup
        # below: one round trip less); the decision below takes it again, a no-op then.
        accounts = tx.accounts(caller[0], first.to_account)
        src = accounts.get(caller[0])
        if src is not None:
            if src.kind == BUSINESS:
                tx.lock_chat(caller[0], first.to_account)
            else:
                tx.lock_chat(first.to_account, caller[0])
        seen = tx.seen(caller[0], first.message_id)
        if seen is not None:
            if hmac.compare_digest(seen.digest, digest):
                # A retry of an accepted submission: the same receipt, nothing stored again.
                return Receipt(first.message_id, seen.received_at, seen.copies, seen.price)
            raise DuplicateSubmission("message id already used by this sender")
        src, business, customer, chat, in_window, now = self._check(
            tx, caller, first.cls, first.to_account, [env.dest for env in envs]
        )
        if prep.entry is not None:
            self._open_entry(tx, src, prep.entry, business, chat, now)
        category = self.template_gate(tx, src, first.template_id, first.cls, in_window)
        if first.template_id is not None and category is None:
            self._check_template(tx, src, first.template_id, first.cls)
        self.reference_blob(first, now)
        price = 0
        if src.kind == BUSINESS:
            self.tier_gate(tx, business, customer, first.cls, in_window, now, True)
            price = billed_price(self.config.prices, Tier(src.tier), first.cls, in_window)
            if category is not None and src.tier != Tier.FREE:
                price = self.config.prices.category_price(category, in_window)
            if chat.in_entry(now):
                price = 0  # an ad's entry window is free (SPEC §17.4)
            if billable(first.cls):
                tx.insert_bill(business, first.message_id, int(first.cls), in_window, price, now)
                if category is not None:
                    tx.insert_bill_category(business, first.message_id, category)
            if first.cls is MessageClass.TEMPLATE:
                chat.template_times = [
                    t for t in chat.template_times if now - t < self.config.window_seconds
                ] + [now]
            chat.count("business", first.cls)
        else:
            if opens_window(first.cls):
                chat.last_customer_message = now
            chat.count("customer", first.cls)
        copies = [
            (env.dest_account, env.dest_device, len(raw))
            for env, raw in zip(envs, prep.raw, strict=True)
        ]
        if not tx.reserve_mail(caller[0], copies, self.settings.mailbox.quota()):
            raise MailboxFull("a recipient's mailbox is full")
        tx.put_chat(business, customer, chat)
        key = self._current_key()
        for env, raw in zip(envs, prep.raw, strict=True):
            tx.insert_mail(env.dest_account, env.dest_device, raw, now, relay_tag(key, env, now),
                           caller[0])  # fmt: skip
            tx.notify(env.dest_account, env.dest_device)
        tx.insert_seen(
            caller[0],
            first.message_id,
            SeenSubmission(digest, now, len(envs), price, first.commitment),
            now + self.dedup_seconds,
        )
        self._share(business, customer, chat, now)
        return Receipt(first.message_id, now, len(envs), price)

    def _open_entry(self, tx: Tx, src: Account, token: EntryToken, business: bytes,
                    chat: ChatState, now: int) -> None:  # fmt: skip
        """Open the entry window of an ad for this chat: the token is used once (recorded
        with its ad, business and time bucket, never the customer), the chat's entry window
        runs ``ads.entry_window_seconds`` from now. :class:`~e2e.errors.EntryRefused` for a
        business's message, a chat whose customer blocked the business, a token used
        before."""
        if src.kind == BUSINESS:
            raise EntryRefused("only a customer's message opens an entry window")
        if chat.blocked:
            raise EntryRefused("the customer blocked this business")
        ads = self.settings.ads
        if not tx.use_entry(token.token_id, business, token.ad_id,
                            bucket_of(now, ads.bucket_seconds)):  # fmt: skip
            raise EntryRefused("the entry token was used before")
        chat.entry_until = now + ads.entry_window_seconds

    def ad_conversions(self, after: int) -> Conversions:
        """The ad service's conversions after position ``after`` (SPEC §17.4): (ad, business,
        time bucket) of each entry, oldest first, only up to the first whose bucket has not
        ended :data:`CONVERSION_MARGIN` seconds ago (so the cursor never passes one that is
        still to come)."""
        ready = self.clock() - CONVERSION_MARGIN
        seconds = self.settings.ads.bucket_seconds
        rows = self.store.read(lambda tx: tx.entries_after(after, CONVERSIONS_PER_ANSWER))
        out: list[bytes] = []
        cursor = after
        for seq, ad_id, business, bucket in rows:
            if bucket + seconds > ready:
                break
            out.append(Conversion(ad_id, business, bucket).to_bytes())
            cursor = seq
        return Conversions(tuple(out), cursor)

    prepare_resend = prepare_submit

    def resend(self, tx: Tx, caller: Caller, req: Resend | PreparedSubmit) -> Receipt:
        """Copies of a message this sender's account had accepted, for devices of the chat
        that ask for it again (SPEC §10.11): the same message id and franking commitment as
        the accepted message (so only the content accepted then can be delivered again),
        destinations among the chat's current devices, the sender not blocked by the other side.
        Nothing is billed and no window or count changes; each copy gets the accepted
        message's receive time and a franking tag over it. ``NotAllowed`` for a message not
        accepted (or no longer remembered), ``StaleDeviceList`` for a device outside the
        chat, ``Blocked`` past either side's block and ``MailboxFull`` past a recipient's
        quota, each exactly as a submission is refused."""
        prep = req if isinstance(req, PreparedSubmit) else self.prepare_resend(caller, req)
        first = prep.envs[0]
        seen = tx.seen(caller[0], first.message_id)
        if (
            seen is None or seen.commitment is None
            or not hmac.compare_digest(seen.commitment, first.commitment)
        ):  # fmt: skip
            raise NotAllowed("no accepted message of this sender with this id and content")
        src, want = self._chat_set(tx, caller, first.cls, first.to_account)
        given = [env.dest for env in prep.envs]
        if len(set(given)) != len(given) or not set(given) <= want:
            raise StaleDeviceList([], sorted(set(given) - want))
        business, customer = (caller[0], first.to_account) if src.kind == BUSINESS else (
            first.to_account, caller[0])  # fmt: skip
        chat = tx.chat(business, customer)
        if chat is not None:
            chat.check_not_blocked(src.kind == BUSINESS)
        copies = [
            (env.dest_account, env.dest_device, len(raw))
            for env, raw in zip(prep.envs, prep.raw, strict=True)
        ]
        if not tx.reserve_mail(caller[0], copies, self.settings.mailbox.quota()):
            raise MailboxFull("a recipient's mailbox is full")  # the quota holds for resends too
        at = seen.received_at
        key = self._current_key()
        for env, raw in zip(prep.envs, prep.raw, strict=True):
            tx.insert_mail(env.dest_account, env.dest_device, raw, at, relay_tag(key, env, at),
                           caller[0])  # fmt: skip
            tx.notify(env.dest_account, env.dest_device)
        return Receipt(first.message_id, at, len(prep.envs), 0)

    def fetch(self, tx: Tx, caller: Caller, req: Fetch) -> Mailbox:
        """The caller's oldest deliveries, at most ``req.limit`` and at most
        ``mailbox.fetch_bytes`` of answer, but always the oldest one (which fits: a submission
        is refused if one of its copies could not, :meth:`prepare_submit`), so every fetch
        makes progress and a mailbox can always be emptied (SPEC §10.13)."""
        if (req.account, req.device_id) != caller:
            raise Forbidden("another device's mailbox")
        budget = self.settings.mailbox.fetch_bytes - MAILBOX_OVERHEAD
        mail, cut = tx.fetch_mail(req.account, req.device_id, req.limit, budget, DELIVERY_OVERHEAD)
        out = tuple(Delivery(m.envelope, m.received_at, m.tag, m.seq).to_bytes() for m in mail)
        more = 0
        if cut:
            # The mailbox's counter (one row, whatever the mailbox holds); a count of the rows
            # (as many as the device holds) only if it counts fewer than this answer carries:
            # deliveries stored before mailboxes were counted are in no counter.
            total = tx.mailbox_usage(req.account, req.device_id)[0]
            if total <= len(mail):
                total = tx.count_mail(req.account, req.device_id)
            more = max(0, total - len(mail))
        return Mailbox(out, more)

    def ack(self, tx: Tx, caller: Caller, req: Ack) -> Ok:
        if (req.account, req.device_id) != caller:
            raise Forbidden("another device's mailbox")
        tx.ack(req.account, req.device_id, req.seqs)
        return Ok()

    def control(self, tx: Tx, caller: Caller, req: Control) -> Ok:
        """A customer blocks, limits or opts in to a business (``req.business``); a business
        blocks a customer (``req.business`` names the customer then): that customer's
        messages to it are refused (``Blocked``). A customer's block counts against the
        business's quality (SPEC §17.3); a business's block of a customer does not."""
        me = account_of(tx, caller[0])
        peer = account_of(tx, req.business)
        if me.kind == BUSINESS and peer.kind == CUSTOMER:
            if req.op != Control.BLOCK:
                raise NotAllowed("a business only blocks a customer")
            business, customer = caller[0], req.business
        elif me.kind == CUSTOMER and peer.kind == BUSINESS:
            business, customer = req.business, caller[0]
        else:
            raise NotAllowed("controls are between a customer and a business")
        tx.lock_chat(business, customer)
        chat = tx.chat(business, customer) or ChatState()
        now = self.clock()
        if me.kind == BUSINESS:
            chat.blocked_customer = req.on
        else:
            was = (chat.blocked, chat.limited, chat.opted_in)[req.op - 1]
            if req.op == Control.BLOCK:
                if req.on and not chat.blocked:
                    self.negative(tx, business, customer, BLOCK, now)
                chat.blocked = req.on
                if req.on:
                    chat.entry_until = None  # a block closes an ad's entry window for good
            elif req.op == Control.LIMIT:
                chat.limited = req.on
            else:
                chat.opted_in = req.on
            if was != req.on:  # the business is told of each change (SPEC §17.2)
                tx.insert_notice(business, customer, req.op, int(req.on), now)
        tx.put_chat(business, customer, chat)
        self._share(business, customer, chat, now)
        return Ok()

    def window(self, tx: Tx, caller: Caller, req: WindowQuery) -> WindowState:
        me = account_of(tx, caller[0])
        if me.kind == BUSINESS:
            chat = tx.chat(caller[0], req.peer)
        else:
            chat = tx.chat(req.peer, caller[0])
        return WindowState(chat is not None and chat.window_open(self.clock(), self.config))

    def _share(self, business: bytes, customer: bytes, chat: ChatState, now: int) -> None:
        if self.share is not None:
            self.share(ChatView.of(business, customer, chat, now, self.config).to_bytes())

    @property
    def blobs(self) -> BlobStore:
        """The blob store (SPEC §10.12); NoSuchEndpoint if this relay keeps none."""
        if self._blobs is None:
            raise NoSuchEndpoint("this relay keeps no blobs")
        return self._blobs

    def purge(self) -> None:
        """Drop expired nonces and de-duplication records, and deliveries older than
        ``mailbox.retention_seconds`` (a thousand per transaction)."""
        now = self.clock()
        self.store.run(lambda tx: tx.purge(now))
        if self._blobs is not None:
            self._blobs.expire(now)
        before = now - self.settings.mailbox.retention_seconds
        while self.store.run(lambda tx: tx.expire_mail(before)) == 1000:
            pass

    def close(self) -> None:
        """Close the relay store and the blob store."""
        self.store.close()
        if self._blobs is not None:
            self._blobs.close()
