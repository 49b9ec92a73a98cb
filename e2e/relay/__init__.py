"""The relay service (SPEC.md §10.7-§10.9): an ASGI app over a relay store.

From the request down:

* :mod:`e2e.relay.app` - the ASGI application (body, routing, errors, timing, long-poll,
  metrics); :func:`create_app`;
* :mod:`e2e.relay.pipeline` - one request's path, its security checks in SPEC §10.7's order;
  :mod:`e2e.relay.ratelimit` - the per-device rate limit;
* :mod:`e2e.relay.service` - the handlers, as functions of records in one transaction, with
  :mod:`e2e.relay.keydir` (the key directory) and :mod:`e2e.relay.reports` (franking keys,
  reports, templates, bills);
* :mod:`e2e.relay.store` - the relay-store interface and its SQL; :mod:`e2e.relay.writer` -
  what the backends' writers share; :mod:`e2e.relay.sqlite`, :mod:`e2e.relay.postgres` - the
  backends (:mod:`e2e.relay.pglink` - the PostgreSQL one's connections: timeouts, the
  watchdog, libpq); :mod:`e2e.relay.backends` - :func:`open_store`, which picks one;
  :mod:`e2e.relay.secrets` - the relay's secrets sealed at rest;
* :mod:`e2e.relay.serve` - the command line; :mod:`e2e.relay.tap` - the traffic tap.

The wire format itself is :mod:`e2e.platform.wire`, shared with clients.
"""

from __future__ import annotations

from e2e.relay.app import RelayApp, create_app
from e2e.relay.backends import open_store
from e2e.relay.service import RelayService
from e2e.relay.store import RelayStore

__all__ = ["RelayApp", "RelayService", "RelayStore", "create_app", "open_store"]
