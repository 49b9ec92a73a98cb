"""The relay's HTTP front holds against clients that never finish (SPEC §10.13), each attack run
with real sockets against ``python -m e2e relay serve``: headers that never end or never come,
headers too large or too many, bodies sent before authentication, bodies larger than their
endpoint's, bodies that stall, too many connections from one address, too many bodies in
flight, long-polls beyond their caps, and a stop with long-polls open.

The limits are made small through ``E2E_RELAY_CONFIG`` so that every test takes about a second;
the defaults are the same code with larger numbers (benches/edge_load.py measures those)."""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from relayhelp import Dev, RelayProcess, new_device

from e2e.platform import wire
from e2e.platform.policy import MessageClass

CUSTOMER, BUSINESS = 0, 1

EDGE = """
[edge]
header_timeout = 1.0
body_timeout = 1.0
body_deadline = 3.0
max_header_bytes = 4096
max_headers = 16
max_connections_per_address = 20
max_body = 1048576
max_inflight_bytes = 1048576
max_long_polls_per_device = 1
max_wait_ms = 1500
"""


def _start(db: str, tmp_path: Path, text: str) -> RelayProcess:
    conf = tmp_path / "relay.toml"
    conf.write_text(text)
    proc = RelayProcess(db, log_path=tmp_path / "relay.log", env={"E2E_RELAY_CONFIG": str(conf)})
    return proc.start()


@pytest.fixture
def edge_relay(relay_db: str, tmp_path: Path) -> Iterator[RelayProcess]:
    proc = _start(relay_db, tmp_path, EDGE)
    try:
        yield proc
    finally:
        proc.stop()


def _connect(relay: RelayProcess, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10,
                                 source_address=(source, 0))  # fmt: skip
    return s


def _answer(s: socket.socket, within: float = 5.0) -> tuple[bytes, bool]:
    """What the relay sends until it closes the connection (or ``within`` seconds pass), and
    whether it closed it."""
    s.settimeout(within)
    got = b""
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                return got, True
            got += chunk
    except TimeoutError:
        return got, False
    except ConnectionResetError:
        return got, True
    return got, False


def _head(path: str, length: int, auth: str | None = None, extra: str = "") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: relay", f"content-type: {wire.CONTENT_TYPE}",
             f"content-length: {length}"]  # fmt: skip
    if auth:
        lines.append(f"authorization: {auth}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def _healthy(relay: RelayProcess) -> bool:
    return httpx.get(relay.url + wire.Path.HEALTH, timeout=5).status_code == 200


@pytest.mark.parametrize("relay_db", ["sqlite"], indirect=True)
def test_headers_that_never_end_or_never_come_are_cut(edge_relay: RelayProcess) -> None:
    """Slowloris: 40 connections send half a request line and headers, 10 send nothing. The
    relay serves others meanwhile, and closes every one of them after the header timeout (408
    to those that started a request)."""
    slow = [_connect(edge_relay) for _ in range(10)]
    silent = []
    for i in range(40):
        s = _connect(edge_relay, f"127.0.0.{2 + i % 4}")
        s.sendall(b"POST /v1/mailbox/fetch HTTP/1.1\r\nhost: relay\r\nx-slow: ")
        silent.append(s)
    assert _healthy(edge_relay)
    # Each is closed by the relay (an undefended server keeps them all open for good).
    for s in silent:
        got, closed = _answer(s, 4.0)
        assert closed and got.startswith(b"HTTP/1.1 408 "), got[:40]
    for s in slow:
        got, closed = _answer(s, 4.0)
        assert closed, "a connection that sent nothing was kept"
    for s in (*slow, *silent):
        s.close()


@pytest.mark.parametrize("relay_db", ["sqlite"], indirect=True)
def test_headers_too_large_or_too_many_are_refused(edge_relay: RelayProcess) -> None:
    big = _connect(edge_relay)
    big.sendall(b"GET /v1/health HTTP/1.1\r\nhost: relay\r\nx-big: " + b"a" * 20_000)
    got, closed = _answer(big)
    assert closed and got.startswith(b"HTTP/1.1 431 ")
    many = _connect(edge_relay)
    lines = "".join(f"x-h{i}: 1\r\n" for i in range(40))
    many.sendall(f"GET /v1/health HTTP/1.1\r\nhost: relay\r\n{lines}\r\n".encode())
    got, closed = _answer(many)
    assert closed and got.startswith(b"HTTP/1.1 431 ")
    # Within the limits, the same request is served.
    ok = _connect(edge_relay)
    ok.sendall(b"GET /v1/health HTTP/1.1\r\nhost: relay\r\nconnection: close\r\n\r\n")
    got, closed = _answer(ok)
    assert got.startswith(b"HTTP/1.1 200 ")
    for s in (big, many, ok):
        s.close()


@pytest.mark.parametrize("relay_db", ["sqlite"], indirect=True)
def test_a_body_is_not_read_before_its_sender_is_authenticated(edge_relay: RelayProcess) -> None:
    """An unauthenticated 100 MB body (declared, or chunked without end) is answered 401 at
    once, without waiting for it, and its connection is closed (nothing more is read); so is
    a body under a header whose signature does not verify."""
    s = _connect(edge_relay)
    s.sendall(_head(wire.Path.MESSAGE_SUBMIT, 100_000_000) + b"x" * 1000)
    got, closed = _answer(s)
    assert closed and got.startswith(b"HTTP/1.1 401 ")
    c = _connect(edge_relay)
    c.sendall(b"POST /v1/messages/submit HTTP/1.1\r\nhost: relay\r\n"
              b"transfer-encoding: chunked\r\n\r\n1000\r\n" + b"x" * 4096)  # fmt: skip
    got, closed = _answer(c)
    assert closed and got.startswith(b"HTTP/1.1 401 ")
    with httpx.Client(base_url=edge_relay.url, timeout=10) as client:
        dev = new_device(client, b"mallory", CUSTOMER)
        forged = dev.sign(wire.Path.MESSAGE_SUBMIT, b"another body")
        dev.identity = type(dev.identity).generate()  # signs with a key the relay does not know
        wrong = dev.sign(wire.Path.MESSAGE_SUBMIT, b"x" * 500_000)
    for auth in (wrong, forged[:-4] + "AAAA"):
        f = _connect(edge_relay)
        f.sendall(_head(wire.Path.MESSAGE_SUBMIT, 500_000, auth) + b"x" * 1000)
        got, closed = _answer(f)
        assert closed and got.startswith(b"HTTP/1.1 401 "), got[:60]
        f.close()
    for sock in (s, c):
        sock.close()


@pytest.mark.parametrize("relay_db", ["sqlite"], indirect=True)
def test_bodies_are_capped_by_endpoint_and_must_be_the_signed_one(
    edge_relay: RelayProcess,
) -> None:
    with httpx.Client(base_url=edge_relay.url, timeout=10) as client:
        dev = new_device(client, b"bob", CUSTOMER)
        # A fetch body is at most a hundred bytes: a signed 200 kB one is refused unread.
        body = b"\xa0" * 200_000
        s = _connect(edge_relay)
        s.sendall(_head(wire.Path.MAILBOX_FETCH, len(body), dev.sign(wire.Path.MAILBOX_FETCH,
                                                                     body)))  # fmt: skip
        got, closed = _answer(s)
        assert closed and got.startswith(b"HTTP/1.1 413 ")
        s.close()
        # A body other than the one the header signed is refused.
        req = wire.Fetch(dev.acct.name, dev.device_id).to_bytes()
        auth = dev.sign(wire.Path.MAILBOX_FETCH, req)
        headers = {"authorization": auth, "content-type": wire.CONTENT_TYPE}
        r = client.post(wire.Path.MAILBOX_FETCH, content=req[:-1] + b"\x02", headers=headers)
        assert r.status_code == 401
        assert wire.WireError.from_bytes(r.content).code == "unauthenticated"
        assert dev.fetch().deliveries == ()  # and the signed one is served


@pytest.mark.parametrize("relay_db", ["sqlite"], indirect=True)
def test_a_stalled_body_is_cut_and_applies_nothing(edge_relay: RelayProcess) -> None:
    with httpx.Client(base_url=edge_relay.url, timeout=10) as client:
        cust = new_device(client, b"carol", CUSTOMER)
        biz = new_device(client, b"shop", BUSINESS)
        envs = cust.envelopes(b"shop", [biz.addr], MessageClass.SERVICE, body=b"stalled")
        body = wire.Submit(tuple(envs)).to_bytes()
        s = _connect(edge_relay)
        s.sendall(_head(wire.Path.MESSAGE_SUBMIT, len(body),
                        cust.sign(wire.Path.MESSAGE_SUBMIT, body)) + body[:100])  # fmt: skip
        _, closed = _answer(s, 4.0)
        assert closed, "a stalled body was waited for"
        s.close()
        assert biz.fetch().deliveries == ()
        # A body trickled a byte at a time within the idle timeout still meets the deadline.
        t = _connect(edge_relay)
        t.sendall(_head(wire.Path.MESSAGE_SUBMIT, len(body),
                        cust.sign(wire.Path.MESSAGE_SUBMIT, body)))  # fmt: skip
        started = time.monotonic()
        closed_at = None
        for i in range(10):  # 5 s of trickling, a byte every 0.5 s
            try:
                t.sendall(body[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic() - started
                break
            _, eof = _answer(t, 0.5)
            if eof:
                closed_at = time.monotonic() - started
                break
        # Cut while the trickle went on (the body never completes, so an undefended relay
        # would hold it through all ten bytes), and not before its idle timeout allowed.
        assert closed_at is not None and closed_at > 2.5, closed_at
        t.close()
        assert biz.fetch().deliveries == ()


@pytest.mark.parametrize("relay_db", ["sqlite"], indirect=True)
def test_connections_from_one_address_are_capped(edge_relay: RelayProcess) -> None:
    held = [_connect(edge_relay, "127.0.0.9") for _ in range(20)]
    time.sleep(0.2)
    extra = _connect(edge_relay, "127.0.0.9")
    got, closed = _answer(extra)
    assert closed and got.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in got
    assert _healthy(edge_relay)  # another address is served
    for s in held:
        s.close()
    time.sleep(0.3)
    again = _connect(edge_relay, "127.0.0.9")
    again.sendall(b"GET /v1/health HTTP/1.1\r\nhost: relay\r\nconnection: close\r\n\r\n")
    assert _answer(again)[0].startswith(b"HTTP/1.1 200 ")
    for s in (extra, again):
        s.close()


@pytest.mark.parametrize("relay_db", ["sqlite"], indirect=True)
def test_bodies_in_flight_are_within_their_budget(edge_relay: RelayProcess) -> None:
    """The budget is 1 MiB: one signed body declaring 1 MiB holds it all, so the next
    request with a body is refused 503 (retry-after) until the first is done."""
    with httpx.Client(base_url=edge_relay.url, timeout=10) as client:
        dev = new_device(client, b"dave", CUSTOMER)
        body = b"\xa1\x01" + b"\x00" * (1_048_576 - 2)
        s = _connect(edge_relay)
        auth = dev.sign(wire.Path.MESSAGE_SUBMIT, body)
        s.sendall(_head(wire.Path.MESSAGE_SUBMIT, len(body), auth) + body[:1000])
        time.sleep(0.3)
        req = wire.Fetch(dev.acct.name, dev.device_id).to_bytes()
        r = client.post(wire.Path.MAILBOX_FETCH, content=req, headers={
            "authorization": dev.sign(wire.Path.MAILBOX_FETCH, req),
            "content-type": wire.CONTENT_TYPE})  # fmt: skip
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert wire.WireError.from_bytes(r.content).code == "overloaded"
        s.close()
        time.sleep(0.3)
        assert dev.fetch().deliveries == ()


@pytest.mark.parametrize("relay_db", ["sqlite"], indirect=True)
def test_bodies_read_before_their_sender_is_known_have_a_share_of_the_budget(
    edge_relay: RelayProcess,
) -> None:
    """A device registration may carry its account's device list (up to 99.6 kB), read
    before anything vouches for the sender; such bodies reserve at most a quarter of the
    budget (256 KiB of 1 MiB here): two held open hold 199 kB, a third is refused 503 at
    once, and a device that signed is still served. (Without the share, eleven addresses
    holding 256 connections each would fill the whole budget.)"""
    size = wire.RegisterDevice.max_size()
    assert size > 90_000
    with httpx.Client(base_url=edge_relay.url, timeout=10) as client:
        dev = new_device(client, b"erin", CUSTOMER)
        nobody = Dev(client, dev.acct, 9)
        auth = nobody.sign(wire.Path.DEVICE_REGISTER, b"x" * size)
        held = []
        for _ in range(2):
            s = _connect(edge_relay)
            s.sendall(_head(wire.Path.DEVICE_REGISTER, size, auth) + b"\xa1")
            held.append(s)
        time.sleep(0.3)
        third = _connect(edge_relay)
        third.sendall(_head(wire.Path.DEVICE_REGISTER, size, auth) + b"\xa1")
        got, _ = _answer(third, 2.0)
        assert got.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in got, got[:80]
        assert dev.fetch().deliveries == ()  # a signed request is served meanwhile
        for sock in (*held, third):
            sock.close()


def _long_polls(
    dev: Dev, url: str, n: int, wait_ms: int
) -> tuple[list[float], list[threading.Thread]]:
    took: list[float] = []

    def one() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            d = Dev(c, dev.acct, dev.device_id)
            d.identity = dev.identity
            started = time.monotonic()
            try:
                d.fetch(wait_ms=wait_ms)
            except httpx.TransportError:
                # A poll that reaches a relay already shutting down (a loaded machine can
                # delay a thread past the SIGTERM) is cut: no answer time to record.
                return
            took.append(time.monotonic() - started)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return took, threads


def test_long_polls_are_capped(edge_relay: RelayProcess) -> None:
    """A long-poll waits at most max_wait_ms (1.5 s here, whatever it asks), and a device's
    second long-poll beside its first answers at once: while the first is still held."""
    with httpx.Client(base_url=edge_relay.url, timeout=30) as client:
        dev = new_device(client, b"erin", CUSTOMER)
        took, threads = _long_polls(dev, edge_relay.url, 1, 25_000)
        time.sleep(0.5)
        assert dev.fetch(wait_ms=25_000).deliveries == ()
        assert threads[0].is_alive() and took == []  # the first poll is still waiting
        for t in threads:
            t.join(20)
        # Answered at its cap: not before 1.5 s, and far from the 25 s it asked for.
        assert len(took) == 1 and 1.2 < took[0] < 12.5, took


def test_a_stop_does_not_wait_for_long_polls(relay_db: str, tmp_path: Path) -> None:
    """SIGTERM with five 25 s long-polls and idle connections open: the process does not wait
    for the polls (SPEC: it is down within 2 s; asserted here as half the 25 s the polls asked
    for, a margin no loaded machine eats)."""
    edge_relay = _start(relay_db, tmp_path, "[edge]\nmax_wait_ms = 25000\n")
    with httpx.Client(base_url=edge_relay.url, timeout=30) as client:
        devs = [new_device(client, f"poll{i}".encode(), CUSTOMER) for i in range(5)]
    threads = []
    for d in devs:
        threads += _long_polls(d, edge_relay.url, 1, 25_000)[1]
    held = [_connect(edge_relay) for _ in range(5)]  # idle connections too
    time.sleep(0.5)
    proc = edge_relay.proc
    assert proc is not None
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
        took = time.monotonic() - started
    finally:
        edge_relay.stop()
    # uvicorn ends by raising the signal it caught again, once it has shut down.
    assert took < 12.5 and proc.returncode in (0, -signal.SIGTERM), (took, proc.returncode)
    for t in threads:
        t.join(5)
    for s in held:
        s.close()


def test_the_edge_bench_in_small_refuses_every_attack() -> None:
    """benches/edge_attack.py, small (40 slow connections, 10 oversized bodies, 6 s, a 1 s
    header timeout): every honest request is answered, the slow connections are cut (408)
    and the bodies refused unread (401); no attacker connection is refused at connect. (The
    bench's timings are not asserted: it reports them.)"""
    from relayhelp import ROOT

    sys.path.insert(0, str(ROOT))
    from benches.edge_attack import run

    r = run(40, 10, 30, 6.0, env={"E2E_RELAY_EDGE_HEADER_TIMEOUT": "1"}, settle=1.0)
    assert r["quiet_errors"] == 0 and r["attacked_errors"] == 0
    assert len(r["attacked"]) == 30
    assert r["outcomes"].get("408", 0) >= 40 and r["outcomes"].get("401", 0) >= 10
    assert "connect failed" not in r["outcomes"]
