"""Wire bodies of messages and mailboxes (SPEC.md §10.7, §10.2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from e2e.platform.envelope import MAX_ENVELOPE_BYTES, MAX_TEMPLATE_ID_LEN, MESSAGE_ID_LEN
from e2e.platform.wire.codec import MAX_BATCH, Body, F, account_field, addresses, device_field, key

__all__ = [
    "MAX_FETCH",
    "MAX_WAIT_MS",
    "Precheck",
    "Submit",
    "Resend",
    "Receipt",
    "Fetch",
    "Mailbox",
    "Ack",
]

#: Most deliveries one fetch returns.
MAX_FETCH: Final = 256
#: Longest a fetch waits for new mail (long-poll push), in milliseconds.
MAX_WAIT_MS: Final = 25_000
_MESSAGE_ID: Final = F(bytes, MESSAGE_ID_LEN, MESSAGE_ID_LEN)
_CLASS: Final = F(int, max_int=255)


@dataclass(frozen=True, slots=True)
class Precheck(Body):
    """``{1: class, 2: to account, 3: [destination accounts], 4: [destination devices],
    5?: template id}``: the refusal a submission would get, changing nothing (business
    devices ask before encrypting)."""

    cls: int = key(1, _CLASS)
    to_account: bytes = account_field(2)
    dest_accounts: tuple[bytes, ...] = key(3, F(bytes, 1, 64, array=True, count=MAX_BATCH))
    dest_devices: tuple[int, ...] = key(4, F(int, array=True, count=MAX_BATCH,
                                             max_int=2**32 - 1))  # fmt: skip
    template_id: bytes | None = key(5, F(bytes, 1, MAX_TEMPLATE_ID_LEN, required=False), None)

    @classmethod
    def of(cls, msg_cls: int, to_account: bytes, dests: Sequence[tuple[bytes, int]],
           template_id: bytes | None = None) -> Precheck:  # fmt: skip
        return cls(msg_cls, to_account, tuple(a for a, _ in dests), tuple(d for _, d in dests),
                   template_id)  # fmt: skip

    @property
    def dests(self) -> list[tuple[bytes, int]]:
        return addresses(self.dest_accounts, self.dest_devices, type(self).__name__)


@dataclass(frozen=True, slots=True)
class Submit(Body):
    """``{1: [envelopes], 2?: entry token}``: one logical message as its device copies
    (SPEC §10.2); a customer's message may carry an ad's entry token (SPEC §17.4), which the
    relay checks and keeps to itself (it is never delivered).

    Accepted or refused whole. Submitting the same batch again (a retry) returns the first
    receipt and stores nothing; the same message id with other content is DuplicateSubmission.
    """

    envelopes: tuple[bytes, ...] = key(
        1, F(bytes, 1, MAX_ENVELOPE_BYTES, array=True, count=MAX_BATCH)
    )
    entry: bytes | None = key(2, F(bytes, 1, 256, required=False), None)


@dataclass(frozen=True, slots=True)
class Resend(Body):
    """``{1: [envelopes]}``: copies of a message the relay accepted before from this sender,
    for devices of the chat that asked for it again (SPEC §10.11): same message id and
    commitment as the accepted one, destinations devices of the chat. Not billed; the
    policy is not applied again."""

    envelopes: tuple[bytes, ...] = key(
        1, F(bytes, 1, MAX_ENVELOPE_BYTES, array=True, count=MAX_BATCH)
    )


@dataclass(frozen=True, slots=True)
class Receipt(Body):
    """``{1: message id, 2: relay receive time (s), 3: copies, 4: price charged}``: the relay
    accepted one logical message."""

    message_id: bytes = key(1, _MESSAGE_ID)
    received_at: int = key(2, F(int))
    copies: int = key(3, F(int))
    price: int = key(4, F(int))


@dataclass(frozen=True, slots=True)
class Fetch(Body):
    """``{1: account, 2: device id, 3?: wait (ms, up to MAX_WAIT_MS), 4?: limit}``: the
    deliveries waiting for that device (which must be the caller), oldest first. With a wait,
    the relay holds the request until mail arrives or the wait ends (long-poll push)."""

    account: bytes = account_field(1)
    device_id: int = device_field(2)
    wait_ms: int = key(3, F(int, required=False, max_int=MAX_WAIT_MS), 0)
    limit: int = key(4, F(int, required=False, max_int=MAX_FETCH), MAX_FETCH)


@dataclass(frozen=True, slots=True)
class Mailbox(Body):
    """``{1: [delivery records (SPEC §10.2)], 2: deliveries still waiting after these}``."""

    deliveries: tuple[bytes, ...] = key(
        1, F(bytes, 1, MAX_ENVELOPE_BYTES + 64, array=True, count=MAX_FETCH)
    )
    more: int = key(2, F(int))


@dataclass(frozen=True, slots=True)
class Ack(Body):
    """``{1: account, 2: device id, 3: [sequence numbers]}``: delete those deliveries."""

    account: bytes = account_field(1)
    device_id: int = device_field(2)
    seqs: tuple[int, ...] = key(3, F(int, array=True, count=MAX_FETCH))
