"""``python -m e2e relay serve --db <sqlite path | postgresql DSN> [--config FILE] [--host H]
[--port N]``, and the operator's ``rotate-franking-key``, ``set-tier``, ``certify-business``
(SPEC.md §10.9) and ``review-template`` (SPEC §17.1). The server is uvicorn with the relay's
edge limits around its HTTP protocol (SPEC §10.13)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from e2e.relay.blobs import BlobLimits

if TYPE_CHECKING:
    from e2e.relay.config import RelayConfig
    from e2e.relay.service import RelayService

__all__ = ["main"]

_DEFAULT = BlobLimits()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e relay")
    sub = parser.add_subparsers(dest="action", required=True)
    serve = sub.add_parser("serve", help="serve the relay over HTTP (uvicorn)")
    serve.add_argument("--db", required=True, help="SQLite file path or postgresql:// DSN")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--config", default=None,
        help="TOML configuration file (default: $E2E_RELAY_CONFIG; E2E_RELAY_<SECTION>_<NAME>"
        " variables override it)",
    )  # fmt: skip
    serve.add_argument(
        "--rate", type=float, default=None,
        help="requests/s per device, over all relay processes on the database (rate.rate)",
    )  # fmt: skip
    serve.add_argument("--burst", type=float, default=None, help="burst per device (rate.burst)")
    serve.add_argument(
        "--rate-lease", type=int, default=None,
        help="tokens a process takes from a device's bucket at once (default burst/8, at most"
        " rate/10, at least 1) (rate.lease)",
    )  # fmt: skip
    serve.add_argument(
        "--workers", type=int, default=None, help="store worker threads (ops.workers)"
    )
    serve.add_argument(
        "--blob-max-bytes", type=int, default=_DEFAULT.max_blob_bytes,
        help="largest blob (attachment ciphertext) the relay keeps: 413 beyond",
    )  # fmt: skip
    serve.add_argument(
        "--blob-quota-bytes", type=int, default=_DEFAULT.quota_bytes,
        help="most blob bytes one account keeps: 507 beyond",
    )  # fmt: skip
    serve.add_argument(
        "--blob-days", type=int, default=_DEFAULT.max_age // 86_400,
        help="days a blob is kept at most (an unreferenced one: one day)",
    )  # fmt: skip
    serve.add_argument("--tap", default=None, help="record all traffic to this file (tests)")
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--http",
        choices=["auto", "h11", "httptools"],
        default="auto",
        help="HTTP parser: httptools (C) with the uvloop event loop when installed, else h11",
    )
    rotate = sub.add_parser("rotate-franking-key", help="make a new current franking key")
    rotate.add_argument("--db", required=True)
    tier = sub.add_parser("set-tier", help="set a business account's billing tier")
    tier.add_argument("--db", required=True)
    tier.add_argument("--account", required=True)
    tier.add_argument("--tier", required=True, choices=["free", "api"])
    certify = sub.add_parser(
        "certify-business",
        help="certify a business's display name and account key with the platform key",
    )
    certify.add_argument("--db", required=True)
    certify.add_argument(
        "--platform-key", required=True, help="file holding the 32-byte platform signing key"
    )
    certify.add_argument("--account", required=True)
    certify.add_argument("--display-name", required=True)
    certify.add_argument("--days", type=int, default=365, help="validity in days")
    review = sub.add_parser(
        "review-template",
        help="approve or reject one version of a business's template by hand (SPEC §17.1)",
    )
    review.add_argument("--db", required=True)
    review.add_argument("--account", required=True, help="the business account")
    review.add_argument("--template", required=True, help="name.language.version")
    review.add_argument("--state", required=True, choices=["approved", "rejected", "pending"])
    review.add_argument("--reason", default="")
    for sp in (serve, rotate, certify, tier, review):
        sp.add_argument(
            "--secret-key-file",
            default=None,
            help="file holding the 32-byte relay secret key that seals the relay's franking and"
            " log keys in the database (the same file for every relay process on it)",
        )
    ns = parser.parse_args(argv)

    if ns.action == "serve":  # JSON lines, uvicorn's own records included (SPEC §10.9)
        from e2e.relay.observe import JsonFormatter

        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=ns.log_level.upper(), handlers=[handler])
    else:
        logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from e2e.errors import ConfigError, E2EError
    from e2e.relay.app import RelayApp
    from e2e.relay.backends import open_blob_store, open_store
    from e2e.relay.config import RelayConfig
    from e2e.relay.ratelimit import RateLimit
    from e2e.relay.service import RelayService
    from e2e.relay.tap import FileTap

    config = RelayConfig()
    if ns.action == "serve":
        try:
            config = _config(ns)
        except ConfigError as exc:
            print(f"bad configuration: {exc}", file=sys.stderr)
            return 2
        r = config.rate
        limit = RateLimit(r.rate, r.burst, lease=r.lease or None)
    secret_key = None
    if ns.secret_key_file:
        try:
            with open(ns.secret_key_file, "rb") as fh:
                secret_key = fh.read()
        except OSError as exc:
            print(f"cannot read the secret key file: {type(exc).__name__}", file=sys.stderr)
            return 2
    blobs = None
    try:
        if ns.action == "serve":
            limits = BlobLimits(
                max_blob_bytes=ns.blob_max_bytes, quota_bytes=ns.blob_quota_bytes,
                max_age=ns.blob_days * 86_400,
            )  # fmt: skip
            blobs = open_blob_store(ns.db, limits)
        ops = config.ops
        store = open_store(ns.db, ops.pg_writers, ops.pg_timeout, ops.pg_affinity)
        service = RelayService(store, settings=config, secret_key=secret_key,
                               blobs=blobs)  # fmt: skip
    except E2EError as exc:
        print(f"cannot open the relay store: {exc}", file=sys.stderr)
        return 2
    if secret_key is None and ns.action == "serve":
        logging.getLogger("e2e.relay").warning(
            "no --secret-key-file: franking and log keys are stored unsealed in the database"
        )
    if ns.action != "serve":
        return _operate(service, ns)

    import uvicorn

    from e2e.relay.edge import EdgeState, protocol_class

    _raise_open_files()
    tap_file = open(ns.tap, "ab") if ns.tap else None  # noqa: SIM115 - lives as long as the server
    app = RelayApp(
        service,
        edge=config.edge,
        rate_limit=limit,
        tap=FileTap(tap_file) if tap_file else None,
        workers=config.ops.workers,
        purge_seconds=config.ops.upkeep_seconds,
        metrics_token=config.ops.metrics_token,
    )
    edge = EdgeState(config.edge)
    edge.on_shutdown(app.drain)
    app.edge_state = edge
    http, loop = "h11", "asyncio"
    if ns.http != "h11":
        import importlib.util

        fast = all(importlib.util.find_spec(m) for m in ("httptools", "uvloop"))
        if fast:
            http, loop = "httptools", "uvloop"
        elif ns.http == "httptools":
            print("--http httptools needs httptools and uvloop installed", file=sys.stderr)
            return 2
    server = uvicorn.Config(
        app,
        host=ns.host,
        port=ns.port,
        log_level=ns.log_level,
        log_config=None,
        access_log=False,
        lifespan="on",
        http=protocol_class(http, edge),
        loop=loop,
        backlog=config.edge.backlog,
        timeout_keep_alive=config.edge.keep_alive,  # type: ignore[arg-type]
        timeout_graceful_shutdown=config.edge.shutdown_seconds,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=config.edge.max_header_bytes,
    )
    uvicorn.Server(server).run()
    if tap_file is not None:
        tap_file.close()
    return 0


def _config(ns: argparse.Namespace) -> RelayConfig:
    """The configuration file and environment, then the command line's own flags."""
    import os

    from e2e.relay.config import load

    config = load(ns.config or os.environ.get("E2E_RELAY_CONFIG"))
    flags = {"rate": ns.rate, "burst": ns.burst, "lease": ns.rate_lease}
    given = {k: v for k, v in flags.items() if v is not None}
    if given:
        config = config.replace("rate", **given)
    if ns.workers is not None:
        config = config.replace("ops", workers=ns.workers)
    return config


def _raise_open_files() -> None:
    """Each connection is a file descriptor: raise the soft limit to the hard one, so the
    edge's connection caps (SPEC §10.13), not the process's limit, decide who is refused."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - not POSIX, or not allowed
        pass


def _operate(service: RelayService, ns: argparse.Namespace) -> int:
    """Run the operator command ``ns.action`` on the relay store: print what it did (exit
    0), or why it was refused (exit 2). The store is closed either way."""
    from e2e.errors import E2EError

    command = {
        "certify-business": _certify,
        "review-template": _review_template,
        "set-tier": _set_tier,
        "rotate-franking-key": _rotate_franking_key,
    }[ns.action]
    try:
        done = command(service, ns)
    except (E2EError, OSError) as exc:
        print(f"{ns.action} refused: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        service.store.close()
    print(done)
    return 0


def _certify(service: RelayService, ns: argparse.Namespace) -> str:
    """Sign a business certificate (SPEC §13.3) for the account's current key with the
    platform key read from a file, and store it for the relay to serve. The platform key
    is only ever read by this command, never by the serving relay."""
    import time

    from e2e.errors import UnknownAccount
    from e2e.platform.certificates import PlatformSigner

    with open(ns.platform_key, "rb") as fh:
        signer = PlatformSigner(fh.read())
    account = ns.account.encode()
    acct = service.store.read(lambda tx: tx.account(account))
    if acct is None:
        raise UnknownAccount("no such account")
    cert = signer.certify(
        account, ns.display_name, acct.identity, int(time.time()), ns.days * 86_400
    )
    service.store_business_certificate(cert.to_bytes())
    return f"certified {ns.account} as {ns.display_name!r}"


def _review_template(service: RelayService, ns: argparse.Namespace) -> str:
    """Approve or reject one template version by hand (SPEC §17.1)."""
    from e2e.platform.templates import TemplateState

    state = TemplateState[ns.state.upper()]
    service.set_template_state(ns.account.encode(), ns.template.encode(), state, ns.reason)
    return f"{ns.account} {ns.template}: {ns.state}"


def _set_tier(service: RelayService, ns: argparse.Namespace) -> str:
    """Put a business account on the free or the API billing tier."""
    from e2e.errors import UnknownAccount

    account, level = ns.account.encode(), 0 if ns.tier == "free" else 1
    if not service.store.run(lambda tx: tx.set_tier(account, level)):
        raise UnknownAccount("no such business account")
    return f"{ns.account} is on the {ns.tier} tier"


def _rotate_franking_key(service: RelayService, ns: argparse.Namespace) -> str:
    """Make a new current franking key now."""
    return f"franking key {service.rotate_franking_key()} is now current"
