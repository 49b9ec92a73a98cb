"""Key changes and verified businesses in the async client over the relay service process
(SPEC §13.3): a changed account key is a pending event the application sees, sending waits
until it is accepted (across a restart of the client), and the platform-certified business
name is shown as verified only when the certificate verifies under the pinned platform key.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.client import Client
from e2e.client.http import RelayClient
from e2e.errors import CertificateError, KeyChangePending, StateError
from e2e.fingerprint import displayable, logical_fingerprint
from e2e.platform.certificates import PlatformSigner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "relay"))

from relayhelp import ROOT, RelayProcess  # noqa: E402

StoreFactory = Callable[[str], Any]
SECRET = b"my card number is 4111 1111 1111 1111"


@pytest.fixture
def relay(relay_db: str, tmp_path: Path) -> Iterator[RelayProcess]:
    proc = RelayProcess(relay_db, log_path=tmp_path / "relay.log").start()
    try:
        yield proc
    finally:
        proc.stop()


def _sql(db: str, stmt: str, params: tuple[Any, ...]) -> None:
    """Change the relay's database behind its back (an operator reset of an account)."""
    if "dbname=" in db or db.startswith("postgres"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(stmt.replace("?", "%s"), params)  # type: ignore[arg-type]
        return
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute(stmt, params)


def _certify(db: str, key_file: Path, account: str, name: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "e2e", "relay", "certify-business", "--db", db,
           "--platform-key", str(key_file), "--account", account,
           "--display-name", name]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_key_change_waits_until_accepted_across_a_restart(
    relay: RelayProcess, stores: StoreFactory
) -> None:
    async def run() -> None:
        net = RelayClient(relay.url)
        c = net.connect
        phone = await Client.create_account(stores("phone"), c, "carol", "customer")
        admin = await Client.create_account(stores("admin"), c, "acme", "business")
        await phone.send("acme", "hello")
        assert [m.body for m in await admin.sync()] == [b"hello"]
        old = await admin.account_identity()
        assert await phone.key_changes() == []
        # acme's account is reset and set up again with a new account key.
        for table, column in [("devices", "account"), ("device_lists", "account"),
                              ("prekeys", "account"),
                              ("last_resort", "account"), ("accounts", "name")]:  # fmt: skip
            _sql(relay.db, f"DELETE FROM {table} WHERE {column} = ?", (b"acme",))
        await admin.aclose()
        admin = await Client.create_account(stores("admin2"), c, "acme", "business")
        new = await admin.account_identity()
        with pytest.raises(KeyChangePending):
            await phone.refresh("acme")
        [change] = await phone.key_changes()
        assert (change.account, change.old, change.new) == ("acme", old, new)
        me = await phone.account_identity()
        expected = displayable(
            logical_fingerprint(b"carol", me), logical_fingerprint(b"acme", new)
        )  # fmt: skip
        assert change.safety_number == expected and len(expected) == 60
        assert await phone.pinned("acme") == old  # nothing accepted yet
        # Sending waits: refused before any session or ciphertext to the new key exists.
        with pytest.raises(KeyChangePending):
            await phone.send("acme", SECRET)
        assert await phone.pending() == []
        assert await admin.sync() == []
        # The pending change survives a restart of the client.
        await phone.aclose()
        phone = await Client.open(stores("phone"), c)
        assert [k.new for k in await phone.key_changes()] == [new]
        with pytest.raises(KeyChangePending):
            await phone.send("acme", SECRET)
        with pytest.raises(StateError):
            await phone.accept_key_change("acme", old)  # not the key that was shown
        await phone.accept_key_change("acme", new)
        assert await phone.key_changes() == []
        assert await phone.pinned("acme") == new
        await phone.send("acme", "after accepting")
        assert [m.body for m in await admin.sync()] == [b"after accepting"]
        with pytest.raises(StateError):
            await phone.accept_key_change("acme")  # nothing pending any more
        for client in (phone, admin):
            await client.aclose()
        await net.aclose()

    asyncio.run(run())


def test_verified_business_and_fake_names(
    relay: RelayProcess, stores: StoreFactory, tmp_path: Path
) -> None:
    secret = os.urandom(32)
    platform = PlatformSigner(secret)
    key_file = tmp_path / "platform.key"
    key_file.write_bytes(secret)

    async def run() -> None:
        net = RelayClient(relay.url)
        c = net.connect
        phone = await Client.create_account(stores("phone"), c, "carol", "customer")
        bank = await Client.create_account(stores("bank"), c, "bank", "business")
        shop = await Client.create_account(stores("shop"), c, "shop", "business")
        # Without a pinned platform key, or without a certificate: unverified.
        assert not (await phone.business_identity("bank")).verified
        await phone.pin_platform_key(platform.public)
        with pytest.raises(CertificateError):
            await phone.pin_platform_key(PlatformSigner().public)
        assert (await phone.business_identity("shop")).status == "unverified"

        # The platform (operator CLI with the platform key) certifies the bank.
        done = await asyncio.to_thread(_certify, relay.db, key_file, "bank", "First Bank")
        assert done.returncode == 0, done.stderr
        ident = await phone.business_identity("bank")
        assert ident.verified and ident.display_name == "First Bank"
        # A customer account is never certified.
        refused = await asyncio.to_thread(_certify, relay.db, key_file, "carol", "First Bank")
        assert refused.returncode != 0 and "CertificateError" in refused.stderr

        # The relay (or anyone without the platform key) offers a fake certificate naming
        # the shop "First Bank": refused, not shown as unverified.
        rogue = PlatformSigner().certify(
            b"shop", "First Bank", await shop.account_identity(), 1_700_000_000, 10**9
        )
        _sql(relay.db, "INSERT INTO business_certs (account, certificate) VALUES (?, ?)",
             (b"shop", rogue.to_bytes()))  # fmt: skip
        with pytest.raises(CertificateError):
            await phone.business_identity("shop")
        # A genuine certificate of the bank replayed for the shop: refused as well.
        bank_cert = platform.certify(
            b"bank", "First Bank", await bank.account_identity(), 1_700_000_000, 10**9
        )
        _sql(relay.db, "UPDATE business_certs SET certificate = ? WHERE account = ?",
             (bank_cert.to_bytes(), b"shop"))  # fmt: skip
        with pytest.raises(CertificateError):
            await phone.business_identity("shop")
        # The platform key pin survives a restart.
        await phone.aclose()
        phone = await Client.open(stores("phone"), c)
        assert (await phone.business_identity("bank")).verified
        for client in (phone, bank, shop):
            await client.aclose()
        await net.aclose()

    asyncio.run(run())
