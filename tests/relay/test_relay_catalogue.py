"""The template catalogue through the relay process (SQLite and PostgreSQL), SPEC §17.1: a
business registers named, versioned templates with a category and typed parameters; the
platform reviews them and keeps their state; outside the customer's window only an approved
template passes, billed by its category; the customer's device checks the decrypted text
against the approved template and its parameters, and a franked report proves a mismatch.
The relay sees the template's name and version, never its parameters."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from relayhelp import ROOT, RelayProcess

from e2e.client import Client
from e2e.client.http import RelayClient
from e2e.errors import (
    DecodeError,
    NotAllowed,
    ReportRejected,
    UnapprovedTemplate,
    WindowClosed,
)
from e2e.platform.policy import MessageClass, PriceTable
from e2e.platform.templates import (
    CatalogueEntry,
    Category,
    ParamType,
    TemplateContent,
    TemplateState,
    template_ref,
)
from e2e.store.sqlite import SqliteStore

ORDER = "Hi {{1}}, your order {{2}} shipped on {{3}}."
CODE = "Your login code is {{1}}. Do not share it."
SALE = "Spring sale: {{1}} off everything until {{2}}!"
P = PriceTable()


def age_chats(db: str, seconds: int) -> None:
    """Move every chat's last customer message ``seconds`` into the past (time passing, as the
    relay process's own clock cannot be wound)."""
    sql = f"UPDATE chats SET last_customer_message = last_customer_message - {int(seconds)}"
    if not db.endswith(".db"):  # a PostgreSQL DSN
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[call-overload]
        return
    with sqlite3.connect(db) as conn:
        conn.execute(sql)


def review(db: str, ref: str, state: str) -> None:
    """The operator's ``relay review-template`` command, as an operator runs it."""
    subprocess.run(
        [sys.executable, "-m", "e2e", "relay", "review-template", "--db", db, "--account",
         "shop", "--template", ref, "--state", state],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip


async def register_order(biz: Client) -> CatalogueEntry:
    """The shop's utility template ``order_update`` (en): a name, an order number, a date."""
    types = (ParamType.TEXT, ParamType.TEXT, ParamType.DATE)
    return await biz.register_catalogue("order_update", "en", Category.UTILITY, ORDER, types)


def stores(tmp: Path) -> Callable[[str], Callable[[], SqliteStore]]:
    def store(name: str) -> Callable[[], SqliteStore]:
        key = os.urandom(32)
        return lambda: SqliteStore(tmp / f"{name}.db", key)

    return store


def test_registration_review_and_versions(relay: RelayProcess, tmp_path: Path) -> None:
    store = stores(tmp_path)

    async def run() -> None:
        net = RelayClient(relay.url)
        biz = await Client.create_account(store("b"), net.connect, "shop", "business", tier=1)
        cust = await Client.create_account(store("c"), net.connect, "ann", "customer")
        try:
            t = (ParamType.TEXT, ParamType.TEXT, ParamType.DATE)
            v1 = await biz.register_catalogue("order_update", "en", Category.UTILITY, ORDER, t)
            assert (v1.version, v1.state, v1.ref) == (1, TemplateState.APPROVED,
                                                      b"order_update.en.1")  # fmt: skip
            again = await biz.register_catalogue("order_update", "en", Category.UTILITY, ORDER, t)
            assert again.version == 1  # the same template is the same version
            v2 = await biz.register_catalogue(
                "order_update", "en", Category.UTILITY, ORDER.replace("Hi", "Hello"), t
            )
            de = await biz.register_catalogue(
                "order_update", "de", Category.UTILITY, "Hallo {{1}}, Bestellung {{2}} am {{3}}.",
                t,
            )  # fmt: skip
            assert (v2.version, de.version) == (2, 1)
            # The platform's review: an authentication template carries one code only.
            bad = await biz.register_catalogue(
                "login", "en", Category.AUTHENTICATION, "Hi {{1}}, code {{2}}",
                (ParamType.TEXT, ParamType.CODE),
            )  # fmt: skip
            assert bad.state is TemplateState.REJECTED and "code" in bad.reason
            # Malformed specs never reach the catalogue (placeholders must be {{1}}..{{n}}).
            for text, params in (("Hi {{2}}", (ParamType.TEXT,)), ("Hi {{1}", (ParamType.TEXT,)),
                                 ("Hi {{1}} and {{1}}", ())):  # fmt: skip
                with pytest.raises(DecodeError):
                    await biz.register_catalogue("broken", "en", Category.UTILITY, text, params)
            with pytest.raises(NotAllowed):  # customers have no catalogue
                await cust.register_catalogue("mine", "en", Category.UTILITY, "hello there all")
            # Anyone reads the catalogue, with each version's state.
            seen = {(e.ref, e.state) for e in await cust.catalogue("shop")}
            assert seen == {
                (b"login.en.1", TemplateState.REJECTED),
                (b"order_update.de.1", TemplateState.APPROVED),
                (b"order_update.en.1", TemplateState.APPROVED),
                (b"order_update.en.2", TemplateState.APPROVED),
            }
        finally:
            await cust.aclose()
            await biz.aclose()
            await net.aclose()

    asyncio.run(run())


def test_outside_the_window_only_approved_templates_pass_billed_by_category(
    relay: RelayProcess, tmp_path: Path
) -> None:
    store = stores(tmp_path)
    db = relay.db

    async def run() -> None:
        net = RelayClient(relay.url)
        biz = await Client.create_account(store("b"), net.connect, "shop", "business", tier=1)
        cust = await Client.create_account(store("c"), net.connect, "ann", "customer")
        try:
            order = await register_order(biz)
            code = await biz.register_catalogue(
                "login", "en", Category.AUTHENTICATION, CODE, (ParamType.CODE,)
            )
            sale = await biz.register_catalogue(
                "spring", "en", Category.MARKETING, SALE, (ParamType.TEXT, ParamType.DATE)
            )
            rejected = await biz.register_catalogue(
                "bare", "en", Category.UTILITY, "{{1}}", (ParamType.TEXT,)
            )
            assert rejected.state is TemplateState.REJECTED
            await cust.send("shop", "where is my parcel?")
            await cust.opt_in("shop")
            await biz.sync()
            # In the window a template costs the in-window price.
            inside = await biz.send_template("ann", "order_update", "en",
                                             ["Ann", "A-1001", "2026-12-01"])  # fmt: skip
            age_chats(db, 25 * 3600)  # a day later: the window is closed
            with pytest.raises(WindowClosed):
                await biz.send("ann", "free text")
            with pytest.raises(UnapprovedTemplate):  # a template message naming no template
                await biz.send("ann", "anything at all", MessageClass.TEMPLATE)
            bogus = TemplateContent("x", ()).to_bytes()
            for ref, cls in (
                (b"nosuch.en.1", MessageClass.TEMPLATE),  # never registered
                (rejected.ref, MessageClass.TEMPLATE),  # rejected by the review
                (order.ref, MessageClass.MARKETING),  # a utility template sent as another class
                (template_ref("order_update", "en", 7), MessageClass.TEMPLATE),  # no version 7
            ):
                with pytest.raises(UnapprovedTemplate):
                    await biz.send("ann", bogus, cls, template_id=ref)
            with pytest.raises(UnapprovedTemplate):  # the client finds no approved version
                await biz.send_template("ann", "bare", "en", ["hi"])
            # The operator withdraws the approval, then restores it.
            review(db, "order_update.en.1", "rejected")
            with pytest.raises(UnapprovedTemplate):
                await biz.send("ann", bogus, MessageClass.TEMPLATE, template_id=order.ref)
            review(db, "order_update.en.1", "approved")
            params = ["Ann", "A-1002", "2026-12-02"]
            shipped = await biz.send_template("ann", "order_update", "en", params)
            login = await biz.send_template("ann", "login", "en", ["739201"])
            promo = await biz.send_template("ann", "spring", "en", ["30%", "2026-12-24"])
            assert code.approved and sale.approved
            got = {m.message_id: m for m in await cust.sync()}
            for sent in (inside, shipped, login, promo):
                m = got[sent.message_id]
                assert m.class_check is not None and m.class_check.ok, m.class_check
            want = "Hi Ann, your order A-1002 shipped on 2026-12-02."
            assert got[shipped.message_id].text == want
            assert got[shipped.message_id].template_params == tuple(params)
            assert got[promo.message_id].cls is MessageClass.MARKETING
            bill = await biz.bill()
            lines = set(zip(bill.category_ids, bill.category_in_window, bill.category_counts,
                            bill.category_prices, strict=True))  # fmt: skip
            assert lines == {
                (int(Category.UTILITY), 1, 1, P.template_in_window),
                (int(Category.UTILITY), 0, 1, P.utility),
                (int(Category.AUTHENTICATION), 0, 1, P.authentication),
                (int(Category.MARKETING), 0, 1, P.marketing),
            }
            assert bill.total == P.utility + P.authentication + P.marketing + P.template_in_window
        finally:
            await cust.aclose()
            await biz.aclose()
            await net.aclose()

    asyncio.run(run())
    if db.endswith(".db"):  # the relay never saw a parameter
        held = b"".join(p.read_bytes() for p in Path(db).parent.glob("relay.db*") if p.is_file())
        assert b"order_update.en.1" in held  # the reference is metadata
        for secret in (b"A-1002", b"739201", b"2026-12-24", b"Hi Ann"):
            assert secret not in held


def test_parameters_that_do_not_fit_are_flagged_and_reportable(
    relay: RelayProcess, tmp_path: Path
) -> None:
    store = stores(tmp_path)

    async def run() -> None:
        net = RelayClient(relay.url)
        biz = await Client.create_account(store("b"), net.connect, "shop", "business", tier=1)
        cust = await Client.create_account(store("c"), net.connect, "ann", "customer")
        try:
            order = await register_order(biz)
            await cust.send("shop", "hello")
            await biz.sync()
            honest = await biz.send_template("ann", "order_update", "en",
                                             ["Ann", "A-1", "2026-12-01"])  # fmt: skip
            with pytest.raises(DecodeError):  # the honest client refuses to render a bad date
                await biz.send_template("ann", "order_update", "en", ["Ann", "A-1", "soon"])
            # A dishonest business sends what the relay cannot tell apart from a template:
            # another text under the approved name, and a parameter of the wrong type.
            swapped = TemplateContent("Buy crypto now at scam.example!", ("Ann", "A-1",
                                      "2026-12-01")).to_bytes()  # fmt: skip
            badtype = TemplateContent("Hi Ann, your order A-1 shipped on soon.",
                                      ("Ann", "A-1", "soon")).to_bytes()  # fmt: skip
            sent = [
                await biz.send("ann", body, MessageClass.TEMPLATE, template_id=order.ref)
                for body in (swapped, badtype)
            ]
            got = {m.message_id: m for m in await cust.sync()}
            assert not got[honest.message_id].misdeclared
            for s, why in zip(sent, ("not the template's", "parameter 3 is not a date"),
                              strict=True):  # fmt: skip
                check = got[s.message_id].class_check
                assert check is not None and not check.ok and why in check.reason
            # The honest one is not reportable; each mismatch is, once, at the category's price.
            with pytest.raises(ReportRejected):
                await cust.report_class("shop", honest.message_id)
            for s in sent:
                assert await cust.report_class("shop", s.message_id) is MessageClass.TEMPLATE
            with pytest.raises(ReportRejected):
                await cust.report_class("shop", sent[0].message_id)
            bill = await biz.bill()
            assert bill.penalty_counts == (2,) and bill.penalty_prices == (P.utility,)
        finally:
            await cust.aclose()
            await biz.aclose()
            await net.aclose()

    asyncio.run(run())
