"""Scale bench of the relay store (run by hand, not part of the ratio gate).

    python benches/relay_scale.py [--pg-dsn DSN] [--accounts 10000 1000000]
                                  [--queued 1000 100000 1000000] [--sqlite-max 1000000]
                                  [--rounds 8] [--batch 50] [--keep] [--reuse]
                                  [--also ACCOUNTS:QUEUED ...]

Does a submission or a fetch cost more when the relay holds more? For each size it makes a
database of its own (a PostgreSQL database with a unique name on the cluster of ``--pg-dsn``;
a SQLite file in a temporary directory, up to ``--sqlite-max`` accounts or deliveries) and
fills it with generated rows by bulk SQL (``generate_series`` on PostgreSQL, a recursive CTE
on SQLite), never through the API; on PostgreSQL as its manual advises for a bulk load
(:func:`bulk_load_pg`: one transaction, indexes and keys built after the rows; no WAL for the
load on a cluster with ``wal_level=minimal``). With ``--reuse`` the PostgreSQL databases are
named by their size and kept for the next run (10M accounts take 93 s to make on a quiet
machine, and 6.7 GB):

* accounts: one business per 1,000 accounts, the rest customers; one device each, a chat
  between each customer and a business, and one de-duplication record per customer (the
  ``submissions`` table a submission looks its message id up in);
* queued deliveries: in the mailboxes of the first customers' devices, 10,000 per device
  (the default mailbox quota; fewer in the first if the total is smaller), each counted in
  ``mailbox_usage`` as the relay counts them.

Then it opens every database at once through the relay's own store and service
(:class:`~e2e.relay.service.RelayService`, the code a request runs inside its transaction,
without HTTP and the signature check, whose cost does not depend on the tables) and times, in
round-robin rounds (the order of the databases reversed every other round, so a drift in the
machine's load meets every size alike):

* *submit*: ``batch`` one-copy service messages, one after another, each from a customer not
  used before (so the writer's directory cache never holds the sender: every submission
  reads its account, device and chat from the tables), its admission (nonce) included, each
  acknowledged after its commit;
* *fetch*: ``batch`` fetches (up to 100 deliveries) of the fullest device's mailbox, on a
  reader connection (the deliveries are not acknowledged, so the mailbox stays as it was).

It prints the median milliseconds per operation of each size and the ratio of each size to the
smallest one (the median over rounds of the per-round ratios). On PostgreSQL it also prints,
per size, the pages of each filled table a submission and a fetch touched, found in shared
buffers or read from outside them (``pg_statio_user_tables``), and the time spent reading
(``blk_read_time``, with ``track_io_timing=on``), and the plans of a submission's and a
fetch's statements run for an untouched customer (``EXPLAIN (ANALYZE, BUFFERS)``).
The method and the figures are in benches/README.md and the README's "Relay at scale".
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "relay"))

from relayhelp import fresh_pg_db  # noqa: E402

from e2e.platform.envelope import Envelope  # noqa: E402
from e2e.platform.policy import MessageClass  # noqa: E402
from e2e.platform.wire import Fetch, Submit  # noqa: E402
from e2e.relay.service import PreparedSubmit, RelayService  # noqa: E402
from e2e.relay.store import RelayStore, Tx  # noqa: E402

#: Deliveries one generated device's mailbox holds (the default mailbox quota).
PER_DEVICE = 10_000
#: Customers per business.
PER_BUSINESS = 1_000


def name_sql(prefix: str, expr: str, pg: bool) -> str:
    """The SQL of an account name: ``prefix`` and the 9-digit number ``expr``, as bytes."""
    if pg:
        return f"convert_to('{prefix}' || lpad(({expr})::text, 9, '0'), 'UTF8')"
    return f"CAST('{prefix}' || printf('%09d', {expr}) AS BLOB)"


def account_name(prefix: str, i: int) -> bytes:
    return f"{prefix}{i:09d}".encode()


def _series(n: int, pg: bool) -> str:
    """A row source of ``i`` from 0 to ``n - 1``."""
    if pg:
        return f"generate_series(0, {n - 1}) AS s(i)"
    return f"(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {n - 1}) SELECT i FROM s)"  # noqa: E501


def _rand(nbytes: int, pg: bool, salt: str, seed: str = "i::text") -> str:
    """``nbytes`` bytes that differ from row to row (``seed``: the row's text on PostgreSQL;
    one MD5 per value, repeated to the width: the generation's cost is mostly these)."""
    if pg:
        return (f"substring(decode(repeat(md5({seed} || '{salt}'), {(nbytes + 15) // 16}),"
                f" 'hex') from 1 for {nbytes})")  # fmt: skip
    return f"randomblob({nbytes})"


def fill_statements(accounts: int, queued: int, pg: bool, mail_from: int = 0) -> list[str]:
    """The bulk statements that generate a database of ``accounts`` accounts and ``queued``
    queued deliveries (see the module's docstring); with ``mail_from``, only the deliveries
    from number ``mail_from`` on, added to a database that holds the ones before, and the
    mailbox counters made again from the mailboxes."""
    biz = max(1, accounts // PER_BUSINESS)
    cust = accounts - biz
    c = name_sql("c", "i", pg)
    b = name_sql("b", "i", pg)
    chat_biz = name_sql("b", f"i % {biz}", pg)
    far = 4_000_000_000  # expires far in the future: the purge leaves them
    s = _series
    out = []
    if not mail_from:
        out += [
            f"INSERT INTO accounts (name, kind, tier, identity) SELECT {b}, 1, 0,"
            f" {_rand(32, pg, 'b')} FROM {s(biz, pg)}",
            f"INSERT INTO accounts (name, kind, tier, identity) SELECT {c}, 0, 0,"
            f" {_rand(32, pg, 'c')} FROM {s(cust, pg)}",
            "INSERT INTO devices (account, device_id, certificate, identity)"
            f" SELECT name, 1, {_rand(96, pg, 'd', 'encode(name, $$hex$$)')}, identity"
            " FROM accounts",
            "INSERT INTO chats (business, customer, last_customer_message, blocked, limited,"
            " opted_in, template_times, spam_reports, customer_count, business_count)"
            f" SELECT {chat_biz}, {c}, 1, 0, 0, 0, '', 0, 1, 0 FROM {s(cust, pg)}",
            "INSERT INTO submissions (sender, message_id, digest, received_at, copies, price,"
            f" expires) SELECT {c}, {_rand(16, pg, 'm')}, {_rand(32, pg, 'g')}, 1, 1, 0, {far}"
            f" FROM {s(cust, pg)}",
        ]
    empty = "CAST('' AS BYTEA)" if pg else "X''"
    if queued > mail_from:
        # Delivery i goes to customer i // PER_DEVICE's device, from customer (i % cust).
        dest = name_sql("c", f"i / {PER_DEVICE}", pg)
        src = name_sql("c", f"i % {cust}", pg)
        rows = _series(queued - mail_from, pg)
        out.append(
            "INSERT INTO mailbox (account, device_id, envelope, received_at, tag, sender, size)"
            f" SELECT {dest}, 1, {_rand(200, pg, 'e')}, {far}, {_rand(16, pg, 't')}, {src}, 200"
            f" FROM (SELECT i + {mail_from} AS i FROM {rows}) AS q"
        )
        if mail_from:
            out.append("DELETE FROM mailbox_usage")
        out.append(
            "INSERT INTO mailbox_usage (account, device_id, sender, messages, bytes)"
            " SELECT account, device_id, sender, COUNT(*), SUM(size) FROM mailbox"
            " GROUP BY account, device_id, sender"
        )
        out.append(
            "INSERT INTO mailbox_usage (account, device_id, sender, messages, bytes)"
            f" SELECT account, device_id, {empty}, COUNT(*), SUM(size) FROM mailbox"
            " GROUP BY account, device_id"
        )
    return out


#: The tables the generation fills.
FILLED = ("accounts", "devices", "chats", "submissions", "mailbox", "mailbox_usage")


def bulk_load_pg(db: str, accounts: int, queued: int, mail_from: int = 0) -> None:
    """Run :func:`fill_statements` on the PostgreSQL database ``db`` the way PostgreSQL's
    manual advises for a bulk load ("Populating a Database"): in one transaction that first
    empties the filled tables (``TRUNCATE``: new files, so on a cluster with
    ``wal_level=minimal`` their load writes no WAL and is flushed once at commit), drops
    their indexes and keys, inserts, and builds the indexes again afterwards (a sort each,
    with ``maintenance_work_mem``, instead of millions of insertions). With ``mail_from`` only
    the mailbox tables are refilled: their rows before ``mail_from`` are kept aside first."""
    import psycopg

    tables = FILLED if not mail_from else FILLED[4:]
    with psycopg.connect(db) as conn:  # one transaction
        if mail_from:
            conn.execute("CREATE TEMP TABLE kept AS SELECT * FROM mailbox")
        conn.execute("TRUNCATE " + ", ".join(tables))  # type: ignore[arg-type]
        if mail_from:
            conn.execute("INSERT INTO mailbox SELECT * FROM kept")
        keys = conn.execute(
            "SELECT c.conname, r.relname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
            " JOIN pg_class r ON r.oid = c.conrelid JOIN pg_namespace n ON n.oid = r.relnamespace"
            " WHERE n.nspname = current_schema() AND r.relname = ANY(%s)"
            " AND c.contype IN ('p', 'u')",
            (list(tables),),
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            " AND tablename = ANY(%s) AND NOT indexname = ANY(%s)",
            (list(tables), [k[0] for k in keys]),
        ).fetchall()
        for name, table, _ in keys:
            conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")  # type: ignore[arg-type]
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")  # type: ignore[arg-type]
        for stmt in fill_statements(accounts, queued, True, mail_from):
            conn.execute(stmt)  # type: ignore[arg-type]
        for name, table, definition in keys:
            conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")  # type: ignore[arg-type]
        for _, definition in indexes:
            conn.execute(definition)  # type: ignore[arg-type]
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


@dataclass
class Case:
    """One generated database, open through the relay's store and service."""

    label: str
    accounts: int
    queued: int
    db: str
    store: RelayStore
    service: RelayService
    next_sender: int = 0

    @property
    def customers(self) -> int:
        return self.accounts - max(1, self.accounts // PER_BUSINESS)


def _dsn_with(dsn: str, dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)  # type: ignore[arg-type]


def _generated(dsn: str) -> dict[tuple[int, int], str]:
    """The databases a run with ``--reuse`` left on the cluster: (accounts, queued) -> name."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database"
                                            " WHERE datname LIKE 'relay_scale_%'")]  # fmt: skip
    out = {}
    for name in names:
        _, _, a, q = name.split("_")
        out[int(a), int(q)] = name
    return out


def make_case(accounts: int, queued: int, pg_dsn: str | None, tmp: Path, reuse: bool,
              wanted: set[tuple[int, int]]) -> Case:  # fmt: skip
    """The database of ``accounts`` and ``queued`` open through the relay. With ``reuse`` (on
    PostgreSQL) it is named by its size and kept: a later run opens it as it is, or, if only
    the same accounts with fewer queued deliveries exist (and this run does not ask for that
    one), renames that one and adds the missing deliveries."""
    from e2e.relay.backends import open_store

    pg = pg_dsn is not None
    label = f"{'postgresql' if pg else 'sqlite'} {accounts:,} accounts {queued:,} queued"
    t = time.perf_counter()
    if pg_dsn and reuse:
        import psycopg

        have = _generated(pg_dsn)
        name = f"relay_scale_{accounts}_{queued}"
        db = _dsn_with(pg_dsn, name)
        smaller = [q for a, q in have if a == accounts and q < queued and (a, q) not in wanted]
        if (accounts, queued) in have:
            print(f"  reusing {label}", flush=True)
        elif smaller:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                old = have[accounts, max(smaller)]
                conn.execute(f"ALTER DATABASE {old} RENAME TO {name}")  # type: ignore[arg-type]
            bulk_load_pg(db, accounts, queued, mail_from=max(smaller))
        else:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
            open_store(db).close()  # the schema
            bulk_load_pg(db, accounts, queued)
    elif pg_dsn:
        db = fresh_pg_db(pg_dsn)
        open_store(db).close()  # the schema
        bulk_load_pg(db, accounts, queued)
    else:
        db = str(tmp / f"scale-{accounts}-{queued}.db")
        open_store(db).close()  # the schema
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN")
        for stmt in fill_statements(accounts, queued, False):
            conn.execute(stmt)
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.close()
    print(f"  made {label} in {time.perf_counter() - t:.0f} s", flush=True)
    store = open_store(db)
    service = RelayService(store)
    service.refresh_franking_keys()
    # Senders not used by an earlier run on a kept database (the chance of a repeat is small).
    start = int.from_bytes(os.urandom(4), "big")
    return Case(label, accounts, queued, db, store, service, next_sender=start)


def submit_once(case: Case) -> None:
    i = case.next_sender
    case.next_sender += 1
    # A customer not used before, spread over the whole range of names.
    cust = (i * 7919 + 13) % case.customers
    sender = account_name("c", cust)
    biz = account_name("b", cust % max(1, case.accounts // PER_BUSINESS))
    env = Envelope(MessageClass.SERVICE, sender, 1, biz, biz, 1, os.urandom(16),
                   os.urandom(32), b"opaque-frame:" + os.urandom(87))  # fmt: skip
    svc = case.service
    raw = env.to_bytes()
    prep = svc.prepare_submit((sender, 1), Submit((raw,)))
    assert isinstance(prep, PreparedSubmit)
    now = time.time()

    def step(tx: Tx) -> Any:
        tx.admit(sender, 1, os.urandom(16), int(now) + 600, now, 200.0, 400.0, 0)
        return svc.submit(tx, (sender, 1), prep)

    case.store.run(step)


def fetch_once(case: Case) -> None:
    dev = (account_name("c", 0), 1)
    mb = case.store.read(lambda tx: case.service.fetch(tx, dev, Fetch(dev[0], 1, 0, 100)))
    assert len(mb.deliveries) == min(100, case.queued, PER_DEVICE) or not case.queued


def explain(case: Case) -> None:
    """The plans of a submission's and a fetch's statements on ``case`` (PostgreSQL), run
    (``EXPLAIN (ANALYZE, BUFFERS)``) for a customer no submission of this run has touched:
    each plan's pages found in shared buffers (hit) and read from outside them (read)."""
    import psycopg

    n = int.from_bytes(os.urandom(4), "big") % case.customers
    c = account_name("c", n)
    b = account_name("b", n % max(1, case.accounts // PER_BUSINESS))
    statements = [
        ("account", "SELECT kind, tier, identity FROM accounts WHERE name = %s", (c,)),
        ("device ids", "SELECT account, device_id FROM devices WHERE account IN (%s, %s)", (c, b)),
        ("seen", "SELECT digest FROM submissions WHERE sender = %s AND message_id = %s",
         (c, b"x" * 16)),
        ("chat", "SELECT blocked FROM chats WHERE business = %s AND customer = %s", (b, c)),
        ("usage", "SELECT messages FROM mailbox_usage WHERE account = %s AND device_id = 1"
         " AND sender = %s", (b, c)),
        ("fetch sizes", "SELECT seq, LENGTH(envelope) FROM mailbox WHERE account = %s AND"
         " device_id = 1 ORDER BY seq LIMIT 100", (account_name("c", 0),)),
        ("count mail", "SELECT COUNT(*) FROM mailbox WHERE account = %s AND device_id = 1",
         (account_name("c", 0),)),
    ]  # fmt: skip
    with psycopg.connect(case.db) as conn:
        for what, sql, params in statements:
            plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, SUMMARY OFF) " + sql,  # type: ignore[arg-type]
                                params).fetchall()  # fmt: skip
            lines = [str(r[0]).strip().removeprefix("-> ") for r in plan]
            steps = [ln.split("  (cost")[0] for ln in lines if "(cost" in ln]
            bufs = next((ln.removeprefix("Buffers: ") for ln in lines if "Buffers" in ln), "")
            print(f"  {what:<12} {' / '.join(steps)} [{bufs or 'no pages'}]")


def _statio(cases: list[Case]) -> dict[str, dict[str, tuple[float, float]]]:
    """Each case's pages of the filled tables (heap and indexes) found in shared buffers and
    read from outside them, since the cluster's start (``pg_statio_user_tables``), and under
    ``read ms`` the database's time reading pages (0 without ``track_io_timing``)."""
    import psycopg

    # A backend sends its counts when it goes idle, at most once a second: wait a second, then
    # end a transaction on each of the case's connections (writer and reader) to send them.
    time.sleep(1.1)
    for case in cases:
        submit_once(case)
        fetch_once(case)
    time.sleep(0.3)
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for case in cases:
        with psycopg.connect(case.db, autocommit=True) as conn:
            row = conn.execute("SELECT blk_read_time FROM pg_stat_database"
                               " WHERE datname = current_database()").fetchone()  # fmt: skip
            ms = row[0] if row else 0.0
            rows = conn.execute(
                "SELECT relname, COALESCE(heap_blks_hit, 0) + COALESCE(idx_blks_hit, 0),"
                " COALESCE(heap_blks_read, 0) + COALESCE(idx_blks_read, 0)"
                " FROM pg_statio_user_tables WHERE relname = ANY(%s)",
                (list(FILLED),),
            ).fetchall()
        out[case.label] = {r[0]: (int(r[1]), int(r[2])) for r in rows}
        out[case.label]["read ms"] = (0, float(ms))
    return out


def measure(cases: list[Case], rounds: int, batch: int, pg: bool) -> None:
    times: dict[str, dict[str, list[float]]] = {c.label: {"submit": [], "fetch": []} for c in cases}
    for case in cases:  # warm: the connections, the prepared statements
        for _ in range(5):
            submit_once(case)
            fetch_once(case)
    if pg:
        before = _statio(cases)
    for r in range(rounds):
        order = cases if r % 2 == 0 else cases[::-1]
        for op, fn in (("submit", submit_once), ("fetch", fetch_once)):
            for case in order:
                t = time.perf_counter()
                for _ in range(batch):
                    fn(case)
                times[case.label][op].append((time.perf_counter() - t) / batch)
        print(f"  round {r + 1}/{rounds} (load {os.getloadavg()[0]:.1f})", flush=True)
    base = cases[0].label
    print(f"{'database':<50} {'submit ms':>9} {'ratio':>6} {'fetch ms':>9} {'ratio':>6}")
    for case in cases:
        row = [case.label.ljust(50)]
        for op in ("submit", "fetch"):
            mine = times[case.label][op]
            ratios = [m / b for m, b in zip(mine, times[base][op], strict=True)]
            row.append(f"{statistics.median(mine) * 1000:>9.3f} {statistics.median(ratios):>6.2f}")
        print(" ".join(row), flush=True)
    if pg:
        after = _statio(cases)
        pairs = rounds * batch + 1
        print("pages per submission + fetch (found in shared buffers / read from outside),"
              " and the time reading them (ms, with track_io_timing):")  # fmt: skip
        for case in cases:
            parts = []
            for table in (*FILLED, "read ms"):
                h0, r0 = before[case.label].get(table, (0, 0))
                h1, r1 = after[case.label].get(table, (0, 0))
                parts.append(f"{table} {(h1 - h0) / pairs:.1f}/{(r1 - r0) / pairs:.2f}")
            print(f"  {case.label:<48} {', '.join(parts)}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg-dsn", default=os.environ.get("E2E_BENCH_PG_DSN"))
    ap.add_argument("--accounts", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--queued", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    ap.add_argument("--sqlite-max", type=int, default=1_000_000)
    ap.add_argument("--no-sqlite", action="store_true")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--keep", action="store_true", help="leave the databases behind")
    ap.add_argument("--reuse", action="store_true",
                    help="PostgreSQL: databases named by size, kept, and reused by a later run")
    ap.add_argument("--also", nargs="*", default=[], metavar="ACCOUNTS:QUEUED",
                    help="more sizes, each measured against the smallest")
    ns = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="relay-scale-"))
    backends: list[str | None] = ([] if ns.no_sqlite else [None]) + (
        [ns.pg_dsn] if ns.pg_dsn else []
    )
    small_a, small_q = min(ns.accounts), min(ns.queued)
    for dsn in backends:
        limit = None if dsn else ns.sqlite_max
        sizes = [(a, small_q) for a in sorted(ns.accounts)]
        sizes += [(small_a, q) for q in sorted(ns.queued) if q != small_q]
        also = [(int(a), int(q)) for a, q in (x.split(":") for x in ns.also)]
        sizes += [x for x in also if x not in sizes]
        sizes = [(a, q) for a, q in sizes if limit is None or max(a, q) <= limit]
        print(f"{'postgresql' if dsn else 'sqlite'}: making {len(sizes)} databases", flush=True)
        cases = [make_case(a, q, dsn, tmp, ns.reuse, set(sizes)) for a, q in sizes]
        try:
            base = [c for c in cases if (c.accounts, c.queued) == (small_a, small_q)]
            series = (
                ("accounts", [c for c in cases if c.queued == small_q]),
                ("queued deliveries", [c for c in cases if c.accounts == small_a]),
                ("more", base + [c for c in cases if (c.accounts, c.queued) in also]),
            )
            for what, chosen in series:
                if len(chosen) > 1:
                    print(f"-- {what} (load {os.getloadavg()[0]:.1f})", flush=True)
                    measure(chosen, ns.rounds, ns.batch, dsn is not None)
            if dsn:
                for case in cases:
                    print(f"query plans on {case.label}:")
                    explain(case)
        finally:
            for case in cases:
                case.service.close()  # and its store
            if dsn and not ns.keep and not ns.reuse:
                import psycopg

                with psycopg.connect(dsn, autocommit=True) as conn:
                    for case in cases:
                        name = case.db.rsplit("dbname=", 1)[-1].split()[0]
                        conn.execute(f"DROP DATABASE IF EXISTS {name}")  # type: ignore[arg-type]
    if not ns.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
