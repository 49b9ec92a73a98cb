"""A relay database made before a column was added (``schema.ADDED_COLUMNS``) opens and gains
it: the submissions' franking commitment, which a resend must match (SPEC §10.8, §10.11). A message
accepted before has no commitment and cannot be resent; a new one can."""

from __future__ import annotations

import sqlite3

from e2e.relay.backends import open_store
from e2e.relay.schema import ADDED_COLUMNS, SCHEMA
from e2e.relay.store import SeenSubmission


def _old_schema() -> str:
    return SCHEMA.replace(" commitment BLOB,", "")


def test_an_old_database_gains_the_new_columns(relay_db: str) -> None:
    assert ("submissions", "commitment", "BLOB") in ADDED_COLUMNS
    if relay_db.startswith("postgres") or "dbname=" in relay_db:
        import psycopg

        with psycopg.connect(relay_db, autocommit=True) as conn:
            for stmt in _old_schema().format(serial="BIGSERIAL PRIMARY KEY").split(";"):
                if stmt.strip():
                    conn.execute(stmt.replace("BLOB", "BYTEA"))  # type: ignore[arg-type]
            conn.execute("INSERT INTO submissions (sender, message_id, digest, received_at,"
                         " copies, price, expires) VALUES ('\\x6f6c64', '\\x01', '\\x02', 1, 1,"
                         " 0, 99)")  # fmt: skip
    else:
        with sqlite3.connect(relay_db) as conn:
            for stmt in _old_schema().format(serial="INTEGER PRIMARY KEY AUTOINCREMENT").split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute("INSERT INTO submissions (sender, message_id, digest, received_at,"
                         " copies, price, expires) VALUES (x'6f6c64', x'01', x'02', 1, 1, 0, 99)")
    new = SeenSubmission(b"\x03", 2, 1, 0, b"c" * 32)
    for _ in range(2):  # a second open finds the column there
        store = open_store(relay_db)
        try:
            old = store.read(lambda tx: tx.seen(b"old", b"\x01"))
            assert old == SeenSubmission(b"\x02", 1, 1, 0, None)
            store.run(lambda tx: tx.insert_seen(b"new", b"\x09", new, 99))
            assert store.read(lambda tx: tx.seen(b"new", b"\x09")) == new
            store.run(lambda tx: tx.execute("DELETE FROM submissions WHERE sender = ?",
                                            (b"new",)))  # fmt: skip
        finally:
            store.close()
