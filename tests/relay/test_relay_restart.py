"""Restart: the relay stopped (cleanly, or with kill -9) mid-conversation loses and duplicates
nothing, and a spam report on a message from before the restart still verifies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from relayhelp import ROOT, Refused, RelayProcess, new_device

from e2e.platform.envelope import Delivery
from e2e.platform.policy import MessageClass

CUSTOMER, BUSINESS = 0, 1


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_restart_mid_conversation(relay_db: str, tmp_path: Path, how: str) -> None:
    proc = RelayProcess(relay_db, log_path=tmp_path / "relay.log").start()
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as c:
            cust = new_device(c, b"alice", CUSTOMER)
            biz = new_device(c, b"shop", BUSINESS, tier=1)
            cust.submit(cust.envelopes(b"shop", [biz.addr], MessageClass.SERVICE))
            envs = biz.envelopes(b"alice", [cust.addr], MessageClass.TEMPLATE, body=b"buy now")
            receipt = biz.submit(envs)
            before = cust.fetch().deliveries
            assert len(before) == 1
        proc.stop() if how == "stop" else proc.kill()
        # A franking key rotation between the runs: the old key still verifies reports.
        subprocess.run(
            [sys.executable, "-m", "e2e", "relay", "rotate-franking-key", "--db", relay_db],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        proc.start()
        with httpx.Client(base_url=proc.url, timeout=30) as c:
            cust.http = biz.http = c
            after = cust.fetch().deliveries
            assert after == before  # not acknowledged: still there, byte for byte, once
            again = biz.submit(envs)  # the retried submission: the first receipt, stored once
            assert again == receipt
            assert cust.fetch().deliveries == before
            assert sum(biz.bill().counts) == 1
            cust.ack([Delivery.from_bytes(d).seq for d in after])
            assert cust.fetch().deliveries == ()
            assert len(biz.fetch().deliveries) == 1  # the customer's message survived too
            fk, text = biz.sent[receipt.message_id]
            verdict = cust.report(b"shop", [(after[0], fk, text)])
            assert verdict.message_ids == (receipt.message_id,)
            # The report blocked the business, persistently.
            with pytest.raises(Refused) as exc:
                biz.submit(biz.envelopes(b"alice", [cust.addr], MessageClass.TEMPLATE))
            assert exc.value.code == "blocked"
            # A forged text does not verify.
            with pytest.raises(Refused) as exc:
                cust.report(b"shop", [(after[0], fk, b"something else")])
            assert exc.value.code == "report_rejected"
    finally:
        proc.stop()


def test_a_report_verifies_on_a_process_started_before_the_key_was_made(
    relay_db: str, tmp_path: Path
) -> None:
    """A message tagged under a franking key that another relay process made after this one
    loaded its keys: a report on it sent to this process still verifies (a report fetches
    the keys it has not seen), and a forged text still does not."""
    old = RelayProcess(relay_db, log_path=tmp_path / "old.log").start()
    new = None
    try:
        subprocess.run(
            [sys.executable, "-m", "e2e", "relay", "rotate-franking-key", "--db", relay_db],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        new = RelayProcess(relay_db, log_path=tmp_path / "new.log").start()
        with (
            httpx.Client(base_url=new.url, timeout=30) as c,
            httpx.Client(base_url=old.url, timeout=30) as o,
        ):
            cust = new_device(c, b"alice", CUSTOMER)
            biz = new_device(c, b"shop", BUSINESS, tier=1)
            cust.submit(cust.envelopes(b"shop", [biz.addr], MessageClass.SERVICE))
            receipt = biz.submit(
                biz.envelopes(b"alice", [cust.addr], MessageClass.TEMPLATE, body=b"buy now")
            )
            (got,) = cust.fetch().deliveries  # tagged by the new process, under the new key
            fk, text = biz.sent[receipt.message_id]
            cust.http = o
            with pytest.raises(Refused) as exc:
                cust.report(b"shop", [(got, fk, b"something else")])
            assert exc.value.code == "report_rejected"
            verdict = cust.report(b"shop", [(got, fk, text)])
            assert verdict.message_ids == (receipt.message_id,)
    finally:
        old.stop()
        if new is not None:
            new.stop()
