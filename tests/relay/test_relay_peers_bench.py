"""benches/relay_peers.py, the load generator that drives e2e's relay, Synapse and ejabberd:
what it counts as accepted is what the server stored, its HTTP and XMPP clients read the
answers the peers really give, and its no-fsync launcher really drops the per-commit flush.

The peers themselves (Synapse, ejabberd) are installed by the bench when run by hand, never
here; the e2e rows run against a real ``relay serve``.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benches" / "relay_peers.py"


@pytest.fixture(scope="module")
def peers() -> Any:
    sys.path.insert(0, str(ROOT / "benches"))
    import relay_peers

    return relay_peers


def test_e2e_rows_count_what_the_relay_stored(tmp_path: Path) -> None:
    """A small run of the e2e rows (with and without the per-commit flush, closed and open
    loop): every phase accepted messages, none was refused, and what the generator counted as
    accepted is exactly what the relays' mailboxes hold."""
    out = subprocess.run(
        [sys.executable, str(BENCH), "--only", "e2e-sqlite", "e2e-sqlite-nofsync", "--clients",
         "4", "--seconds", "0.5", "--rounds", "1", "--rates", "40", "--closed-cap", "300",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = re.findall(r"^ 0 (e2e-sqlite\S*)\s+(closed|open40)\s+(\d+)\s+\S+\s+\S+\s+(\d+)\s",
                      out.stdout, re.M)  # fmt: skip
    assert {(name, kind) for name, kind, _, _ in rows} == {
        ("e2e-sqlite", "closed"), ("e2e-sqlite", "open40"),
        ("e2e-sqlite-nofsync", "closed"), ("e2e-sqlite-nofsync", "open40"),
    }  # fmt: skip
    for name, kind, rate, bad in rows:
        assert int(rate) > 0 and int(bad) == 0, (name, kind, out.stdout)
    counts = re.findall(r"^# (e2e-sqlite\S*): acknowledged (\d+), stored (\d+)$", out.stdout, re.M)
    assert len(counts) == 2
    for _, acked, stored in counts:
        assert int(acked) > 0 and acked == stored, out.stdout
    assert "# e2e-sqlite-nofsync: WAL, synchronous=NORMAL; 1 relay processes" in out.stdout
    assert list(tmp_path.iterdir()) == []  # the run's directory is removed


def test_nofsync_launcher_sets_synchronous_normal(tmp_path: Path, peers: Any) -> None:
    """The ``-nofsync`` rows' relay: its write connection at synchronous=NORMAL (1), where the
    relay's own is FULL (2)."""
    from e2e.relay.sqlite import SqliteRelayStore

    plain = SqliteRelayStore(str(tmp_path / "a.db"))
    original = SqliteRelayStore.__init__
    try:
        peers.nofsync_patch()
        patched = SqliteRelayStore(str(tmp_path / "b.db"))
    finally:
        SqliteRelayStore.__init__ = original  # type: ignore[method-assign]
    assert plain._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert patched._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    plain.close()
    patched.close()


async def _serve(answers: list[bytes]) -> tuple[asyncio.Server, int]:
    """A loopback server that answers each request it reads with the next of ``answers``,
    sent in two pieces (a client must not expect an answer in one read)."""
    it = iter(answers)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            answer = next(it, b"")
            if not answer:
                break
            writer.write(answer[:7])
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(answer[7:])
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_http_client_reads_chunked_and_sized_answers(peers: Any) -> None:
    """Synapse answers in chunks, the relay with a length: both are read whole, on one
    keep-alive connection, and only a 200 counts as accepted."""
    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc",
        b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    ]

    async def go() -> list[bool]:
        server, port = await _serve(answers)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = peers.http_request("PUT", "127.0.0.1", "/x", b"{}", {})
        conn = peers.HttpConn(reader, writer, lambda: request)
        got = [await conn.send() for _ in answers]
        assert conn.why == {"429": 1}  # the refusal's reason, as printed
        conn.close()
        server.close()
        return got

    assert asyncio.run(go()) == [True, True, False, True]


def test_xmpp_client_waits_for_the_ack_that_counts_its_message(peers: Any) -> None:
    """A message counts once the server's XEP-0198 ``<a h/>`` reaches it (an older ack does
    not); a stream error is a refusal, not a hang."""
    answers = [
        b"<a xmlns='urn:xmpp:sm:3' h='1'/>",
        b"<a h='1' xmlns='urn:xmpp:sm:3'/><message from='x'/><a h='2' xmlns='urn:xmpp:sm:3'/>",
        b"<stream:error><policy-violation/></stream:error></stream:stream>",
    ]

    async def go() -> list[bool]:
        server, port = await _serve(answers)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = peers.XmppConn(reader, writer, bytearray(), b"shop@localhost", b"x" * 10)
        got = [await asyncio.wait_for(conn.send(), 5) for _ in answers]
        assert conn.why == {"stream-error": 1}
        conn.close()
        server.close()
        return got

    assert asyncio.run(go()) == [True, True, False]
