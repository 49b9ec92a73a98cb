"""Proof suite, part 4: attacks on identities, through ``python -m e2e relay serve`` as its own
process (SQLite and PostgreSQL), with e2e.client devices on their own stores over HTTP
(issue 25 items 1, 2, 8, 9, 10 and 11's names; issue 21 item 4). Each test is an attack the
relay used to let through; SPEC §12's attack table names them.

One relay process per backend serves the module; each test makes accounts of fresh names.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "relay"))

from relayhelp import ROOT, Acct, Dev, Refused, RelayProcess, fresh_pg_db, pg_or_skip  # noqa: E402

from e2e.client import Client  # noqa: E402
from e2e.client.http import RelayClient  # noqa: E402
from e2e.errors import CertificateError, InvalidName  # noqa: E402
from e2e.platform.certificates import BusinessCertificate, PlatformSigner  # noqa: E402
from e2e.relay.backends import open_store  # noqa: E402
from e2e.store import MemoryStore  # noqa: E402

_T = TypeVar("_T")


@dataclass
class Net:
    proc: RelayProcess
    db: str
    dir: Path


@pytest.fixture(scope="module", params=["sqlite", pytest.param("pg", marks=pytest.mark.pg)])
def net(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    d = tmp_path_factory.mktemp(f"ident-{request.param}")
    db = str(d / "relay.db") if request.param == "sqlite" else fresh_pg_db(pg_or_skip())
    proc = RelayProcess(db, log_path=d / "relay.log", extra=["--rate", "10000", "--burst", "10000"])
    proc.start()
    try:
        yield Net(proc, db, d)
    finally:
        proc.stop()


def run(coro: Callable[[], Awaitable[_T]]) -> _T:
    async def main() -> _T:
        return await coro()

    return asyncio.run(main())


def fresh(prefix: str) -> str:
    return f"{prefix}{os.urandom(4).hex()}"


class World:
    """Devices of fresh accounts on the module's relay, each on its own memory store."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.http = RelayClient(net.proc.url)
        self.clients: list[Client] = []

    async def account(self, name: str, kind: str, **kw: object) -> Client:
        store = MemoryStore()
        dev = await Client.create_account(lambda: store, self.http.connect, name, kind,
                                          prekeys=4, auto_receipts=False, **kw)  # type: ignore[arg-type]  # fmt: skip
        self.clients.append(dev)
        return dev

    async def close(self) -> None:
        for c in self.clients:
            await c.aclose()
        await self.http.aclose()


# -- issue 25 item 11: names ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "nul\x00name",  # a NUL
        "evil\u202egnp.exe",  # a right-to-left override
        "zero\u200bwidth",  # a zero-width space
        "Pa\u0443Bank",  # Latin with a Cyrillic letter
        "cafe\u0301",  # not NFC
        "\uff30ayBank",  # fullwidth P: not NFKC-stable
        "two words",  # a space in an account name
    ],
)
def test_registration_refuses_names_that_do_not_show_what_they_are(net: Net, name: str) -> None:
    with httpx.Client(base_url=net.proc.url, timeout=30) as http:
        dev = Dev(http, Acct((name + os.urandom(3).hex()).encode(), 1, 1), 1)
        with pytest.raises(Refused) as err:
            dev.register_account()
        assert (err.value.status, err.value.code) == (400, "malformed")
        # The same request under a plain name is accepted: only the name was refused.
        ok = Dev(http, Acct(fresh("plain").encode(), 1, 1), 1)
        ok.register_account()


def test_a_client_refuses_such_a_name_before_anything_is_made(net: Net) -> None:
    async def go() -> None:
        w = World(net)
        with pytest.raises(InvalidName):
            await w.account(fresh("Pa\u0443Bank"), "business", tier=1)
        await w.close()

    run(go)


def _certify(
    net: Net, account: str, display: str, key_file: Path
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "e2e", "relay", "certify-business", "--db", net.db,
           "--platform-key", str(key_file), "--account", account,
           "--display-name", display]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_confusable_business_names_are_never_verified(net: Net) -> None:
    """ "PаyBank" with a Cyrillic а: the operator's command refuses to certify it, and a
    client refuses a certificate with it even when the platform key signed it."""

    async def go() -> None:
        w = World(net)
        bank = await w.account(fresh("paybank"), "business", tier=1)
        cust = await w.account(fresh("cust"), "customer")
        platform = PlatformSigner()
        key_file = net.dir / f"platform-{os.urandom(3).hex()}.key"
        key_file.write_bytes(platform.private_bytes())
        await cust.pin_platform_key(platform.public)
        name = bank.profile.account
        for display in ("Pa\u0443Bank", "Pay\u202eBank", "\uff30ayBank"):
            done = _certify(net, name, display, key_file)
            assert done.returncode == 2, done.stdout
            assert not (await cust.business_identity(name)).verified
        # A certificate the platform key signed around the checks is refused by the client.
        bank_key = await bank.account_identity()
        forged = BusinessCertificate(name.encode(), "Pa\u0443Bank", bank_key, 0, 2**40,
                                     b"\x00" * 64)  # fmt: skip
        sig = platform._key.sign(forged.signed_bytes())
        raw = BusinessCertificate(name.encode(), "Pa\u0443Bank", bank_key, 0, 2**40, sig)
        store = open_store(net.db)
        try:
            store.run(lambda tx: tx.put_business_certificate(name.encode(), raw.to_bytes()))
        finally:
            store.close()
        with pytest.raises(CertificateError):
            await cust.business_identity(name)
        # The honest name is certified and shown.
        assert _certify(net, name, "Pay Bank", key_file).returncode == 0
        ident = await cust.business_identity(name)
        assert ident.verified and ident.display_name == "Pay Bank"
        await w.close()

    run(go)
