"""The lesser holes of the relay (SPEC §10.4, §12.1), each attack run against the relay
process on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from relayhelp import ROOT, Refused, RelayProcess, new_device

from e2e.platform import wire
from e2e.platform.policy import MessageClass
from e2e.relay.backends import open_store

CUSTOMER, BUSINESS = 0, 1


def test_a_message_reported_again_counts_once(relay: RelayProcess, relay_db: str) -> None:
    """A customer reports one message twenty times: the chat counts one spam report (on main,
    twenty); a report with a new message counts again."""
    with httpx.Client(base_url=relay.url, timeout=30) as c:
        shop = new_device(c, b"shop", BUSINESS, tier=1)
        ann = new_device(c, b"ann", CUSTOMER)
        ann.submit(ann.envelopes(b"shop", [shop.addr], MessageClass.SERVICE))
        first = shop.submit(shop.envelopes(b"ann", [ann.addr], MessageClass.SERVICE))
        second = shop.submit(shop.envelopes(b"ann", [ann.addr], MessageClass.SERVICE))
        deliveries = list(ann.fetch().deliveries)
        items = [(deliveries[i], *shop.sent[r.message_id]) for i, r in enumerate((first, second))]
        for _ in range(20):
            verdict = ann.report(b"shop", [items[0]], block=False)
            assert verdict.message_ids == (first.message_id,)
        store = open_store(relay_db)
        try:
            chat = store.read(lambda tx: tx.chat(b"shop", b"ann"))
            assert chat is not None and chat.spam_reports == 1
            ann.report(b"shop", [items[0], items[1]], block=False)
            chat = store.read(lambda tx: tx.chat(b"shop", b"ann"))
            assert chat is not None and chat.spam_reports == 2
            reports = store.read(lambda tx: tx.fetchall("SELECT COUNT(*) FROM reports"))
            assert reports == [(2,)]
        finally:
            store.close()


def test_the_billing_tier_is_the_operators(relay_db: str, tmp_path: Path) -> None:
    """A business registering as free-tier is on the operator's tier (API by default) and
    billed for its marketing messages (on main, self-declared free: 50 marketing messages billed
    0); the operator moves it to the free tier with ``relay set-tier``."""
    env = {"E2E_RELAY_ADMISSION_BUSINESS_TIER": "1"}
    proc = RelayProcess(relay_db, log_path=tmp_path / "relay.log", env=env).start()
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as c:
            shop = new_device(c, b"shop", BUSINESS, tier=0)  # declares the free tier
            ann = new_device(c, b"ann", CUSTOMER)
            ann.submit(ann.envelopes(b"shop", [shop.addr], MessageClass.SERVICE))
            ann.control(wire.Control.OPT_IN, b"shop")
            for _ in range(5):
                shop.submit(shop.envelopes(b"ann", [ann.addr], MessageClass.MARKETING))
            bill = shop.bill()
            assert (bill.tier, bill.total) == (1, 5 * 80)
            done = subprocess.run([sys.executable, "-m", "e2e", "relay", "set-tier", "--db",
                                   relay_db, "--account", "shop", "--tier", "free"],
                                  capture_output=True, cwd=ROOT, check=False)  # fmt: skip
            assert done.returncode == 0, done.stderr
            shop.submit(shop.envelopes(b"ann", [ann.addr], MessageClass.MARKETING))
            bill = shop.bill()
            assert (bill.tier, bill.total, sum(bill.counts)) == (0, 5 * 80, 6)
            refused = subprocess.run([sys.executable, "-m", "e2e", "relay", "set-tier", "--db",
                                      relay_db, "--account", "ann", "--tier", "api"],
                                     capture_output=True, cwd=ROOT, check=False)  # fmt: skip
            assert refused.returncode == 2  # a customer has no tier
    finally:
        proc.stop()


def test_a_class_is_judged_by_the_templates_of_its_send_time(relay: RelayProcess) -> None:
    """A service message whose text a marketing template registered only afterwards matches
    is not penalised (on main, judged by the templates at report time: billed as marketing);
    the same text sent after the registration is."""
    from test_relay_class_report import SALE, class_report, send

    with httpx.Client(base_url=relay.url, timeout=30) as c:
        cust = new_device(c, b"alice", CUSTOMER)
        biz = new_device(c, b"shop", BUSINESS, tier=1)
        cust.submit(cust.envelopes(b"shop", [biz.addr], MessageClass.SERVICE))
        before = send(biz, cust, MessageClass.SERVICE, SALE)
        time.sleep(1.1)  # receive times are seconds: the registration comes strictly after
        reg = wire.RegisterTemplate(b"sale-1", int(MessageClass.MARKETING), SALE)
        biz.call(wire.Path.TEMPLATE_REGISTER, reg)
        with pytest.raises(Refused) as refused:
            class_report(cust, *before)
        assert refused.value.code == "report_rejected"
        assert biz.bill().penalty_counts == ()
        after = send(biz, cust, MessageClass.SERVICE, SALE)
        verdict = class_report(cust, *after)
        assert (verdict.declared, verdict.content) == (MessageClass.SERVICE, MessageClass.MARKETING)


def test_operator_commands_say_why_they_refuse(tmp_path: Path) -> None:
    """The relay's operator commands, as an operator runs them: each prints what it did and
    exits 0, or prints the typed reason it refused and exits 2 (never a traceback)."""
    db = str(tmp_path / "relay.db")
    key_file = tmp_path / "platform.key"
    key_file.write_bytes(bytes(range(32)))

    def relay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "e2e", "relay", *args, "--db", db],
                              capture_output=True, cwd=ROOT, text=True, timeout=60,
                              check=False)  # fmt: skip

    done = relay("rotate-franking-key")
    assert done.returncode == 0 and "is now current" in done.stdout, done.stderr
    for args, reason in (
        (("certify-business", "--platform-key", str(key_file), "--account", "nobody",
          "--display-name", "Nobody Inc"), "UnknownAccount: no such account"),
        (("certify-business", "--platform-key", str(tmp_path / "absent"), "--account",
          "nobody", "--display-name", "Nobody Inc"), "FileNotFoundError"),
        (("set-tier", "--account", "nobody", "--tier", "free"),
         "UnknownAccount: no such business account"),
        (("review-template", "--account", "nobody", "--template", "order.en.1", "--state",
          "approved"), "refused: "),
    ):  # fmt: skip
        refused = relay(*args)
        assert refused.returncode == 2 and refused.stdout == "", refused
        assert f"{args[0]} refused: " in refused.stderr and reason in refused.stderr
        assert "Traceback" not in refused.stderr
