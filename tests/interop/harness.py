"""Drive tests/interop/harness.js (the official libsignal client under node) from Python.

libsignal is AGPL-3.0 and is only ever used here, at test time, through its published npm
package; nothing of it is part of the e2e package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
#: npm aliases in package.json, pinned by package-lock.json.
PACKAGES = ("libsignal-072", "libsignal-090", "libsignal-092", "libsignal-103")


def node_available(package: str) -> bool:
    return shutil.which("node") is not None and (HERE / "node_modules" / package).is_dir()


def require_node(package: str) -> None:
    """Skip when node or the npm packages are missing, except under CI=true: then fail."""
    if node_available(package):
        return
    msg = f"node and tests/interop/node_modules/{package} are needed (cd tests/interop && npm ci)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


class Harness:
    """One node process running one libsignal version; JSON lines over stdin/stdout."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.proc = subprocess.Popen(
            ["node", str(HERE / "harness.js"), package],
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def call(self, cmd: str, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("libsignal harness exited")
        reply: dict[str, Any] = json.loads(line)
        if not reply.pop("ok"):
            raise HarnessError(reply["error"])
        return reply

    # conveniences
    def encrypt(self, party: str, peer: str, *plaintexts: bytes) -> list[tuple[int, bytes]]:
        out = self.call("encrypt", party=party, peer=peer, plaintexts=[p.hex() for p in plaintexts])
        return [(m["type"], bytes.fromhex(m["body"])) for m in out["messages"]]

    def decrypt(self, party: str, peer: str, *messages: tuple[int, bytes]) -> list[bytes | str]:
        """Plaintext bytes for each message, or libsignal's error text (a str)."""
        out = self.call(
            "decrypt",
            party=party,
            peer=peer,
            messages=[{"type": t, "body": b.hex()} for t, b in messages],
        )
        return [
            bytes.fromhex(r["plaintext"]) if "plaintext" in r else str(r["error"])
            for r in out["results"]
        ]

    def record(self, party: str, peer: str) -> bytes | None:
        raw = self.call("session", party=party, peer=peer)["record"]
        return None if raw is None else bytes.fromhex(raw)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class HarnessError(Exception):
    """An error libsignal raised inside the harness."""
