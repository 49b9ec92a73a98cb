"""Test helpers: start ``python -m e2e relay serve`` as a separate process, and a small
synchronous wire client (httpx) that signs requests as a device.

The client sends envelopes around opaque frames: the relay never opens a frame, so the relay
tests need no sessions (the proof suite in tests/security does the end-to-end part).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from e2e.keys import KeyPair
from e2e.platform import wire
from e2e.platform.directory import ADMIN, DeviceCertificate, SignedDeviceList
from e2e.platform.envelope import Envelope
from e2e.platform.franking import Report, ReportItem, commit
from e2e.platform.policy import MessageClass
from e2e.prekeys import LocalPrekeys, PrekeyBundle
from e2e.suite import DEFAULT

ROOT = Path(__file__).resolve().parents[2]


#: Test relays listen on ports below the kernel's ephemeral range (32768 and up on Linux), so
#: an outgoing connection never takes a port a stopped relay is about to be restarted on; each
#: pytest-xdist worker has its own block of them, so two workers never pick the same port.
_PORT_BLOCK = 2000
_PORT_BASE = 12000
_next_port: list[int] = []


def free_port() -> int:
    """A loopback port nobody listens on, unique within this test process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    low = _PORT_BASE + (index % 10) * _PORT_BLOCK
    if not _next_port:
        _next_port.append(low + random.randrange(_PORT_BLOCK))
    for _ in range(_PORT_BLOCK):
        port = low + (_next_port[0] - low) % _PORT_BLOCK
        _next_port[0] = port + 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in this worker's block")


#: Settings every test relay starts with unless it sets them: the registration and claim
#: limits of SPEC §10.13 loose enough for tests that make many accounts from one address
#: (tests/relay/test_relay_admission.py runs them tight).
GENEROUS: dict[str, str] = {
    "E2E_RELAY_ADMISSION_ADDRESS_BURST": "100000",
    "E2E_RELAY_ADMISSION_BURST": "100000",
    "E2E_RELAY_LIMITS_CLAIM_BURST": "100000",
    "E2E_RELAY_LIMITS_DEVICE_CLAIM_BURST": "100000",
    "E2E_RELAY_OPS_METRICS_TOKEN": "operator-metrics-token",
    "E2E_RELAY_ADMISSION_BUSINESS_TIER": "-1",
}


@contextmanager
def relay_with(db: str, log: Path, env: dict[str, str]) -> Iterator[RelayProcess]:
    """A relay process on ``db`` with these settings (``E2E_RELAY_...`` variables), stopped
    afterwards."""
    proc = RelayProcess(db, log_path=log, env=env).start()
    try:
        yield proc
    finally:
        proc.stop()


def relay_metrics(url: str) -> str:
    """A test relay's metrics, asked with its operator token."""
    token = GENEROUS["E2E_RELAY_OPS_METRICS_TOKEN"]
    r = httpx.get(url + wire.Path.METRICS, headers={"authorization": f"Bearer {token}"})
    r.raise_for_status()
    return r.text


@dataclass
class RelayProcess:
    """One relay server process on a loopback port."""

    db: str
    port: int = 0
    extra: list[str] = field(default_factory=list)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    #: What runs ``relay serve ...``: ``python -m e2e`` (a bench may put a wrapper there).
    launcher: list[str] = field(default_factory=lambda: ["-m", "e2e"])
    #: Environment variables added to this process's (``E2E_RELAY_CONFIG``, settings).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> RelayProcess:
        if not self.port:
            self.port = free_port()
        cmd = [
            sys.executable,
            *self.launcher,
            "relay",
            "serve",
            "--db",
            self.db,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.extra,
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, **GENEROUS, **self.env}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + wire.Path.HEALTH, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("relay did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def cpu_seconds(self) -> float:
        """CPU time the relay process has used so far, all its threads (Linux: the
        nanosecond counters of /proc/<pid>/task/*/schedstat)."""
        assert self.proc is not None
        total = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        return total / 1e9

    def kill(self) -> None:
        """kill -9: no shutdown of any kind."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


class Refused(Exception):
    def __init__(self, status: int, err: wire.WireError) -> None:
        super().__init__(f"{status} {err.code}: {err.message}")
        self.status = status
        self.code = err.code
        self.error = err


@dataclass
class Acct:
    """An account and what its account key signed: the devices it lists, the tombstones of
    those it revoked, and its newest device list (SPEC §10.1)."""

    name: bytes
    kind: int
    tier: int = 0
    identity: KeyPair = field(default_factory=KeyPair.generate)
    version: int = 0
    serial: int = 0
    listed: dict[int, bytes] = field(default_factory=dict)
    tombstones: list[int] = field(default_factory=list)

    def next_serial(self) -> int:
        self.serial += 1
        return self.serial

    def sign_list(self) -> bytes:
        """The account's next device list, signed."""
        self.version += 1
        return SignedDeviceList.sign(self.identity, self.name, self.version,
                                     self.listed.values(), self.tombstones).to_bytes()  # fmt: skip

    def put(self, device_id: int, cert: bytes) -> bytes:
        """The next list, carrying ``cert`` (a certificate it replaces is revoked)."""
        old = self.listed.get(device_id)
        if old is not None:
            self.tombstones.append(DeviceCertificate.from_bytes(old).serial)
        self.listed[device_id] = cert
        return self.sign_list()

    def drop(self, device_id: int) -> bytes:
        """The next list, without device ``device_id`` (revoked)."""
        self.tombstones.append(DeviceCertificate.from_bytes(self.listed.pop(device_id)).serial)
        return self.sign_list()


class Dev:
    """One device speaking the wire API."""

    def __init__(self, client: httpx.Client, acct: Acct, device_id: int, one_time: int = 4,
                 role: int = ADMIN) -> None:  # fmt: skip
        self.http = client
        self.acct = acct
        self.device_id = device_id
        self.role = role
        self._cert: bytes | None = None
        self.identity = KeyPair.generate()
        self.prekeys = LocalPrekeys.generate(self.identity, DEFAULT, one_time)
        self.clock_skew = 0
        self.sent: dict[bytes, tuple[bytes, bytes]] = {}

    @property
    def addr(self) -> tuple[bytes, int]:
        return (self.acct.name, self.device_id)

    def certificate(self) -> bytes:
        """This device's certificate (made once, with the account's next serial)."""
        if self._cert is None:
            self._cert = DeviceCertificate.issue(
                self.acct.identity, self.acct.name, self.device_id, self.identity.public,
                self.acct.next_serial(), self.role,
            ).to_bytes()  # fmt: skip
        return self._cert

    def sign(self, path: str, body: bytes, timestamp: int | None = None) -> str:
        ts = int(time.time()) + self.clock_skew if timestamp is None else timestamp
        return wire.sign_request(
            self.identity, self.acct.name, self.device_id, "POST", path, body, ts
        )

    def raw(self, path: str, body: bytes, auth: str | None = "sign") -> httpx.Response:
        headers = {"content-type": wire.CONTENT_TYPE}
        if auth == "sign":
            headers["authorization"] = self.sign(path, body)
        elif auth is not None:
            headers["authorization"] = auth
        return self.http.post(path, content=body, headers=headers)

    def call(
        self, path: str, req: Any, resp: type[Any] = wire.Ok, auth: str | None = "sign"
    ) -> Any:
        r = self.raw(path, req.to_bytes(), auth)
        if r.status_code != 200:
            raise Refused(r.status_code, wire.WireError.from_bytes(r.content))
        return resp.from_bytes(r.content)

    # -- the API ------------------------------------------------------------------------

    def register_account(self) -> None:
        a = self.acct
        self.call(
            wire.Path.ACCOUNT_REGISTER,
            wire.RegisterAccount.create(a.name, a.kind, a.identity, a.tier),
            auth=None,
        )

    def register(self) -> None:
        """Register this device with the account's next device list carrying it (or the
        list in force, if it carries it already)."""
        cert = self.certificate()
        signed = None if self.acct.listed.get(self.device_id) == cert else self.acct.put(
            self.device_id, cert)  # fmt: skip
        self.call(wire.Path.DEVICE_REGISTER, wire.RegisterDevice(cert, signed))

    def remove(self, device_id: int) -> None:
        """(Admin) revoke device ``device_id`` of this account: its next device list."""
        self.call(wire.Path.DEVICE_PUBLISH, wire.PublishDevices(self.acct.drop(device_id)))

    def bundles(self) -> tuple[list[bytes], bytes]:
        pk = self.prekeys
        spk = pk.signed[max(pk.signed)]
        fresh_kem = [k for k in pk.kem.values() if not k.last_resort]
        one = [
            PrekeyBundle(
                DEFAULT,
                self.identity.public,
                spk.id,
                spk.pair.public,
                spk.signature,
                opk.id,
                opk.pair.public,
                kem.id,
                kem.pair.public,
                kem.signature,
            ).to_bytes()
            for opk, kem in zip(pk.one_time.values(), fresh_kem, strict=False)
        ]
        return one, pk.bundle(use_one_time=False).to_bytes()

    def upload(self) -> wire.PrekeyCount:
        one, last = self.bundles()
        return self.call(
            wire.Path.PREKEY_UPLOAD, wire.UploadPrekeys(tuple(one), last), wire.PrekeyCount
        )

    def devices(self, account: bytes) -> wire.DeviceList:
        return self.call(wire.Path.DEVICE_LIST, wire.ListDevices(account), wire.DeviceList)

    def claim(self, account: bytes, device_id: int) -> wire.ClaimedPrekey:
        return self.call(
            wire.Path.PREKEY_CLAIM, wire.ClaimPrekey(account, device_id), wire.ClaimedPrekey
        )

    def envelopes(
        self,
        to: bytes,
        dests: list[tuple[bytes, int]],
        cls: MessageClass,
        message_id: bytes | None = None,
        body: bytes = b"hi",
        template_id: bytes | None = None,
        frame_size: int = 37,
    ) -> list[bytes]:
        """Envelopes of one message around opaque frames (of ``frame_size`` bytes); its
        franking key and text are kept in ``self.sent`` (the relay never sees them) so a
        receiver can report it."""
        mid = message_id or os.urandom(16)
        fk = os.urandom(32)
        c = commit(fk, cls, self.acct.name, to, mid, body)
        self.sent[mid] = (fk, body)
        return [
            Envelope(
                cls,
                self.acct.name,
                self.device_id,
                to,
                d[0],
                d[1],
                mid,
                c,
                b"opaque-frame:" + os.urandom(frame_size - 13),
                template_id,
            ).to_bytes()  # fmt: skip
            for d in dests
        ]

    def submit(self, envs: list[bytes], entry: bytes | None = None) -> wire.Receipt:
        return self.call(wire.Path.MESSAGE_SUBMIT, wire.Submit(tuple(envs), entry), wire.Receipt)

    def fetch(self, wait_ms: int = 0) -> wire.Mailbox:
        return self.call(
            wire.Path.MAILBOX_FETCH,
            wire.Fetch(self.acct.name, self.device_id, wait_ms),
            wire.Mailbox,
        )

    def ack(self, seqs: list[int]) -> None:
        self.call(wire.Path.MAILBOX_ACK, wire.Ack(self.acct.name, self.device_id, tuple(seqs)))

    def control(self, op: int, business: bytes, on: bool = True) -> None:
        self.call(wire.Path.CHAT_CONTROL, wire.Control(op, business, on))

    def report(self, business: bytes, items: list[tuple[bytes, bytes, bytes]],
               block: bool = True) -> wire.ReportVerdict:  # fmt: skip
        """Report (delivery, franking key, text) items received from ``business``."""
        rep = Report(self.acct.name, business, tuple(ReportItem(*i) for i in items))
        return self.call(wire.Path.REPORT, wire.SubmitReport(rep.to_bytes(), block),
                         wire.ReportVerdict)  # fmt: skip

    def bill(self) -> wire.BillLines:
        return self.call(wire.Path.BILL, wire.BillQuery(), wire.BillLines)


def new_device(
    client: httpx.Client, name: bytes, kind: int, tier: int = 0, one_time: int = 4
) -> Dev:
    dev = Dev(client, Acct(name, kind, tier), 1, one_time)
    dev.register_account()
    dev.register()
    dev.upload()
    return dev


def race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) on n threads released together; their results or exceptions."""
    out: list[Any] = [None] * n
    gate = threading.Barrier(n)

    def run(i: int) -> None:
        gate.wait()
        try:
            out[i] = fn(i)
        except Exception as exc:  # collected and asserted on by the caller
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def pg_dsn() -> str | None:
    return os.environ.get("E2E_PG_DSN")


def pg_or_skip() -> str:
    """The test cluster's DSN; skips without one, but fails under CI=true."""
    import pytest

    dsn = os.environ.get("E2E_PG_DSN", "")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail("E2E_PG_DSN is not set under CI: .ci/run must source .ci/postgres.sh")
        pytest.skip("E2E_PG_DSN not set (source .ci/postgres.sh)")
    return dsn


def fresh_pg_db(dsn: str) -> str:
    """A new empty database on the test cluster; its DSN."""
    import uuid

    import psycopg

    name = "relay_" + uuid.uuid4().hex[:12]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params["dbname"] = name
    return make_conninfo(**params)  # type: ignore[arg-type]


def drop_pg_db(dsn: str, db: str) -> None:
    """Drop the database ``db`` (a DSN :func:`fresh_pg_db` gave) through ``dsn``."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = conninfo_to_dict(db)["dbname"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")  # type: ignore[arg-type]


def relay_bytes(db: str) -> bytes:
    """Every byte the relay stores: its database files and the blob directory beside them,
    or every table of its PostgreSQL database."""
    if not db.startswith("postgresql://") and "dbname=" not in db:
        base = Path(db)
        files = [
            p
            for p in base.parent.rglob("*")
            if p.is_file() and (p.name.startswith(base.name) or base.name + ".blobs" in p.parts)
        ]
        return b"\x00".join(p.read_bytes() for p in files)
    import psycopg

    out = []
    with psycopg.connect(db) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        ]
        for t in tables:
            for row in conn.execute(f'SELECT * FROM "{t}"').fetchall():  # type: ignore[arg-type]
                for v in row:
                    out.append(bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode())
    return b"\x00".join(out)


def run_earlier(db: str, seconds: int, columns: list[tuple[str, str]]) -> None:
    """Make what a relay database records in these (table, column)s ``seconds`` earlier: how
    tests let time pass for a relay process, whose clock is the wall clock its request
    signatures are checked against and so cannot be wound."""
    stmts = [f"UPDATE {t} SET {c} = {c} - {int(seconds)}" for t, c in columns]
    if not db.startswith("postgresql://") and "dbname=" not in db:
        import sqlite3

        with sqlite3.connect(db) as conn:
            for s in stmts:
                conn.execute(s)
        return
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        for s in stmts:
            conn.execute(s)  # type: ignore[call-overload]
