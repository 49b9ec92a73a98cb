"""The outbox relay's command (SPEC.md §10.14): ``python -m e2e.relay.cluster_serve outbox
--placement MAP.json --cluster NAME=DSN ... --origin NAME`` moves one cluster's outbox to the
other clusters until it is stopped (SIGTERM) or killed (a killed one loses nothing: the next
one delivers what is left, each copy applied once)."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from e2e.errors import StoreUnavailable
from e2e.relay.backends import open_store
from e2e.relay.cluster import ClusterRouter, OutboxRelay
from e2e.relay.config import Mailbox
from e2e.relay.placement import PlacementMap

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one origin's outbox relay until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m e2e.relay.cluster_serve")
    sub = parser.add_subparsers(dest="command", required=True)
    outbox = sub.add_parser("outbox", help="move one cluster's outbox to the other clusters")
    outbox.add_argument("--placement", required=True, help="the placement map (JSON)")
    outbox.add_argument("--cluster", action="append", default=[], help="NAME=DSN, per cluster")
    outbox.add_argument("--origin", required=True, help="the cluster whose outbox to move")
    outbox.add_argument("--batch", type=int, default=256)
    outbox.add_argument("--idle", type=float, default=0.05, help="s to wait when it is empty")
    args = parser.parse_args(argv)
    pmap = PlacementMap.from_json(Path(args.placement).read_bytes())
    dsns = dict(item.split("=", 1) for item in args.cluster)
    router = ClusterRouter(pmap, dsns, open_store, Mailbox().quota())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    relay = OutboxRelay(router, args.origin, args.batch)
    try:
        while not stop.is_set():
            try:
                moved = relay.pump()
            except StoreUnavailable:
                moved = 0
            if not moved:
                stop.wait(args.idle)
    finally:
        router.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
