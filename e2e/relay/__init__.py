"""The relay service (SPEC.md §10.7-§10.9): an ASGI app over a relay store.

* :mod:`e2e.relay.store` - the relay-store interface and its SQL; :mod:`e2e.relay.writer` -
  what the backends' writers share; :mod:`e2e.relay.sqlite`, :mod:`e2e.relay.postgres` - the
  backends; :mod:`e2e.relay.backends` - :func:`open_store`, which picks one.
* :mod:`e2e.relay.service` - request handlers as functions of records in one transaction.
* :mod:`e2e.relay.app` - the ASGI application; :mod:`e2e.relay.serve` - the command line.

The wire format itself is :mod:`e2e.platform.wire`, shared with clients.
"""

from __future__ import annotations

from e2e.relay.app import RelayApp, create_app
from e2e.relay.backends import open_store
from e2e.relay.service import RelayService
from e2e.relay.store import RelayStore

__all__ = ["RelayApp", "RelayService", "RelayStore", "create_app", "open_store"]
