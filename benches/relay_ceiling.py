"""``python benches/relay_ceiling.py MODE relay serve ...``: the relay server with parts of a
submission taken away, for the ceiling rows of ``benches/relay_load.py --ceiling`` (never a
relay to run: it accepts what it does not check).

MODE ``nosig``: a request's signature is not checked (its header is still decoded and its
nonce recorded). ``nostore``: a submission runs no statement (its group still begins and
commits an empty transaction) and is answered ``{}``; everything before it (the signature, the
decoders, the envelope checks) runs as usual. ``neither``: both. ``full``: nothing taken away.
What a mode reaches bounds what making the part it removes cheaper could reach.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e.__main__ import main  # noqa: E402
from e2e.platform import wire  # noqa: E402
from e2e.relay.service import RelayService  # noqa: E402

MODES = ("full", "nosig", "nostore", "neither")


def _no_signature(self: wire.AuthToken, *args: Any) -> None:
    return None


def _no_admission(self: RelayService, *args: Any) -> int:
    return 1  # "one token taken"


def _no_submission(self: RelayService, tx: Any, caller: Any, req: Any) -> wire.Ok:
    return wire.Ok()


def patch(mode: str) -> None:
    if mode not in MODES:
        raise SystemExit(f"mode must be one of {', '.join(MODES)}")
    if mode in ("nosig", "neither"):
        wire.AuthToken.verify = _no_signature  # type: ignore[method-assign]
    if mode in ("nostore", "neither"):
        # The submit route's transaction then does nothing; other routes are untouched, but
        # no request's nonce or rate bucket is recorded (the load bench sends submissions only).
        RelayService.admit = _no_admission  # type: ignore[method-assign]
        RelayService.submit = _no_submission  # type: ignore[method-assign,assignment]


if __name__ == "__main__":
    patch(sys.argv.pop(1))
    raise SystemExit(main())
