"""The delivery contract (SPEC.md §10.11): what the relay accepted reaches the application
once, whatever fails after a delivery is opened, and a failure to reach the relay is never a
verdict on a message. The first three tests are the losses of issue 21 as they happened: each
fails on the code before the contract (the message is stored but never handed over, or acked
and dropped)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from world import Service, run

from e2e.client import Client, KeyChanged, MessageReceived, MessageSent, ReceiptStatus
from e2e.client.http import RelayClient
from e2e.errors import E2EError, Unauthenticated, WireFailure
from e2e.store.sqlite import SqliteStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "relay"))

from relayhelp import RelayProcess  # noqa: E402


def received(evs: list[Any]) -> list[bytes]:
    return [e.message.body for e in evs if isinstance(e, MessageReceived)]


def test_a_relay_restart_after_the_fetch_hands_the_message_over_once(tmp_path: Path) -> None:
    """The bot's relay process is killed (kill -9) right after the bot fetched a question:
    the acknowledgement fails. The question is handed to the application once -- by that
    sync, and as one event -- and the relay, restarted, does not hand it over again."""
    relay = RelayProcess(str(tmp_path / "relay.sqlite")).start()
    key = os.urandom(32)

    async def go() -> None:
        net = RelayClient(relay.url, retries=1)
        bot = await Client.create_account(lambda: SqliteStore(tmp_path / "bot.db", key),
                                          net.connect, "acme", "business")  # fmt: skip
        carol = await Client.create_account(lambda: SqliteStore(tmp_path / "carol.db", key),
                                            net.connect, "carol", "customer")  # fmt: skip
        await carol.send("acme", "hi")
        assert [m.body for m in await bot.sync()] == [b"hi"]
        await carol.send("acme", "where is my parcel?")
        fetch = bot.transport.fetch
        kills: list[int] = []

        async def fetch_then_relay_dies(wait_ms: int = 0) -> list[bytes]:
            got = await fetch(wait_ms)
            if got and not kills:
                kills.append(len(got))
                relay.kill()  # mid-poll: the next request finds no relay
            return got

        bot.transport.fetch = fetch_then_relay_dies  # type: ignore[method-assign]
        handed: list[bytes] = []
        for _ in range(3):
            try:
                handed += [m.body for m in await bot.sync()]
            except WireFailure:
                pass
            if relay.proc is None:
                relay.start()
        assert kills == [1] and handed == [b"where is my parcel?"]
        assert received(await bot.read_events()) == [b"hi", b"where is my parcel?"]
        assert [m.body for m in await bot.history("carol")] == [b"hi", b"where is my parcel?"]
        assert bot.errors == {}
        await bot.aclose()
        await carol.aclose()
        await net.aclose()

    try:
        asyncio.run(go())
    finally:
        relay.stop()


@pytest.mark.parametrize(
    "failure",
    [WireFailure("relay unreachable: ConnectError"),
     Unauthenticated("unauthenticated: request replayed")],  # a copy of the request went first
)  # fmt: skip
def test_a_network_error_is_not_a_verdict_on_a_message(
    fast_tmp: Path, failure: E2EError
) -> None:
    """The first message of a new customer: fetching the customer's device list fails once
    in transport (or is refused as such: the network duplicated it). The delivery is not
    acknowledged, the next sync opens it, nothing is counted as an error."""

    async def go() -> None:
        svc = Service(fast_tmp)
        [bot] = await svc.account("acme", "business", auto_receipts=False)
        [carol] = await svc.account("carol", "customer")
        await carol.send("acme", "hello, first time here")
        fetch_devices = bot.transport.fetch_devices
        failures: list[str] = []

        async def flaky(account: str, chat: str | None = None) -> Any:
            if not failures:
                failures.append(account)
                raise failure
            return await fetch_devices(account, chat)

        bot.transport.fetch_devices = flaky  # type: ignore[method-assign]
        first = await bot.sync()
        assert failures == ["carol"] and first == []
        assert svc.pending() == 1  # still waiting at the relay
        assert [m.body for m in await bot.sync()] == [b"hello, first time here"]
        assert bot.errors == {}
        assert svc.pending() == 0
        assert received(await bot.read_events()) == [b"hello, first time here"]
        await svc.aclose()

    run(go)


def test_a_message_under_a_changed_account_key_waits_for_the_application(
    fast_tmp: Path,
) -> None:
    """The shop's account is set up again under a new account key and writes to carol. Her
    device cannot accept the sender before she accepts the key change: the message is held
    (acknowledged to the relay, kept in her store) and opened once she accepts it."""

    async def go() -> None:
        svc = Service(fast_tmp)
        [shop] = await svc.account("shop", "business", auto_receipts=False)
        [carol] = await svc.account("carol", "customer")
        await carol.send("shop", "hi")
        await shop.sync()
        for table, column in [("devices", "account"), ("device_lists", "account"),
                              ("prekeys", "account"),
                              ("last_resort", "account"), ("accounts", "name")]:  # fmt: skip
            svc.operator().run(
                lambda tx, t=table, c=column: tx.execute(f"DELETE FROM {t} WHERE {c} = ?",
                                                         (b"shop",))  # fmt: skip
            )
        [shop2] = await svc.account("shop", "business")
        await shop2.send("carol", "your refund is on its way")
        assert await carol.sync() == []
        assert svc.pending() == 0 and carol.errors == {}  # held, not refused
        [change] = [e for e in await carol.read_events() if isinstance(e, KeyChanged)]
        assert change.new == await shop2.account_identity()
        await carol.accept_key_change("shop", change.new)
        assert [m.body for m in await carol.sync()] == [b"your refund is on its way"]
        assert received(await carol.read_events()) == [b"your refund is on its way"]
        await svc.aclose()

    run(go)


def test_failures_after_opening_postpone_the_follow_ups_and_lose_nothing(
    fast_tmp: Path,
) -> None:
    """The acknowledgement and the delivered receipt fail in transport: the sync still
    hands the message over; the relay delivers it again and it is recognised; the receipt
    goes with a later sync."""

    async def go() -> None:
        svc = Service(fast_tmp)
        [bot] = await svc.account("acme", "business")
        [carol] = await svc.account("carol", "customer", auto_receipts=False)
        sent = await carol.send("acme", "is anyone there?")
        ack, submit = bot.transport.ack, bot.transport.submit
        down = [True]

        async def ack_down(seqs: list[int]) -> None:
            if down[0]:
                raise WireFailure("relay unreachable")
            await ack(seqs)

        async def submit_down(envelopes: list[bytes]) -> Any:
            if down[0]:
                raise WireFailure("relay unreachable")
            return await submit(envelopes)

        bot.transport.ack = ack_down  # type: ignore[method-assign]
        bot.transport.submit = submit_down  # type: ignore[method-assign]
        assert [m.body for m in await bot.sync()] == [b"is anyone there?"]
        assert svc.pending() == 1  # not acknowledged
        assert await bot.sync() == []  # delivered again, recognised
        down[0] = False
        assert await bot.sync() == []  # acknowledged now; the receipt leaves
        assert svc.pending() == 1  # the receipt, in carol's mailbox
        await carol.sync()
        assert await carol.receipt_status(sent.message_id) == {"acme": ReceiptStatus.DELIVERED}
        assert received(await bot.read_events()) == [b"is anyone there?"]
        await svc.aclose()

    run(go)


def test_a_send_with_an_application_message_id_is_sent_once(fast_tmp: Path) -> None:
    """The answer to a submission is lost after the relay accepted it, and the application,
    not knowing, sends again under its own message id: one message, one MessageSent."""

    async def go() -> None:
        svc = Service(fast_tmp)
        bot, carol = await svc.chat("acme", "carol")
        submit = bot.transport.submit
        lost = [True]

        async def answer_lost(envelopes: list[bytes]) -> Any:
            got = await submit(envelopes)
            if lost[0]:
                lost[0] = False
                raise WireFailure("connection reset")
            return got

        bot.transport.submit = answer_lost  # type: ignore[method-assign]
        mid = os.urandom(16)
        try:
            await bot.send("carol", "your order shipped", message_id=mid)
        except WireFailure:
            pass
        again = await bot.send("carol", "your order shipped", message_id=mid)
        third = await bot.send("carol", "your order shipped", message_id=mid)
        assert again.message_id == third.message_id == mid and again.time == third.time
        assert [m.body for m in await carol.sync()] == [b"your order shipped"]
        sent = [e for e in await bot.read_events() if isinstance(e, MessageSent)]
        assert [e.message.message_id for e in sent] == [mid]
        assert [m.message_id for m in await bot.history("carol") if m.outgoing] == [mid]
        await svc.aclose()

    run(go)
