"""Relay processes whose clocks differ (SPEC §10.7, §10.13): a request accepted by one is not
accepted again by another whose clock is behind, once the first has purged its nonces."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from relayhelp import Refused, RelayProcess, new_device

from e2e.platform import wire
from e2e.platform.wire import AUTH_SKEW

BEHIND = 5

#: ``python -m e2e`` in a process whose wall clock is BEHIND seconds late.
LATE = [
    "-c",
    f"import time, runpy; t = time.time; time.time = lambda: t() - {BEHIND};"
    " runpy.run_module('e2e', run_name='__main__')",
]


def test_a_replay_to_a_late_process_is_refused(relay_db: str, tmp_path: Path) -> None:
    """A request signed near the end of its skew is accepted by a relay process; once that
    process has purged the nonces it thinks expired, the same request is replayed to a
    process on the same database whose clock is 5 s behind, which still finds it fresh
    (on main, accepted: nonces were kept for the skew plus 1 s, so a process 2 s behind took
    the replay)."""
    env = {"E2E_RELAY_OPS_UPKEEP_SECONDS": "0.2"}
    first = RelayProcess(relay_db, log_path=tmp_path / "a.log", env=env).start()
    late = RelayProcess(relay_db, log_path=tmp_path / "b.log", env=env, launcher=LATE)
    try:
        late.start()
        with httpx.Client(base_url=first.url, timeout=30) as c, httpx.Client(
            base_url=late.url, timeout=30
        ) as d:
            dev = new_device(c, b"ann", 0)
            body = wire.CountPrekeys().to_bytes()
            ts = int(time.time()) - AUTH_SKEW + 2
            header = dev.sign(wire.Path.PREKEY_COUNT, body, ts)
            headers = {"content-type": wire.CONTENT_TYPE, "authorization": header}
            assert c.post(wire.Path.PREKEY_COUNT, content=body, headers=headers).status_code == 200
            while time.time() < ts + AUTH_SKEW + 3:  # the first process purges in between
                time.sleep(0.2)
            time.sleep(0.5)
            r = d.post(wire.Path.PREKEY_COUNT, content=body, headers=headers)
            assert r.status_code == 401, r.status_code
            with pytest.raises(Refused):  # and the first process refuses it by its time
                dev.call(wire.Path.PREKEY_COUNT, wire.CountPrekeys(), wire.PrekeyCount,
                         auth=header)  # fmt: skip
    finally:
        late.stop()
        first.stop()
