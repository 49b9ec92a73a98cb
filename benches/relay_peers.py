"""e2e's relay against Matrix Synapse and ejabberd, driven by one load generator in one run.

    python benches/relay_peers.py [--clients 100] [--seconds 8] [--rounds 2]
                                  [--rates 250 750 1500] [--procs 1] [--closed-cap 3000]
                                  [--only e2e ejabberd-pg ...] [--tools DIR] [--pg-dsn DSN]

Run by hand, never by CI: it installs the peers. Synapse (``matrix-synapse`` from PyPI) goes
into a venv of its own under ``--tools`` (a temporary directory unless given; pass the same
directory again to reuse the install); ejabberd comes from Debian (``apt-get install ejabberd``
when ``ejabberdctl`` is missing, which needs root). Every server runs as this script's own
process with its own configuration, database and port in a temporary directory: the system's
ejabberd service is never started. PostgreSQL: a cluster of its own started here with
``initdb`` (fsync on, synchronous_commit on: durable commits; the shared test cluster runs with
fsync off, so it is not used) unless ``--pg-dsn`` names one.

The servers and what "accepted" means for each (a message stored for a recipient who is not
connected, acknowledged to its sender only once the server has stored it):

* **e2e**: ``POST /v1/messages/submit`` of one signed 100-byte service message from one of
  ``clients`` customers to one business device (as ``relay_load.py``); accepted = ``200``;
  ``--procs`` relay processes on the database (ejabberd's VM schedules on every core).
  Backends: SQLite (WAL, ``synchronous=FULL``: fsync per group commit) and PostgreSQL
  (``synchronous_commit=on``), each also *without* the per-commit flush (``-nofsync`` rows):
  SQLite with ``synchronous=NORMAL`` (set by this script's launcher, a bench-only patch of the
  store's connection: the relay has no such setting) and PostgreSQL with
  ``synchronous_commit=off`` in the DSN (a standard PostgreSQL setting, no patch).
* **Synapse**: ``PUT /_matrix/client/v3/sendToDevice/m.room.encrypted/{txn}``, one Olm-style
  to-device message per request to the business user's one device. A to-device message is
  Synapse's "store this ciphertext for that device until it fetches it" (the device inbox):
  e2e's mailbox model exactly, where a room message would add Matrix's room DAG, state
  resolution and push evaluation (not what e2e's relay does for a 1:1 ciphertext). Users are
  registered through the admin shared-secret API (``bcrypt_rounds: 4``; registration is not
  timed). SQLite (WAL, SQLite's default ``synchronous=FULL``) and PostgreSQL backends.
  Accepted = ``200``.
* **ejabberd** (Debian's 23.01): a ``type='chat'`` message to an offline user, stored by
  ``mod_offline``, followed by a XEP-0198 ``<r/>``; accepted = the server's ``<a h='n'/>``
  counting it (ejabberd's session process handles the message, and so stores it, before it
  answers the ``<r/>``). Client k writes to offline user ``shop<k>``: mod_offline's default
  store is a dets bag keyed by recipient, whose insert slows as that one recipient's queue
  grows (one recipient for all measured 755 then 199 messages/s in two rounds), where e2e's
  and Synapse's B-tree indexes do not care; e2e keeps one business device as recipient, its
  harder case (one quota row takes every submission). Users register in-band (XEP-0077, not
  timed). Backends: mnesia (the default: ``offline_msg`` is a ``disc_only_copies`` table, a
  dets file written without an fsync per message), SQLite
  (``db_type: sql``, ejabberd's sqlite driver with SQLite's defaults: rollback journal,
  ``synchronous=FULL``) and PostgreSQL (``synchronous_commit=on``). The client is raw XML on
  asyncio streams, as the HTTP client is raw HTTP/1.1: a general-purpose library would cost
  more CPU than the server under test.

The same design for all: ``clients`` connections (opened and logged in before the clock
starts), one request in flight per connection; a message of the same size (the length of the e2e
submit request's body: the Matrix request's JSON body and the XMPP stanza with its ``<r/>``
are padded to it). Closed loop: each client
sends its next message as soon as the last is answered, for ``seconds``. Open loop: the same
connections send at random (exponential) intervals that together offer each of ``--rates``,
latency counted from the moment a request was due (no coordinated omission). Phases
alternate: every round runs each server's closed phase, then each server's open sweep, in an
order that reverses from round to round; all servers stay up (idle) for the whole run.

For each phase: accepted messages/s, p50/p99 latency, refused or failed requests, the server's
CPU per accepted message (utime+stime from /proc of the server's process tree; for PostgreSQL
backends the cluster's processes too, reported apart), the generator's own CPU share (one
core = 100 %: if it nears 100 % the generator is the bottleneck) and the 1-minute load
average at the phase's end. After the run it counts what each server stored (e2e's
mailbox, Synapse's device inbox, ejabberd's offline spool) against what it acknowledged.
The summary gives, per round, e2e's closed-loop rate over each peer's and their spread.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()

NOFSYNC = "--serve-nofsync"


def nofsync_patch() -> None:
    """Open the relay's SQLite write connections at ``synchronous=NORMAL`` (WAL: a commit is
    not flushed; a checkpoint is). Bench-only: the relay itself has no such setting."""
    from e2e.relay.sqlite import SqliteRelayStore

    original = SqliteRelayStore.__init__

    def init(self: SqliteRelayStore, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._conn.execute("PRAGMA synchronous = NORMAL")

    SqliteRelayStore.__init__ = init  # type: ignore[method-assign]


def _serve_nofsync() -> int:
    """``relay_peers.py --serve-nofsync relay serve ...``: the relay after
    :func:`nofsync_patch`, a bench-only launcher as relay_ceiling.py is."""
    sys.path.insert(0, str(ROOT))
    from e2e.__main__ import main

    nofsync_patch()
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    return main()


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == NOFSYNC:
    raise SystemExit(_serve_nofsync())

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "relay"))
sys.path.insert(0, str(ROOT / "benches"))

import httpx  # noqa: E402
from relay_load import _pct  # noqa: E402
from relayhelp import RelayProcess, free_port, new_device  # noqa: E402

from e2e.platform import wire  # noqa: E402
from e2e.platform.policy import MessageClass  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SYNAPSE_PACKAGE = "matrix-synapse[postgres]"


# --- processes and their CPU ---------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used: utime + stime) of a live process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every live descendant (from /proc)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = _stat(int(entry))
            if s is not None:
                stats[int(entry)] = s
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return total


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115
    return subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        start_new_session=True,
    )  # fmt: skip


def _stop_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group this script started (then SIGKILL if it lingers)."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"port {port} not open after {timeout:.0f} s: {log.read_text()[-2000:]}")


# --- PostgreSQL --------------------------------------------------------------------------


@dataclass
class PgCluster:
    """A PostgreSQL cluster for the run: started here (durable settings) or given by DSN."""

    workdir: Path
    dsn: str = ""
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    own: bool = False
    host: str = "127.0.0.1"
    user: str = "postgres"

    def start(self) -> PgCluster:
        if self.dsn:
            from psycopg.conninfo import conninfo_to_dict

            d = conninfo_to_dict(self.dsn)
            self.host, self.port = str(d.get("host", "127.0.0.1")), int(d.get("port", 5432))
            self.user = str(d.get("user", "postgres"))
            return self
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        bindir = bins[-1]
        data = self.workdir / "pg"
        data.mkdir(parents=True)
        run: list[str] = []
        if os.getuid() == 0:
            shutil.chown(self.workdir, "postgres")
            shutil.chown(data, "postgres")
            run = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*run, str(bindir / "initdb"), "-D", str(data / "data"), "-U", "postgres",
             "-A", "trust", "-E", "UTF8", "--locale=C"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.port = free_port()
        # Durable commits (fsync on, synchronous_commit on: the defaults); room for the
        # servers' pools.
        self.proc = _spawn(
            [*run, str(bindir / "postgres"), "-D", str(data / "data"), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-k", str(data), "-c", "max_connections=200",
             "-c", "shared_buffers=256MB"],
            self.workdir / "pg.log",
        )  # fmt: skip
        self.own = True
        self.dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        _wait_port(self.port, self.proc, self.workdir / "pg.log", 60)
        time.sleep(1.0)
        return self

    def create_db(self, prefix: str) -> str:
        """A new database (UTF8, C collation, as Synapse requires); its name."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"  # type: ignore[arg-type]
                " TEMPLATE template0"
            )
        return name

    def db_dsn(self, name: str, **extra: str) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = {**conninfo_to_dict(self.dsn), "dbname": name, **extra}
        return make_conninfo(**params)  # type: ignore[arg-type]

    def cpu(self) -> float:
        return tree_cpu(self.proc.pid) if self.proc is not None else 0.0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                _stop_group(self.proc)


# --- the load generator -----------------------------------------------------------------


class Conn:
    """One client connection with one request in flight at a time; ``why`` counts the
    reasons its requests were not accepted (an HTTP status, ``stream-error``, ...)."""

    why: Counter[str]

    async def send(self) -> bool | None:
        """Send one message and wait for its answer: accepted or not; None if this client
        has nothing left to send (e2e's signed submissions are made beforehand)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class HttpConn(Conn):
    """Keep-alive HTTP/1.1 on raw asyncio streams; requests come from ``make(i)``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 make: Any) -> None:  # fmt: skip
        self.reader, self.writer, self.make = reader, writer, make
        self.why = Counter()

    async def send(self) -> bool | None:
        request = self.make()
        if request is None:
            return None
        self.writer.write(request)
        status_line = await self.reader.readline()
        length, chunked = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if chunked:  # Synapse answers in chunks
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readline()
        else:
            await self.reader.readexactly(length)
        if status_line[9:12] == b"200":
            return True
        self.why[status_line[9:12].decode(errors="replace") or "closed"] += 1
        return False

    def close(self) -> None:
        self.writer.close()


def http_request(method: str, host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode() + body


_ACK = re.compile(rb"<a\s[^>]*h=['\"](\d+)['\"][^>]*/>")


class XmppConn(Conn):
    """A logged-in XMPP stream with XEP-0198 on: a message, then ``<r/>``, then wait for the
    ``<a h/>`` that counts it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 buf: bytearray, to: bytes, body: bytes) -> None:  # fmt: skip
        self.reader, self.writer, self.buf = reader, writer, buf
        self.to, self.body, self.sent = to, body, 0
        self.why = Counter()

    async def send(self) -> bool:
        self.sent += 1
        self.writer.write(
            b"<message to='%s' type='chat' id='m%d'><body>%s</body></message>"
            b"<r xmlns='urn:xmpp:sm:3'/>" % (self.to, self.sent, self.body)
        )
        while True:
            m = _ACK.search(self.buf)
            if m is not None:
                h = int(m.group(1))
                del self.buf[: m.end()]
                if h >= self.sent:
                    return True
                continue
            if b"<stream:error" in self.buf or b"</stream:stream>" in self.buf:
                self.why["stream-error"] += 1
                return False
            data = await self.reader.read(65536)
            if not data:
                self.why["closed"] += 1
                return False
            self.buf += data

    def close(self) -> None:
        self.writer.close()


async def drive(
    conns: list[Conn], seconds: float, rate: float = 0.0, seed: int = 0
) -> tuple[int, list[float], int]:
    """Closed loop (``rate`` 0: each connection sends its next message when the last is
    answered) or open loop (each sends at random, exponential, intervals that together offer
    ``rate`` messages/s; latency counts from when a message was due, so a late answer delays
    that connection's next message and the wait counts). (accepted, latencies, refused); a
    connection stops at its first refusal."""
    lat: list[float] = []
    ok = bad = 0
    rng = random.Random(seed)
    start = time.perf_counter()
    deadline = start + seconds
    each = rate / len(conns)

    async def worker(c: Conn) -> None:
        nonlocal ok, bad
        due = start + rng.expovariate(each) if rate else start
        # A message still unsent when time is up is not sent (a server that cannot carry
        # the rate would otherwise stretch the phase by its backlog); its lateness shows in
        # the latencies of the messages before it.
        while due < deadline and time.perf_counter() < deadline:
            if not rate:
                due = time.perf_counter()
            elif (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            try:
                accepted = await c.send()
            except (OSError, asyncio.IncompleteReadError) as exc:
                c.why[type(exc).__name__] += 1
                accepted = False
            if accepted is None:
                return
            lat.append(time.perf_counter() - due)
            ok += accepted
            bad += not accepted
            if not accepted:
                return
            if rate:
                due += rng.expovariate(each)

    await asyncio.gather(*(worker(c) for c in conns))
    return ok, lat, bad


# --- the servers ----------------------------------------------------------------------


@dataclass
class Server:
    """A server under test: started once, idle between its phases."""

    name: str
    workdir: Path
    pg: PgCluster | None = None
    durability: str = ""
    acked: int = 0

    def start(self, clients: int) -> None:
        raise NotImplementedError

    async def connect(self, clients: int, n: int) -> list[Conn]:
        """``clients`` connections ready to send (``n`` requests in all at most)."""
        raise NotImplementedError

    def cpu(self) -> float:
        raise NotImplementedError

    def stored(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


#: The business's mailbox takes every message of a run, as ejabberd's offline store does with
#: ``max_user_offline_messages: infinity`` (the relay's defaults, 10,000 deliveries per device
#: and 2,000 per sender, would refuse the rest of a long run).
UNCAPPED_MAILBOX = {
    "E2E_RELAY_MAILBOX_MAX_MESSAGES": str(10**9),
    "E2E_RELAY_MAILBOX_SENDER_MESSAGES": str(10**9),
    "E2E_RELAY_MAILBOX_MAX_BYTES": str(2**40),
    "E2E_RELAY_MAILBOX_SENDER_BYTES": str(2**40),
}


@dataclass
class E2eServer(Server):
    fsync: bool = True
    procs: int = 1  # relay processes on the database; connection k talks to process k % procs
    writers: int = 0  # PostgreSQL writer connections per process (0: the relay's default)
    base: str = ""  # the name without the -p/-w variant suffix (what --only matches)
    recipients: int = 1  # business devices written to: client k writes to business k % this
    relays: list[RelayProcess] = field(default_factory=list)
    db: str = ""
    custs: list[Any] = field(default_factory=list)
    bizs: list[Any] = field(default_factory=list)

    def start(self, clients: int) -> None:
        if self.pg is not None:
            name = self.pg.create_db("e2e")
            self.db = self.pg.db_dsn(name, **({} if self.fsync else {
                "options": "-c synchronous_commit=off"}))  # fmt: skip
            self.durability = "synchronous_commit=" + ("on" if self.fsync else "off")
        else:
            self.db = str(self.workdir / f"{self.name}.db")
            self.durability = "WAL, synchronous=" + ("FULL" if self.fsync else "NORMAL")
        launcher = ["-m", "e2e"] if self.fsync or self.pg else [str(HERE), NOFSYNC]
        env = dict(UNCAPPED_MAILBOX)
        if self.writers:
            env["E2E_RELAY_OPS_PG_WRITERS"] = str(self.writers)
        for _ in range(self.procs):
            relay = RelayProcess(self.db, extra=["--log-level", "warning"], launcher=launcher,
                                 log_path=self.workdir / f"{self.name}.log",
                                 env=env)  # fmt: skip
            self.relays.append(relay)
            relay.start(60)
        with httpx.Client(base_url=self.relays[0].url, timeout=60) as c:
            names = [b"shop"] if self.recipients == 1 else [
                b"shop%d" % k for k in range(self.recipients)]  # fmt: skip
            self.bizs = [new_device(c, n, 1) for n in names]
            self.custs = [new_device(c, b"c%d" % i, 0, one_time=1) for i in range(clients)]

    def request_size(self) -> int:
        """The length of a submit request's body (the peers' messages are padded to it)."""
        return len(self._submit(0).partition(b"\r\n\r\n")[2])

    def _submit(self, i: int) -> bytes:
        cust = self.custs[i % len(self.custs)]
        biz = self.bizs[i % len(self.bizs)]
        envs = cust.envelopes(biz.acct.name, [biz.addr], MessageClass.SERVICE, body=b"x" * 100)
        body = wire.Submit(tuple(envs)).to_bytes()
        path = wire.Path.MESSAGE_SUBMIT
        headers = {"content-type": wire.CONTENT_TYPE, "authorization": cust.sign(path, body)}
        return http_request("POST", "127.0.0.1", path, body, headers)

    async def connect(self, clients: int, n: int) -> list[Conn]:
        # Signed submissions are made before the clock starts (each is accepted once).
        # All of them before any connection opens: a connection left idle longer than the
        # relay's header timeout (10 s) would be answered 408.
        per = -(-n // clients)
        jobs = [iter([self._submit(k) for _ in range(per)]) for k in range(clients)]
        conns: list[Conn] = []
        for k in range(clients):
            port = self.relays[k % len(self.relays)].port
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            conns.append(HttpConn(reader, writer, lambda it=jobs[k]: next(it, None)))
        return conns

    def cpu(self) -> float:
        return sum(tree_cpu(r.proc.pid) for r in self.relays if r.proc is not None)

    def stored(self) -> int:
        sql = "SELECT count(*) FROM mailbox"
        if self.pg is not None:
            import psycopg

            with psycopg.connect(self.db) as conn:
                row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
        else:
            with sqlite3.connect(self.db) as conn:
                row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0

    def stop(self) -> None:
        for relay in self.relays:
            relay.stop()


def synapse_venv(tools: Path) -> Path:
    """A venv with matrix-synapse (PyPI) under ``tools``, made once."""
    venv = tools / "synapse-venv"
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import synapse, psycopg2"],
                                      capture_output=True).returncode == 0:  # fmt: skip
        return py
    print(f"installing {SYNAPSE_PACKAGE} into {venv} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", SYNAPSE_PACKAGE], check=True)
    return py


@dataclass
class SynapseServer(Server):
    python: Path = Path()
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    secret: str = ""
    tokens: list[str] = field(default_factory=list)
    device: str = ""
    size: int = 0
    dbname: str = ""
    txn: int = 0

    def start(self, clients: int) -> None:
        d = self.workdir / self.name
        d.mkdir()
        self.port = free_port()
        self.secret = uuid.uuid4().hex
        if self.pg is not None:
            self.dbname = self.pg.create_db("synapse")
            database: dict[str, Any] = {"name": "psycopg2", "args": {
                "user": self.pg.user, "host": self.pg.host, "port": self.pg.port,
                "database": self.dbname, "cp_min": 5, "cp_max": 10}}  # fmt: skip
            self.durability = "synchronous_commit=on"
        else:
            database = {"name": "sqlite3", "args": {"database": str(d / "homeserver.db")}}
            self.durability = "WAL, synchronous=FULL (SQLite's default)"
        (d / "log.yaml").write_text(json.dumps({
            "version": 1,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "formatter": "plain",
                                  "filename": str(d / "homeserver.log")}},
            "root": {"level": "WARNING", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }))  # fmt: skip
        huge = {"per_second": 1e6, "burst_count": 1e6}
        config = {
            "server_name": "localhost",
            "pid_file": str(d / "homeserver.pid"),
            "listeners": [{"port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http",
                           "tls": False, "x_forwarded": False,
                           "resources": [{"names": ["client"], "compress": False}]}],
            "database": database,
            "log_config": str(d / "log.yaml"),
            "media_store_path": str(d / "media"),
            "signing_key_path": str(d / "signing.key"),
            "registration_shared_secret": self.secret,
            "macaroon_secret_key": uuid.uuid4().hex,
            "form_secret": uuid.uuid4().hex,
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "bcrypt_rounds": 4,
            "presence": {"enabled": False},
            "rc_message": huge, "rc_registration": huge, "rc_admin_redaction": huge,
            "rc_login": {"address": huge, "account": huge, "failed_attempts": huge},
            "rc_key_requests": huge,
        }  # fmt: skip
        (d / "homeserver.yaml").write_text(json.dumps(config, indent=1))
        cfg = ["-c", str(d / "homeserver.yaml")]
        hs = [str(self.python), "-m", "synapse.app.homeserver"]
        subprocess.run([*hs, *cfg, "--generate-keys"], check=True, cwd=d,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        self.proc = _spawn([*hs, *cfg], d / "stdout.log")
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"synapse exited: {(d / 'stdout.log').read_text()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("synapse did not become ready")
            time.sleep(0.5)
        with httpx.Client(base_url=url, timeout=60) as c:
            _, self.device = self._register(c, "shop")
            self.tokens = [self._register(c, f"c{i}")[0] for i in range(clients)]

    def _register(self, c: httpx.Client, user: str) -> tuple[str, str]:
        """Register ``user`` through the admin shared-secret API; (access token, device)."""
        nonce = c.get("/_synapse/admin/v1/register").json()["nonce"]
        mac = hmac.new(self.secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\0".join([nonce.encode(), user.encode(), b"pw", b"notadmin"]))
        r = c.post("/_synapse/admin/v1/register", json={
            "nonce": nonce, "username": user, "password": "pw", "admin": False,
            "mac": mac.hexdigest()})  # fmt: skip
        r.raise_for_status()
        return r.json()["access_token"], r.json()["device_id"]

    def _body(self) -> bytes:
        content = {"algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": "k" * 43,
                   "ciphertext": ""}  # fmt: skip
        message = {"messages": {"@shop:localhost": {self.device: content}}}
        pad = self.size - len(json.dumps(message, separators=(",", ":")))
        content["ciphertext"] = "x" * max(pad, 16)
        return json.dumps(message, separators=(",", ":")).encode()

    async def connect(self, clients: int, n: int) -> list[Conn]:
        body = self._body()
        conns: list[Conn] = []
        for k in range(clients):
            auth = {"authorization": f"Bearer {self.tokens[k]}",
                    "content-type": "application/json"}  # fmt: skip

            def make(auth: dict[str, str] = auth) -> bytes:
                self.txn += 1
                path = f"/_matrix/client/v3/sendToDevice/m.room.encrypted/t{self.txn}"
                return http_request("PUT", "127.0.0.1", path, body, auth)

            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            conns.append(HttpConn(reader, writer, make))
        return conns

    def cpu(self) -> float:
        assert self.proc is not None
        return tree_cpu(self.proc.pid)

    def stored(self) -> int:
        sql = "SELECT count(*) FROM device_inbox"
        if self.pg is not None:
            import psycopg

            with psycopg.connect(self.pg.db_dsn(self.dbname)) as conn:
                row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
        else:
            with sqlite3.connect(self.workdir / self.name / "homeserver.db") as conn:
                row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0

    def stop(self) -> None:
        _stop_group(self.proc)


def ensure_ejabberd() -> None:
    """Debian's ejabberd, installed if missing (root: apt-get). Its system service is not
    started here (each bench server is a process of its own)."""
    if shutil.which("ejabberdctl"):
        return
    print("installing ejabberd (apt-get) ...", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "ejabberd", "erlang-p1-sqlite3",
                    "erlang-p1-pgsql"], check=True, env=env)  # fmt: skip


def _epmd_up() -> bool:
    return subprocess.run(["epmd", "-names"], capture_output=True).returncode == 0


EJABBERD_SQL = Path("/usr/share/ejabberd/sql")


@dataclass
class EjabberdServer(Server):
    backend: str = "mnesia"  # or "sqlite", "pgsql"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    node: str = ""
    dbname: str = ""
    size: int = 0
    clients: int = 0

    def _dir(self) -> Path:
        return self.workdir / self.name

    def start(self, clients: int) -> None:
        d = self._dir()
        (d / "spool").mkdir(parents=True)
        (d / "logs").mkdir()
        self.port, self.clients = free_port(), clients
        self.node = f"ejbench{uuid.uuid4().hex[:8]}@localhost"
        sql = ""
        if self.backend == "sqlite":
            db = d / "ejabberd.db"
            with sqlite3.connect(db) as conn:
                conn.executescript((EJABBERD_SQL / "lite.sql").read_text())
            sql = f"default_db: sql\nsql_type: sqlite\nsql_database: {json.dumps(str(db))}\n"
            self.durability = "SQLite rollback journal, synchronous=FULL (defaults)"
        elif self.backend == "pgsql":
            assert self.pg is not None
            import psycopg

            self.dbname = self.pg.create_db("ejabberd")
            with psycopg.connect(self.pg.db_dsn(self.dbname), autocommit=True) as conn:
                conn.execute((EJABBERD_SQL / "pg.sql").read_text())  # type: ignore[arg-type]
            sql = (
                f"default_db: sql\nsql_type: pgsql\nsql_server: {self.pg.host}\n"
                f"sql_port: {self.pg.port}\nsql_database: {self.dbname}\n"
                f"sql_username: {self.pg.user}\nsql_password: ''\nsql_pool_size: 10\n"
            )
            self.durability = "synchronous_commit=on"
        else:
            self.durability = "mnesia: offline_msg a dets bag, no fsync per message"
        (d / "ejabberd.yml").write_text(EJABBERD_YML.format(port=self.port, sql=sql))
        (d / "ejabberdctl.cfg").write_text("")
        if os.getuid() == 0:  # ejabberdctl runs the node as the ejabberd user
            for p in [d, *d.rglob("*")]:
                shutil.chown(p, "ejabberd", "ejabberd")
        self.proc = _spawn([*self._ctl(), "foreground"], d / "stdout.log")
        _wait_port(self.port, self.proc, d / "stdout.log", 60)
        asyncio.run(self._register_all(clients))

    def _ctl(self) -> list[str]:
        d = self._dir()
        return ["ejabberdctl", "-n", self.node, "-s", str(d / "spool"), "-l", str(d / "logs"),
                "-f", str(d / "ejabberd.yml"), "-c", str(d / "ejabberdctl.cfg")]  # fmt: skip

    async def _register_all(self, clients: int) -> None:
        users = [b"%s%d" % (who, i) for i in range(clients) for who in (b"shop", b"c")]
        for user in users:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            buf = bytearray()
            writer.write(XMPP_OPEN)
            await _read_until(reader, buf, rb"</stream:features>")
            writer.write(
                b"<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>%s"
                b"</username><password>pw</password></query></iq>" % user
            )
            m = await _read_until(reader, buf, rb"<iq[^>]*id='reg'[^>]*(/>|>.*?</iq>)")
            if b"type='result'" not in m.group(0):
                raise RuntimeError(f"ejabberd registration failed: {m.group(0)[:300]!r}")
            writer.close()

    async def connect(self, clients: int, n: int) -> list[Conn]:
        async def login(k: int) -> Conn:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            buf = bytearray()
            writer.write(XMPP_OPEN)
            await _read_until(reader, buf, rb"</stream:features>")
            token = base64.b64encode(b"\0c%d\0pw" % k)
            writer.write(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                         + token + b"</auth>")  # fmt: skip
            m = await _read_until(reader, buf, rb"<(success|failure)[^>]*>")
            if m.group(1) != b"success":
                raise RuntimeError("ejabberd login failed")
            writer.write(XMPP_OPEN)
            await _read_until(reader, buf, rb"</stream:features>")
            resource = uuid.uuid4().hex.encode()
            writer.write(
                b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                b"<resource>r%s</resource></bind></iq>" % resource
            )
            await _read_until(reader, buf, rb"<iq[^>]*id='b'[^>]*>.*?</iq>")
            writer.write(b"<enable xmlns='urn:xmpp:sm:3'/>")
            m = await _read_until(reader, buf, rb"<(enabled|failed)[^>]*>")
            if m.group(1) != b"enabled":
                raise RuntimeError("ejabberd: stream management refused")
            return XmppConn(reader, writer, buf, b"shop%d@localhost" % k, self._payload())

        # Ten logins at a time: a burst of a hundred connects can overflow a listen queue
        # and stall in SYN retries.
        gate = asyncio.Semaphore(10)

        async def gated(k: int) -> Conn:
            async with gate:
                return await login(k)

        return list(await asyncio.gather(*(gated(k) for k in range(clients))))

    def _payload(self) -> bytes:
        """The message body, padded so that the whole stanza (with its ``<r/>``) is as long
        as the e2e request."""
        frame = b"<message to='shop10@localhost' type='chat' id='m100000'><body></body></message>"
        frame += b"<r xmlns='urn:xmpp:sm:3'/>"
        return b"x" * max(self.size - len(frame), 16)

    def cpu(self) -> float:
        assert self.proc is not None
        return tree_cpu(self.proc.pid)

    def stored(self) -> int:
        if self.backend == "sqlite":
            with sqlite3.connect(self._dir() / "ejabberd.db") as conn:
                row = conn.execute("SELECT count(*) FROM spool").fetchone()
            return int(row[0])
        if self.backend == "pgsql":
            import psycopg

            assert self.pg is not None
            with psycopg.connect(self.pg.db_dsn(self.dbname)) as conn:
                got = conn.execute("SELECT count(*) FROM spool").fetchone()  # type: ignore[arg-type]
            return int(got[0]) if got else 0
        dump = self._dir() / "offline.dump"
        subprocess.run([*self._ctl(), "dump_table", str(dump), "offline_msg"],
                       capture_output=True, timeout=300)  # fmt: skip
        if not dump.exists():
            return -1
        with open(dump, "rb") as f:
            return sum(line.startswith(b"{offline_msg,") for line in f)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run([*self._ctl(), "stop"], capture_output=True, timeout=60)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        _stop_group(self.proc)


XMPP_OPEN = (
    b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)


async def _read_until(reader: asyncio.StreamReader, buf: bytearray, pattern: bytes) -> Any:
    rx = re.compile(pattern, re.S)
    while True:
        m = rx.search(bytes(buf))
        if m is not None:
            del buf[: m.end()]
            return m
        data = await asyncio.wait_for(reader.read(65536), 120)
        if not data:
            raise RuntimeError(f"ejabberd closed the stream: {bytes(buf)[-300:]!r}")
        buf += data


# Offline storage on (mod_offline, no per-user cap), XEP-0198 on, in-band registration open
# to loopback, no traffic shaper, no TLS (the e2e relay and Synapse run plain HTTP too).
EJABBERD_YML = """\
hosts:
  - localhost
loglevel: warning
{sql}listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    starttls: false
    backlog: 1024
auth_method: internal
auth_password_format: plain
registration_timeout: infinity
acl:
  local:
    user_regexp: ""
access_rules:
  register:
    allow: all
  local:
    allow: local
shaper_rules:
  max_user_offline_messages: infinity
  max_user_sessions: infinity
modules:
  mod_admin_extra: {{}}
  mod_disco: {{}}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_register:
    access: register
    ip_access: all
  mod_roster: {{}}
  mod_stream_mgmt:
    resend_on_timeout: false
"""


# --- the run ----------------------------------------------------------------------------


@dataclass
class Phase:
    server: str
    kind: str  # "closed" or "open<rate>"
    round: int
    rate: float
    p50: float
    p99: float
    bad: int
    why: str  # the reasons of the refusals
    cpu_ms: float  # server CPU per accepted message
    db_cpu_ms: float
    gen_cpu: float  # generator CPU share of one core
    load: float
    waits: str = ""  # PostgreSQL: what the server's backends were doing, sampled


def run_phase(server: Server, kind: str, clients: int, seconds: float, rnd: int,
              pg: PgCluster | None, rate: float = 0.0, cap: float = 3000.0) -> Phase:  # fmt: skip
    """One phase: closed loop (``rate`` 0; a server is prepared for ``cap`` messages/s: e2e's
    signed submissions are made before the clock starts) or open loop at ``rate``."""
    expect = int((rate or cap) * seconds * 1.3) + clients

    sampler = WaitSampler(server) if isinstance(server, E2eServer) and server.pg else None

    async def phase() -> tuple[int, list[float], int, float, float, float, float, Counter[str]]:
        conns = await server.connect(clients, expect)
        c0, d0 = server.cpu(), (pg.cpu() if server.pg is not None and pg else 0.0)
        g0, t0 = time.process_time(), time.perf_counter()
        if sampler is not None:
            sampler.start()
        ok, lat, bad = await drive(conns, seconds, rate if kind != "closed" else 0.0, rnd)
        if sampler is not None:
            sampler.stop()
        elapsed = time.perf_counter() - t0
        gen = time.process_time() - g0
        c1, d1 = server.cpu(), (pg.cpu() if server.pg is not None and pg else 0.0)
        why: Counter[str] = Counter()
        for c in conns:
            why.update(c.why)
            c.close()
        await asyncio.sleep(0.1)
        return ok, lat, bad, elapsed, gen, c1 - c0, d1 - d0, why

    ok, lat, bad, elapsed, gen, cpu, db_cpu, why = asyncio.run(phase())
    server.acked += ok
    return Phase(
        server.name, kind, rnd, ok / elapsed, _pct(lat, 50), _pct(lat, 99), bad,
        ", ".join(f"{k}: {n}" for k, n in sorted(why.items())),
        cpu / max(ok, 1) * 1000, db_cpu / max(ok, 1) * 1000, gen / elapsed,
        os.getloadavg()[0], sampler.summary() if sampler is not None else "",
    )  # fmt: skip


class WaitSampler:
    """Samples ``pg_stat_activity`` of an e2e server's database every 20 ms during a phase:
    how many of its backends were in each state (``CPU`` for active without a wait event,
    else the wait event, e.g. ``Client:ClientRead`` waiting for the relay, ``IO:WALSync``,
    ``Lock:transactionid``), averaged over the samples. The witness of what limits a run."""

    def __init__(self, server: E2eServer) -> None:
        from psycopg.conninfo import conninfo_to_dict

        self.dsn = server.db
        self.dbname = str(conninfo_to_dict(server.db).get("dbname", ""))
        self.counts: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        import psycopg

        sql = (
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.wait(0.02):
                rows = conn.execute(sql, (self.dbname,)).fetchall()
                self.samples += 1
                for state, kind, event in rows:
                    if state == "idle":
                        continue  # the pool's idle connections, the listener
                    label = "CPU" if kind is None else f"{kind}:{event}"
                    if state == "idle in transaction":
                        label = "idle-in-tx" if kind in (None, "Client") else label
                    self.counts[label] += 1

    def summary(self) -> str:
        n = max(self.samples, 1)
        top = self.counts.most_common(4)
        return " ".join(f"{k}={v / n:.2f}" for k, v in top)


def _print(p: Phase) -> None:
    print(
        f"{p.round:>2} {p.server:<20} {p.kind:<10} {p.rate:>8.0f} {p.p50:>7.1f} {p.p99:>7.1f}"
        f" {p.bad:>5} {p.cpu_ms:>8.3f} {p.db_cpu_ms:>7.3f} {p.gen_cpu * 100:>5.0f}% "
        f"{p.load:>5.2f}"
        + (f"  (refused: {p.why})" if p.why else "")
        + (f"  [pg: {p.waits}]" if p.waits else ""),
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rates", type=float, nargs="*", default=[250.0, 750.0, 1500.0])
    ap.add_argument(
        "--only",
        nargs="*",
        default=[],
        help="server names (e2e-sqlite, ejabberd-pg, ...) or families (e2e, synapse, ejabberd)",
    )
    ap.add_argument(
        "--tools",
        type=Path,
        default=None,
        help="where the Synapse venv goes (kept; default: the run's temp dir)",
    )
    ap.add_argument("--pg-dsn", default="", help="a durable cluster to use instead of our own")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument(
        "--procs",
        type=int,
        nargs="+",
        default=[1],
        help="relay processes per e2e server (ejabberd's VM uses every core); several values:"
        " one server of each (named -p1, -p2, ...)",
    )
    ap.add_argument(
        "--recipients",
        type=int,
        default=1,
        help="e2e: business devices the clients write to (client k to business k %% N; default"
        " one, every submission then counts into one mailbox's usage row)",
    )
    ap.add_argument(
        "--pg-writers",
        type=int,
        nargs="+",
        default=[0],
        help="writer connections per e2e PostgreSQL process (0: the relay's default); several"
        " values: one server of each (named -w1, -w2, ...)",
    )
    ap.add_argument(
        "--closed-cap",
        type=float,
        default=3000.0,
        help="most messages/s a closed phase is prepared for (e2e signs beforehand)",
    )
    ap.add_argument("--workdir", type=Path, default=None, help="where the temp dir goes")
    ns = ap.parse_args()

    # Stopped by a signal, the servers are stopped too (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="relay-peers-", dir=ns.workdir))
    os.chmod(work, 0o755)
    tools = ns.tools or work
    tools.mkdir(parents=True, exist_ok=True)
    pg = PgCluster(work / "pgroot", dsn=ns.pg_dsn)
    (work / "pgroot").mkdir()

    def e2e(name: str, **kw: Any) -> list[Server]:
        """One e2e server per --procs value (and per --pg-writers value on PostgreSQL)."""
        writers = ns.pg_writers if "pg" in kw else [0]
        out: list[Server] = []
        for procs in ns.procs:
            for w in writers:
                suffix = (f"-p{procs}" if len(ns.procs) > 1 else "") + (
                    f"-w{w}" if len(writers) > 1 else "")  # fmt: skip
                out.append(E2eServer(name + suffix, work, procs=procs, writers=w, base=name,
                                     recipients=ns.recipients, **kw))  # fmt: skip
        return out

    candidates: list[Server] = [
        *e2e("e2e-sqlite"),
        *e2e("e2e-sqlite-nofsync", fsync=False),
        *e2e("e2e-pg", pg=pg),
        *e2e("e2e-pg-nofsync", pg=pg, fsync=False),
        SynapseServer("synapse-sqlite", work),
        SynapseServer("synapse-pg", work, pg=pg),
        EjabberdServer("ejabberd-mnesia", work),
        EjabberdServer("ejabberd-sqlite", work, backend="sqlite"),
        EjabberdServer("ejabberd-pg", work, pg=pg, backend="pgsql"),
    ]
    # A name, or a family: e2e, synapse, ejabberd.
    families = {"e2e", "synapse", "ejabberd"}
    servers = [s for s in candidates if not ns.only or any(
        o in (s.name, getattr(s, "base", "")) or (o in families and s.name.startswith(o))
        for o in ns.only)]  # fmt: skip
    started: list[Server] = []
    epmd_was_up = True
    try:
        if any(s.pg is not None for s in servers):
            pg.start()
        if any(isinstance(s, EjabberdServer) for s in servers):
            ensure_ejabberd()
            epmd_was_up = _epmd_up()
        python = None
        if any(isinstance(s, SynapseServer) for s in servers):
            python = synapse_venv(tools)
        for s in servers:
            if isinstance(s, SynapseServer):
                assert python is not None
                s.python = python
            print(f"starting {s.name} ...", file=sys.stderr, flush=True)
            s.start(ns.clients)
            started.append(s)
        # The message size: the e2e submit request body's, whichever server.
        size = next((s.request_size() for s in servers if isinstance(s, E2eServer)), 700)
        for s in servers:
            if isinstance(s, (SynapseServer, EjabberdServer)):
                s.size = size
        print(f"# message size {size} bytes (the e2e submit body); {ns.clients} clients, "
              f"{ns.seconds:g} s phases; load {os.getloadavg()[0]:.2f}")  # fmt: skip
        for s in servers:
            procs = f"; {s.procs} relay processes" if isinstance(s, E2eServer) else ""
            if isinstance(s, E2eServer) and s.pg is not None:
                procs += f", {s.writers or 'default'} writer connections each"
            if isinstance(s, E2eServer):
                procs += f"; {s.recipients} recipient device(s)"
            print(f"# {s.name}: {s.durability}{procs}")
        print(f"{'rd':>2} {'server':<20} {'phase':<10} {'acc/s':>8} {'p50':>7} {'p99':>7}"
              f" {'bad':>5} {'cpu ms':>8} {'db ms':>7} {'gen':>6} {'load':>5}")  # fmt: skip
        phases: list[Phase] = []
        for rnd in range(ns.rounds):
            order = servers if rnd % 2 == 0 else servers[::-1]
            for s in order:
                phases.append(
                    run_phase(s, "closed", ns.clients, ns.seconds, rnd, pg, cap=ns.closed_cap)
                )
                _print(phases[-1])
            for rate in ns.rates:
                for s in order:
                    phases.append(run_phase(s, f"open{rate:g}", ns.clients, ns.seconds, rnd,
                                            pg, rate))  # fmt: skip
                    _print(phases[-1])
        print("\n# stored against acknowledged")
        for s in servers:
            print(f"# {s.name}: acknowledged {s.acked}, stored {s.stored()}")
        _summary(phases, [s.name for s in servers], ns.rounds)
    finally:
        for s in started:
            try:
                s.stop()
            except Exception as exc:  # noqa: BLE001
                print(f"stopping {s.name}: {exc}", file=sys.stderr)
        pg.stop()
        if not epmd_was_up and _epmd_up():  # the Erlang port mapper our nodes started
            subprocess.run(["epmd", "-kill"], capture_output=True)
        if not ns.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _summary(phases: list[Phase], names: list[str], rounds: int) -> None:
    """e2e's closed-loop rate over each peer's, per round (same backend family)."""
    closed = {(p.server, p.round): p.rate for p in phases if p.kind == "closed"}
    e2es = [n for n in names if n.startswith("e2e")]
    peers = [n for n in names if not n.startswith("e2e")]
    if not e2es or not peers:
        return
    print("\n# closed loop: e2e / peer, per round")
    for e in e2es:
        for peer in peers:
            ratios = [closed[(e, r)] / closed[(peer, r)] for r in range(rounds)
                      if closed.get((peer, r))]  # fmt: skip
            if ratios:
                print(f"# {e:<20} / {peer:<16} " + " ".join(f"{x:6.2f}" for x in ratios))


if __name__ == "__main__":
    raise SystemExit(main())
