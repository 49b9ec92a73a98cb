"""The relay store's tables and its longer shared statements (SPEC.md §10.8), in portable SQL
(SQLite 3.35+ and PostgreSQL 13+): the backends create the tables, and add the columns of
:data:`ADDED_COLUMNS` to a database made before them; :mod:`e2e.relay.store` runs the
statements."""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "SCHEMA",
    "ADDED_COLUMNS",
    "USE_NONCE",
    "TAKE_TOKEN",
    "BUCKET_COLUMNS",
    "BUCKET_VALUES",
    "bucket_params",
    "RESERVE_MAIL",
    "RESERVE_ROW",
]

#: The relay's tables (portable SQL: SQLite 3.35+ and PostgreSQL 13+). BLOB is BYTEA on PG.
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS relay_meta (
    key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    name BLOB PRIMARY KEY, kind INTEGER NOT NULL, tier INTEGER NOT NULL,
    identity BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    account BLOB NOT NULL, device_id BIGINT NOT NULL, certificate BLOB NOT NULL,
    identity BLOB NOT NULL, PRIMARY KEY (account, device_id));
CREATE TABLE IF NOT EXISTS device_lists (
    account BLOB PRIMARY KEY, version BIGINT NOT NULL, list BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS provisioning (
    id BLOB PRIMARY KEY, sealed BLOB NOT NULL, expires BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS recovery (
    account BLOB PRIMARY KEY, auth_key BLOB NOT NULL, sealed BLOB NOT NULL,
    failures INTEGER NOT NULL, window_start BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS prekeys (
    account BLOB NOT NULL, device_id BIGINT NOT NULL, prekey_id BIGINT NOT NULL,
    bundle BLOB NOT NULL, claimed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account, device_id, prekey_id));
CREATE TABLE IF NOT EXISTS last_resort (
    account BLOB NOT NULL, device_id BIGINT NOT NULL, bundle BLOB NOT NULL,
    PRIMARY KEY (account, device_id));
CREATE TABLE IF NOT EXISTS mailbox (
    seq {serial}, account BLOB NOT NULL, device_id BIGINT NOT NULL,
    envelope BLOB NOT NULL, received_at BIGINT NOT NULL, tag BLOB NOT NULL,
    sender BLOB, size BIGINT);
CREATE INDEX IF NOT EXISTS mailbox_by_device ON mailbox (account, device_id, seq);
CREATE TABLE IF NOT EXISTS mailbox_usage (
    account BLOB NOT NULL, device_id BIGINT NOT NULL, sender BLOB NOT NULL,
    messages BIGINT NOT NULL, bytes BIGINT NOT NULL,
    PRIMARY KEY (account, device_id, sender));
CREATE TABLE IF NOT EXISTS submissions (
    sender BLOB NOT NULL, message_id BLOB NOT NULL, digest BLOB NOT NULL,
    received_at BIGINT NOT NULL, copies INTEGER NOT NULL, price BIGINT NOT NULL,
    expires BIGINT NOT NULL, commitment BLOB, PRIMARY KEY (sender, message_id));
CREATE INDEX IF NOT EXISTS submissions_by_expiry ON submissions (expires);
CREATE TABLE IF NOT EXISTS chats (
    business BLOB NOT NULL, customer BLOB NOT NULL, last_customer_message BIGINT,
    blocked INTEGER NOT NULL, limited INTEGER NOT NULL, opted_in INTEGER NOT NULL,
    template_times TEXT NOT NULL, spam_reports BIGINT NOT NULL,
    customer_count BIGINT NOT NULL, business_count BIGINT NOT NULL,
    blocked_customer INTEGER NOT NULL DEFAULT 0, customer_receipts BIGINT NOT NULL DEFAULT 0,
    business_receipts BIGINT NOT NULL DEFAULT 0, entry_until BIGINT,
    PRIMARY KEY (business, customer));
CREATE TABLE IF NOT EXISTS billing (
    line {serial}, business BLOB NOT NULL, message_id BLOB NOT NULL, cls INTEGER NOT NULL,
    in_window INTEGER NOT NULL, price BIGINT NOT NULL, at BIGINT NOT NULL,
    UNIQUE (business, message_id));
CREATE TABLE IF NOT EXISTS reports (
    id {serial}, reporter BLOB NOT NULL, business BLOB NOT NULL, at BIGINT NOT NULL,
    messages INTEGER NOT NULL, report BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS reported (
    business BLOB NOT NULL, customer BLOB NOT NULL, message_id BLOB NOT NULL,
    PRIMARY KEY (business, customer, message_id));
CREATE TABLE IF NOT EXISTS templates (
    business BLOB NOT NULL, template_id BLOB NOT NULL, cls INTEGER NOT NULL,
    text_hash BLOB NOT NULL, PRIMARY KEY (business, template_id));
CREATE TABLE IF NOT EXISTS catalogue (
    business BLOB NOT NULL, name TEXT NOT NULL, language TEXT NOT NULL, version BIGINT NOT NULL,
    category INTEGER NOT NULL, text TEXT NOT NULL, params BLOB NOT NULL, state INTEGER NOT NULL,
    reason TEXT NOT NULL, at BIGINT NOT NULL, PRIMARY KEY (business, name, language, version));
CREATE TABLE IF NOT EXISTS billing_category (
    business BLOB NOT NULL, message_id BLOB NOT NULL, category INTEGER NOT NULL,
    PRIMARY KEY (business, message_id));
CREATE TABLE IF NOT EXISTS initiations (
    business BLOB NOT NULL, customer BLOB NOT NULL, at BIGINT NOT NULL,
    PRIMARY KEY (business, customer));
CREATE TABLE IF NOT EXISTS quality_events (
    business BLOB NOT NULL, customer BLOB NOT NULL, kind INTEGER NOT NULL, at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS quality_events_by_business ON quality_events (business, at);
CREATE TABLE IF NOT EXISTS messaging_tiers (
    business BLOB PRIMARY KEY, level INTEGER NOT NULL, evaluated BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS ad_entries (
    seq {serial}, token_id BLOB NOT NULL UNIQUE, business BLOB NOT NULL, ad_id BLOB NOT NULL,
    bucket BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS ad_entries_by_business ON ad_entries (business);
CREATE TABLE IF NOT EXISTS business_notices (
    seq {serial}, business BLOB NOT NULL, customer BLOB NOT NULL, kind INTEGER NOT NULL,
    value BIGINT NOT NULL, at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS business_notices_by_business ON business_notices (business, seq);
CREATE TABLE IF NOT EXISTS penalties (
    business BLOB NOT NULL, message_id BLOB NOT NULL, declared INTEGER NOT NULL,
    content INTEGER NOT NULL, price BIGINT NOT NULL, at BIGINT NOT NULL,
    reporter BLOB NOT NULL, PRIMARY KEY (business, message_id));
CREATE TABLE IF NOT EXISTS routes (
    business BLOB NOT NULL, customer BLOB NOT NULL, device_id BIGINT NOT NULL,
    PRIMARY KEY (business, customer, device_id));
CREATE TABLE IF NOT EXISTS designated (
    business BLOB NOT NULL, device_id BIGINT NOT NULL, PRIMARY KEY (business, device_id));
CREATE TABLE IF NOT EXISTS franking_keys (
    key_id BIGINT PRIMARY KEY, secret BLOB, created BIGINT NOT NULL, retired BIGINT);
CREATE TABLE IF NOT EXISTS key_log (
    idx BIGINT PRIMARY KEY, account BLOB NOT NULL, version BIGINT NOT NULL,
    entry BLOB NOT NULL, UNIQUE (account, version));
CREATE TABLE IF NOT EXISTS business_certs (
    account BLOB PRIMARY KEY, certificate BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS log_keys (
    id INTEGER PRIMARY KEY, secret BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS auth_nonces (
    account BLOB NOT NULL, device_id BIGINT NOT NULL, nonce BLOB NOT NULL,
    expires BIGINT NOT NULL, PRIMARY KEY (account, device_id, nonce));
CREATE INDEX IF NOT EXISTS auth_nonces_by_expiry ON auth_nonces (expires);
CREATE TABLE IF NOT EXISTS rate_buckets (
    account BLOB NOT NULL, device_id BIGINT NOT NULL, tokens DOUBLE PRECISION NOT NULL,
    at DOUBLE PRECISION NOT NULL, rate DOUBLE PRECISION NOT NULL,
    burst DOUBLE PRECISION NOT NULL, taken DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (account, device_id));
INSERT INTO relay_meta (key, value) VALUES ('directory', 0) ON CONFLICT (key) DO NOTHING;
"""


#: Columns added since the tables were first made: (table, column, declaration). A backend
#: adds each one missing from a database made before (SPEC §10.8).
ADDED_COLUMNS: Final = (
    ("submissions", "commitment", "BLOB"),
    ("mailbox", "sender", "BLOB"),
    ("mailbox", "size", "BIGINT"),
    ("chats", "blocked_customer", "INTEGER NOT NULL DEFAULT 0"),
    ("chats", "customer_receipts", "BIGINT NOT NULL DEFAULT 0"),
    ("chats", "business_receipts", "BIGINT NOT NULL DEFAULT 0"),
    ("templates", "registered_at", "BIGINT NOT NULL DEFAULT 0"),
    ("chats", "entry_until", "BIGINT"),
)

#: Record a request's nonce; a row back unless it was used before (a replay).
USE_NONCE: Final = (
    "INSERT INTO auth_nonces (account, device_id, nonce, expires) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (account, device_id, nonce) DO NOTHING RETURNING 1"
)

#: The token bucket of a device (:meth:`Tx.take_token`): a new row starts full less the take;
#: an existing one is refilled for the time since its last take (never for time going back),
#: capped at its burst, and, if that leaves at least one token, the wanted number of tokens
#: is taken if it holds them, else one; the row keeps the size of that take.
#: Rate and burst are stored with it, so the purge needs no configuration. ``{source}`` gives
#: the new row's values, in the order of :func:`bucket_params`; ``excluded.taken`` is the
#: number wanted.
_ELAPSED: Final = (
    "(CASE WHEN excluded.at > rate_buckets.at THEN excluded.at - rate_buckets.at ELSE 0 END)"
)
_FILLED: Final = f"(rate_buckets.tokens + {_ELAPSED} * excluded.rate)"
_LEVEL: Final = f"(CASE WHEN {_FILLED} > excluded.burst THEN excluded.burst ELSE {_FILLED} END)"
_TAKE: Final = f"(CASE WHEN {_LEVEL} >= excluded.taken THEN excluded.taken ELSE 1 END)"
TAKE_TOKEN: Final = (
    "INSERT INTO rate_buckets (account, device_id, tokens, at, rate, burst, taken) {source}"
    f" ON CONFLICT (account, device_id) DO UPDATE SET tokens = {_LEVEL} - {_TAKE},"
    f" taken = {_TAKE},"
    " at = CASE WHEN excluded.at > rate_buckets.at THEN excluded.at ELSE rate_buckets.at END,"
    " rate = excluded.rate, burst = excluded.burst"
    f" WHERE {_LEVEL} >= 1 RETURNING taken"
)
#: The typed values of a new bucket row (typed, so PostgreSQL infers nothing from context).
BUCKET_COLUMNS: Final = (
    "CAST(? AS BLOB), CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION),"
    " CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION),"
    " CAST(? AS DOUBLE PRECISION)"
)
BUCKET_VALUES: Final = f"VALUES ({BUCKET_COLUMNS})"


def bucket_params(account: bytes, device_id: int, now: float, rate: float, burst: float,
                  want: int) -> tuple[Any, ...]:  # fmt: skip
    """A new row's values: full (``burst``) less ``want`` (at most ``burst``) tokens."""
    first = float(min(want, int(burst)))
    return (account, device_id, float(burst) - first, float(now), float(rate), float(burst),
            first)  # fmt: skip


#: Count deliveries into mailboxes' usage (:meth:`~e2e.relay.store.Tx.reserve_mail`): one
#: ``{values}`` row of :data:`RESERVE_ROW` (account, device, sender, bytes) per mailbox and
#: counter (sender ``b""``: the device's total), then the quotas (messages in all, from one
#: sender; bytes in all, from one sender). A row over its quota is left as it is and not
#: returned; a new row is made whatever its size (one delivery fits every quota).
RESERVE_ROW: Final = "(?, ?, ?, 1, CAST(? AS BIGINT))"
RESERVE_MAIL: Final = (
    "INSERT INTO mailbox_usage (account, device_id, sender, messages, bytes) VALUES {values}"
    " ON CONFLICT (account, device_id, sender) DO UPDATE"
    " SET messages = mailbox_usage.messages + 1, bytes = mailbox_usage.bytes + excluded.bytes"
    " WHERE mailbox_usage.messages < CASE WHEN LENGTH(mailbox_usage.sender) = 0"
    " THEN CAST(? AS BIGINT) ELSE CAST(? AS BIGINT) END"
    " AND mailbox_usage.bytes + excluded.bytes <= CASE WHEN LENGTH(mailbox_usage.sender) = 0"
    " THEN CAST(? AS BIGINT) ELSE CAST(? AS BIGINT) END RETURNING 1"
)
