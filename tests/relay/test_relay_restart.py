"""Restart: the relay stopped (cleanly, or with kill -9) mid-conversation loses and duplicates
nothing, and a spam report on a message from before the restart still verifies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from relayhelp import ROOT, RelayProcess, WireFailure, new_device

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
            with pytest.raises(WireFailure) as exc:
                biz.submit(biz.envelopes(b"alice", [cust.addr], MessageClass.TEMPLATE))
            assert exc.value.code == "blocked"
            # A forged text does not verify.
            with pytest.raises(WireFailure) as exc:
                cust.report(b"shop", [(after[0], fk, b"something else")])
            assert exc.value.code == "report_rejected"
    finally:
        proc.stop()
