"""Proof suite: an ad's entry point (SPEC §17.4) tells the ad service and the relay no more than
they need. A customer answers a business's ad with e2e.client over HTTP through ``python -m
e2e relay serve`` (a separate process, its tap on, SQLite and PostgreSQL); the business
answers inside the entry window; the ad service pulls its conversions. Then, as the
adversary holding each party's records:

* the relay's tap, its whole database and its log hold none of the texts, and the database
  does not hold the entry token (only its id: the token is checked and dropped) nor any row
  linking the ad to the customer;
* the ad service's conversion records hold the ad and the business, no text, no customer
  name, no time finer than the hour;
* the business's device never receives the token (it learns of the ad from its bill).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "relay"))

from relayhelp import RelayProcess, fresh_pg_db, pg_or_skip, relay_bytes  # noqa: E402

from e2e.client import Client  # noqa: E402
from e2e.client.http import RelayClient  # noqa: E402
from e2e.platform import wire  # noqa: E402
from e2e.platform.adentry import Conversion, EntryToken  # noqa: E402
from e2e.platform.adservice import AdService  # noqa: E402
from e2e.store.sqlite import SqliteStore  # noqa: E402

HOUR = 3600
TOKEN = "ad-service-report-token"


@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.pg)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "relay.db")
    return fresh_pg_db(pg_or_skip())


def _sql(db: str, stmt: str) -> list[tuple[Any, ...]]:
    if db.endswith(".db"):
        with sqlite3.connect(db) as conn:
            return conn.execute(stmt).fetchall()
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        cur = conn.execute(stmt)  # type: ignore[call-overload]
        return list(cur.fetchall()) if cur.description else []


def test_ad_service_and_relay_learn_no_text_and_no_customer(db: str, tmp_path: Path) -> None:
    ads = AdService()
    tap, log = tmp_path / "tap.bin", tmp_path / "relay.log"
    env = {"E2E_RELAY_ADS_ENTRY_KEY": ads.entry_key.public.hex(),
           "E2E_RELAY_ADS_REPORT_TOKEN": TOKEN}  # fmt: skip
    proc = RelayProcess(db, log_path=log, extra=["--tap", str(tap), "--log-level", "debug"],
                        env=env).start()  # fmt: skip
    keys: dict[str, bytes] = {}

    def store(name: str) -> Callable[[], Any]:
        key = keys.setdefault(name, os.urandom(32))
        return lambda: SqliteStore(tmp_path / f"{name}.db", key)

    texts: list[bytes] = []
    token = ads.issue_entry(b"spring-sale", b"acme", int(time.time()))
    customer = b"dana-" + os.urandom(4).hex().encode()

    async def run() -> None:
        net = RelayClient(proc.url)
        cust = await Client.create_account(store("cust"), net.connect, customer.decode(),
                                           "customer")  # fmt: skip
        shop = await Client.create_account(store("shop"), net.connect, "acme", "business",
                                           tier=1)  # fmt: skip
        first = f"I saw your ad {os.urandom(6).hex()}".encode()
        texts.append(first)
        sent = await cust.send("acme", first, entry=token)
        assert sent.message_id
        await shop.sync()
        got = [m.body for m in await shop.history(customer.decode()) if not m.outgoing]
        assert got == [first]
        for i in range(2):
            answer = f"agent answer {i} {os.urandom(6).hex()}".encode()
            texts.append(answer)
            await shop.send(customer.decode(), answer)
        await cust.sync()
        assert [m.body for m in await cust.history("acme") if not m.outgoing] == texts[1:]
        bill = await shop.bill()
        assert (bill.entry_ads, bill.entry_counts, bill.total) == ((b"spring-sale",), (1,), 0)
        for client in (cust, shop):
            await client.aclose()
        await net.aclose()

    try:
        asyncio.run(run())
        _sql(db, f"UPDATE ad_entries SET bucket = bucket - {2 * HOUR}")  # the hour ended
        r = httpx.get(f"{proc.url}{wire.Path.AD_CONVERSIONS}?after=0",
                      headers={"authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert r.status_code == 200
        assert ads.receive_conversions(r.content) == 1
    finally:
        proc.stop()
    parsed = EntryToken.from_bytes(token)
    stored = relay_bytes(db)
    seen_by_relay = tap.read_bytes() + stored
    logged = log.read_bytes()
    for t in texts:
        assert t not in seen_by_relay and t not in logged, t
    # The relay keeps the token's id, never the token (nor its signature).
    assert parsed.token_id in stored and parsed.signature not in stored and token not in stored
    rows = _sql(db, "SELECT * FROM ad_entries")
    assert len(rows) == 1
    for value in rows[0]:
        raw = bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()
        assert customer not in raw
    # The ad service: the ad and the business in an hour, nothing else.
    assert ads.conversions(b"acme") == {b"spring-sale": 1}
    for raw in ads.conversion_records:
        conv = Conversion.from_bytes(raw)
        assert conv.bucket % HOUR == 0
        assert customer not in raw and all(t not in raw for t in texts)
    # The business's device was never handed the token: no delivery carried it.
    delivered = b"".join(body for path, body in _tap(tap) if path.startswith("send:/v1/mailbox"))
    assert delivered and parsed.signature not in delivered


def _tap(tap: Path) -> list[tuple[str, bytes]]:
    from e2e.relay.tap import read_tap

    return read_tap(tap.read_bytes())
