"""``python -m e2e business gateway --relay URL --store PATH|DSN --account NAME ...``: run the
business API gateway (SPEC.md §17.2) until SIGTERM/SIGINT.

Secrets come from the environment, never from the command line: ``E2E_GATEWAY_TOKEN`` (the
API's bearer token), ``E2E_WEBHOOK_SECRET`` (the webhooks' HMAC key) and the store's key,
``E2E_GATEWAY_STORE_KEY`` (64 hex digits) or ``E2E_GATEWAY_PASSPHRASE`` (scrypt).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable

from e2e.store import Store

__all__ = ["main"]


def _opener(ns: argparse.Namespace) -> Callable[[], Store]:
    key_hex = os.environ.get("E2E_GATEWAY_STORE_KEY")
    passphrase = os.environ.get("E2E_GATEWAY_PASSPHRASE")
    key = bytes.fromhex(key_hex) if key_hex else None
    if (key is None) == (passphrase is None):
        raise SystemExit("set one of E2E_GATEWAY_STORE_KEY (hex) and E2E_GATEWAY_PASSPHRASE")
    if ns.store.startswith(("postgresql:", "postgres:")) or "dbname=" in ns.store:
        from e2e.store.postgres import PostgresStore

        return lambda: PostgresStore(ns.store, key, passphrase=passphrase, schema=ns.schema)
    from e2e.store.sqlite import SqliteStore

    return lambda: SqliteStore(ns.store, key, passphrase=passphrase)


async def _run(ns: argparse.Namespace) -> int:
    import uvicorn

    from e2e.business.gateway import Gateway
    from e2e.business.webhooks import Deliverer
    from e2e.client import Client
    from e2e.client.http import RelayClient
    from e2e.errors import StateError

    token = os.environ.get("E2E_GATEWAY_TOKEN", "")
    secret = os.environ.get("E2E_WEBHOOK_SECRET", "")
    if len(token) < 16:
        print("E2E_GATEWAY_TOKEN: at least 16 characters", file=sys.stderr)
        return 2
    if ns.webhook and len(secret) < 16:
        print("E2E_WEBHOOK_SECRET: at least 16 characters with --webhook", file=sys.stderr)
        return 2
    net = RelayClient(ns.relay)
    opener = _opener(ns)
    try:
        client = await Client.open(opener, net.connect, auto_receipts=True)
    except StateError:
        if not ns.create:
            print("no business device in this store (--create makes one)", file=sys.stderr)
            return 2
        client = await Client.create_account(
            opener, net.connect, ns.account, "business", tier=ns.tier
        )
    if client.profile.account != ns.account or client.profile.kind != "business":
        print("the store holds another account's device", file=sys.stderr)
        return 2
    deliverer = Deliverer(ns.webhook, secret.encode()) if ns.webhook else None
    gateway = Gateway(client, token, deliverer)
    config = uvicorn.Config(gateway.app, host=ns.host, port=ns.port, log_level=ns.log_level,
                            log_config=None, access_log=False, lifespan="on",
                            interface="asgi3")  # fmt: skip
    server = uvicorn.Server(config)
    pump = asyncio.create_task(gateway.pump())
    try:
        await server.serve()
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        if deliverer is not None:
            await deliverer.aclose()
        await client.aclose()
        await net.aclose()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e business")
    sub = parser.add_subparsers(dest="action", required=True)
    gw = sub.add_parser("gateway", help="run the business API gateway")
    gw.add_argument("--relay", required=True, help="the relay's URL")
    gw.add_argument("--store", required=True, help="SQLite file path or postgresql DSN")
    gw.add_argument("--schema", default="public", help="PostgreSQL schema of the store")
    gw.add_argument("--account", required=True, help="the business account")
    gw.add_argument("--create", action="store_true", help="create the account if the store is new")
    gw.add_argument(
        "--tier", type=int, default=1,
        help="billing tier a new account declares (the relay's operator decides the one it"
        " bills, SPEC §10.13)",
    )  # fmt: skip
    gw.add_argument("--host", default="127.0.0.1")
    gw.add_argument("--port", type=int, default=8090)
    gw.add_argument("--webhook", default=None, help="the URL webhooks are POSTed to")
    gw.add_argument("--log-level", default="info")
    ns = parser.parse_args(argv)
    from e2e.relay.observe import JsonFormatter  # JSON lines, as the relay's (SPEC §17.2)

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=ns.log_level.upper(), handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request to the relay
    return asyncio.run(_run(ns))
