"""The PostgreSQL relay store's connections (SPEC.md §10.8): the TCP timeouts every connection
gets, the watchdog that bounds each operation on one, and the writer's direct libpq layer.

:func:`with_timeouts` adds keepalives, ``tcp_user_timeout`` and ``connect_timeout`` to a DSN
that does not set them; :class:`Watchdog` shuts down the connection of an operation that runs
past its bound (a peer that still acknowledges but never answers); :class:`Raw` runs the
writer's statements through psycopg's ``pq`` layer, prepared, in pipelines.
"""

from __future__ import annotations

import binascii
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = [
    "IO_SECONDS",
    "WRITER_NAME",
    "CONNECTION_DEFAULTS",
    "CHECK_FAILED",
    "with_timeouts",
    "cut",
    "Watchdog",
    "WATCHDOG",
    "Rows",
    "Raw",
]

#: Longest one store operation (a writer's group transaction, a read, a maintenance
#: transaction, a notification) may take on its connection by default, in seconds (the relay
#: setting ``ops.pg_timeout``): past it the connection is cut, and its requests answer
#: StoreUnavailable (503). A network that drops packets silently would otherwise leave it
#: waiting forever (see :class:`Watchdog`).
IO_SECONDS: Final = 10.0
#: The ``application_name`` of the writer connections (``pg_stat_activity`` shows it) unless
#: the DSN names one.
WRITER_NAME: Final = "e2e-relay-writer"
#: What every connection the store opens uses unless the operator's DSN says otherwise: TCP
#: keepalives (a silent peer is given up after about 10 + 3 x 3 s idle), ``tcp_user_timeout``
#: (sent data unacknowledged for 10 s drops the connection) and a bounded connect.
CONNECTION_DEFAULTS: Final = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "3",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
    "connect_timeout": "5",
}


def with_timeouts(dsn: str) -> str:
    """``dsn`` with :data:`CONNECTION_DEFAULTS` added where it sets none of its own."""
    params = conninfo_to_dict(dsn)
    for key, value in CONNECTION_DEFAULTS.items():
        params.setdefault(key, value)
    return make_conninfo(**params)  # type: ignore[arg-type]


def cut(fd: int) -> None:
    """Shut the TCP connection on ``fd`` down (both ways), leaving the descriptor to its
    owner: a wait on it returns at once, and libpq reports the connection lost."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


class Watchdog:
    """Bounds the time a connection spends in one operation (:meth:`bound`): a thread cuts
    (:func:`cut`) the connection of an operation still running past its deadline. Keepalives
    and ``tcp_user_timeout`` notice a dead peer only if the kernel does; a connection through
    something that still acknowledges (a proxy, a stalled server) needs this."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, int]] = {}
        self._next = 0
        self._thread: threading.Thread | None = None

    @contextmanager
    def bound(self, pg: pq.abc.PGconn, seconds: float) -> Iterator[None]:
        """Cut ``pg``'s connection if the block is still running after ``seconds``."""
        try:
            fd = pg.socket
        except psycopg.Error:  # not connected: the block fails on its own
            yield
            return
        with self._lock:
            token = self._next
            self._next += 1
            self._armed[token] = (time.monotonic() + seconds, fd)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="relay-pg-watch",
                                                daemon=True)  # fmt: skip
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._armed.pop(token, None)

    def _loop(self) -> None:
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            with self._lock:  # the owner of an armed fd is still in its block: it is open
                for token, (due, fd) in list(self._armed.items()):
                    if due <= now:
                        del self._armed[token]
                        cut(fd)


WATCHDOG: Final = Watchdog()


#: The SQLSTATE the store's ``e2e_check`` function raises when its check fails (a class of
#: its own: no statement of PostgreSQL's raises it).
CHECK_FAILED: Final = b"P0E2E"


def _hex(v: bytes) -> bytes:
    return binascii.unhexlify(v[2:])


def _bool(v: bytes) -> bool:
    return v == b"t"


#: Text-format result decoders by type oid (bytea, integers, numeric, bool); others are text.
DECODE: Final[dict[int, Callable[[bytes], Any]]] = {
    17: _hex, 20: int, 21: int, 23: int, 26: int, 1700: int, 16: _bool, 701: float,
}  # fmt: skip


class Rows:
    """What :meth:`Raw.execute` returns: the affected row count, like a cursor's."""

    __slots__ = ("rowcount",)

    def __init__(self, rowcount: int) -> None:
        self.rowcount = rowcount


class Raw:
    """Statements on one connection straight through libpq (psycopg's ``pq`` layer): each
    distinct statement prepared once, parameters sent as they are (bytes in binary, numbers
    and text as text), results decoded by column type. The writer runs every statement of
    every request; this costs about half the CPU of the general cursor path, and libpq
    waits for the server without holding the GIL."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.pg = conn.pgconn
        self.names: dict[str, bytes] = {}

    def command(self, sql: bytes) -> None:
        """Run ``sql`` (one or more statements, no parameters) in one round trip."""
        self._check(self.pg.exec_(sql))

    def query(self, sql: bytes) -> list[tuple[bytes | None, ...]]:
        """:meth:`command`, and the last statement's rows, as text."""
        res = self._check(self.pg.exec_(sql))
        cols = range(res.nfields)
        return [tuple(res.get_value(r, c) for c in cols) for r in range(res.ntuples)]

    def _check(self, res: pq.abc.PGresult) -> pq.abc.PGresult:
        if res.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
            return res
        if self.pg.status != pq.ConnStatus.OK:
            raise psycopg.OperationalError("relay database connection lost")
        state = res.error_field(pq.DiagnosticField.SQLSTATE) or b""
        raise pg_errors.lookup(state.decode())("statement failed")

    def _prepared(self, sql: str) -> bytes:
        """The name of ``sql`` (``?`` placeholders) prepared on this connection."""
        name = self.names.get(sql)
        if name is None:
            parts = sql.split("?")
            text = parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], 1))
            name = b"e2e_%d" % len(self.names)
            self._check(self.pg.prepare(name, text.replace("BLOB", "BYTEA").encode()))
            self.names[sql] = name
        return name

    @staticmethod
    def _params(params: Sequence[Any]) -> tuple[list[bytes | None], list[int]]:
        values: list[bytes | None] = []
        formats: list[int] = []
        for v in params:
            if isinstance(v, bytes | bytearray | memoryview):
                values.append(bytes(v))
                formats.append(1)
            elif isinstance(v, int):
                values.append(b"%d" % v)
                formats.append(0)
            elif v is None:
                values.append(None)
                formats.append(0)
            else:
                values.append(str(v).encode())
                formats.append(0)
        return values, formats

    def run(self, sql: str, params: Sequence[Any]) -> pq.abc.PGresult:
        name = self._prepared(sql)
        values, formats = self._params(params)
        # libpq takes NULL for None (the stub says otherwise).
        return self._check(self.pg.exec_prepared(name, values, formats))  # type: ignore[arg-type]

    def pipeline(
        self,
        statements: Sequence[tuple[str, Sequence[Any]]],
        commands: Sequence[bytes] = (),
        checks: Mapping[int, BaseException] | None = None,
    ) -> list[pq.abc.PGresult | None]:
        """Run ``statements``, then ``commands`` (no parameters), in one round trip (libpq's
        pipeline mode); the statements' results. The server runs them in order, each
        with a snapshot of its own (READ COMMITTED), and skips the rest of the pipeline
        after an error: the first failure is raised (``checks[i]`` if statement ``i`` failed
        in :data:`CHECK` (see :data:`_CHECK_FUNCTION`), else the database's error), and what
        followed it did not run."""
        pg = self.pg
        prepared = [(self._prepared(sql), self._params(params)) for sql, params in statements]
        pg.enter_pipeline_mode()
        results: list[pq.abc.PGresult | None] = []
        try:
            for name, (values, formats) in prepared:
                pg.send_query_prepared(name, values, formats)
            for command in commands:
                pg.send_query_params(command, None)
            pg.pipeline_sync()
            failed: tuple[int, pq.abc.PGresult] | None = None
            for i in range(len(prepared) + len(commands)):
                self._wait()
                res = pg.get_result()
                if res is not None and failed is None and res.status not in (
                    pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK,
                ):  # fmt: skip
                    failed = (i, res)
                if i < len(prepared):
                    results.append(res)
                self._wait()
                pg.get_result()  # the None that ends each statement's results
            self._wait()
            pg.get_result()  # the pipeline's sync
        finally:
            if pg.status == pq.ConnStatus.OK:
                pg.exit_pipeline_mode()
        if failed is not None:
            i, res = failed
            state = res.error_field(pq.DiagnosticField.SQLSTATE)
            if checks is not None and i in checks and state == CHECK_FAILED:
                raise checks[i]
            self._check(res)
        return results

    def _wait(self) -> None:
        """Until a result can be read without blocking, waiting in ``select`` (which does
        not hold the GIL)."""
        pg = self.pg
        try:
            while pg.is_busy():
                select.select([pg.socket], [], [])
                pg.consume_input()
        except (OSError, ValueError):
            raise psycopg.OperationalError("relay database connection lost") from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return self.rowcount(self.run(sql, params))

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.rows(self.run(sql, params))

    @staticmethod
    def rows(res: pq.abc.PGresult) -> list[tuple[Any, ...]]:
        """``res``'s rows, decoded by column type."""
        cols = range(res.nfields)
        decode = [DECODE.get(res.ftype(c), bytes.decode) for c in cols]
        rows = []
        for r in range(res.ntuples):
            row = []
            for c in cols:
                v = res.get_value(r, c)
                row.append(None if v is None else decode[c](v))
            rows.append(tuple(row))
        return rows

    @staticmethod
    def rowcount(res: pq.abc.PGresult) -> Rows:
        status = res.command_status or b""
        tail = status.rsplit(b" ", 1)[-1]
        return Rows(int(tail) if tail.isdigit() else -1)
