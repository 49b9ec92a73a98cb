"""The PostgreSQL store's writer connections (SPEC §10.8): several writers in one relay process
race on one chat, one mailbox quota, one idempotency key and one nonce and each is decided
exactly once; a database that silently stops answering (a partition) makes requests answer
503 ``store_unavailable`` within the store's bound, not hang, and the relay recovers when it
answers again, losing nothing it acknowledged."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from cutproxy import CutProxy
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from relayhelp import Dev, Refused, RelayProcess, new_device, race, relay_with

from e2e.platform import wire
from e2e.platform.envelope import Envelope
from e2e.platform.policy import MessageClass, PolicyConfig
from e2e.relay.pglink import CONNECTION_DEFAULTS, WRITER_NAME, with_timeouts

CUSTOMER, BUSINESS = 0, 1
WRITERS = 4
QUOTA = 5
pytestmark = pytest.mark.pg


def _stored(db: str, account: bytes) -> list[bytes]:
    """The message ids of the deliveries in ``account``'s mailboxes, read from the database."""
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT envelope FROM mailbox WHERE account = %s", (account,))
        return [Envelope.from_bytes(bytes(r[0])).message_id for r in rows.fetchall()]


@pytest.fixture(scope="module")
def writers_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RelayProcess, str]]:
    from relayhelp import drop_pg_db, fresh_pg_db, pg_or_skip

    dsn = pg_or_skip()
    db = fresh_pg_db(dsn)
    # Without affinity racing requests go round the writers in turn: twelve of them land on
    # all four writers, whatever their keys (with it, one recipient's would share one).
    env = {"E2E_RELAY_OPS_PG_WRITERS": str(WRITERS), "E2E_RELAY_OPS_PG_AFFINITY": "0",
           "E2E_RELAY_MAILBOX_MAX_MESSAGES": str(QUOTA),
           "E2E_RELAY_MAILBOX_SENDER_MESSAGES": str(QUOTA),
           "E2E_RELAY_RATE_RATE": "10000", "E2E_RELAY_RATE_BURST": "10000"}  # fmt: skip
    log = tmp_path_factory.mktemp("writers") / "relay.log"
    try:
        with relay_with(db, log, env) as relay:
            yield relay, db
    finally:
        drop_pg_db(dsn, db)


def _as(url: str, dev: Dev) -> Callable[[httpx.Client], Dev]:
    """``dev``'s keys on another connection (each racing thread has its own)."""

    def on(client: httpx.Client) -> Dev:
        twin = Dev(client, dev.acct, dev.device_id)
        twin.identity = dev.identity
        return twin

    return on


def test_the_writers_are_separate_connections(writers_relay: tuple[RelayProcess, str]) -> None:
    relay, db = writers_relay
    with httpx.Client(base_url=relay.url, timeout=30) as c:
        new_device(c, b"warm", CUSTOMER)  # every writer has run a group by now, or will
    name = conninfo_to_dict(db)["dbname"]
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            (name, WRITER_NAME),
        ).fetchone()
    assert row is not None and row[0] == WRITERS


def test_one_chat_is_decided_once_across_writers(writers_relay: tuple[RelayProcess, str]) -> None:
    """Templates to a customer who limited the business: exactly the policy's allowance of
    them is accepted, however the writers interleave (the chat's lock is tried by each)."""
    relay, _ = writers_relay
    with httpx.Client(base_url=relay.url, timeout=30) as c:
        biz = new_device(c, b"shop-chat", BUSINESS, tier=1)
        cust = new_device(c, b"cust-chat", CUSTOMER)
        cust.submit(cust.envelopes(b"shop-chat", [biz.addr], MessageClass.SERVICE))
        cust.control(wire.Control.LIMIT, b"shop-chat")

    def send(i: int) -> wire.Receipt:
        with httpx.Client(base_url=relay.url, timeout=30) as c:
            dev = _as(relay.url, biz)(c)
            return dev.submit(dev.envelopes(b"cust-chat", [cust.addr], MessageClass.TEMPLATE))

    results = race(12, send)
    accepted = [r for r in results if isinstance(r, wire.Receipt)]
    assert len(accepted) == PolicyConfig().limited_templates
    assert {r.code for r in results if isinstance(r, Refused)} == {"limited"}, results


def test_one_mailbox_quota_is_never_exceeded(writers_relay: tuple[RelayProcess, str]) -> None:
    """Twelve customers (twelve chats: nothing serializes them but the mailbox's usage row)
    write to one device whose mailbox holds five: exactly five are accepted and stored."""
    relay, db = writers_relay
    with httpx.Client(base_url=relay.url, timeout=30) as c:
        biz = new_device(c, b"shop-quota", BUSINESS)
        custs = [new_device(c, b"cust-quota%d" % i, CUSTOMER) for i in range(12)]

    def send(i: int) -> wire.Receipt:
        with httpx.Client(base_url=relay.url, timeout=30) as c:
            dev = _as(relay.url, custs[i])(c)
            return dev.submit(dev.envelopes(b"shop-quota", [biz.addr], MessageClass.SERVICE))

    results = race(12, send)
    accepted = [r for r in results if isinstance(r, wire.Receipt)]
    assert len(accepted) == QUOTA
    assert {(r.status, r.code) for r in results if isinstance(r, Refused)} == {
        (429, "mailbox_full")
    }, results
    assert sorted(_stored(db, b"shop-quota")) == sorted(r.message_id for r in accepted)


def test_one_message_id_is_accepted_once(writers_relay: tuple[RelayProcess, str]) -> None:
    """One message submitted eight times at once (each its own signed request): one delivery,
    and every answer is the first acceptance's receipt."""
    relay, db = writers_relay
    with httpx.Client(base_url=relay.url, timeout=30) as c:
        biz = new_device(c, b"shop-idem", BUSINESS)
        cust = new_device(c, b"cust-idem", CUSTOMER)
        envs = cust.envelopes(b"shop-idem", [biz.addr], MessageClass.SERVICE)

    def send(i: int) -> wire.Receipt:
        with httpx.Client(base_url=relay.url, timeout=30) as c:
            return _as(relay.url, cust)(c).submit(envs)

    results = race(8, send)
    assert all(isinstance(r, wire.Receipt) for r in results), results
    assert len(set(results)) == 1
    assert _stored(db, b"shop-idem") == [results[0].message_id]


def test_one_nonce_is_used_once(writers_relay: tuple[RelayProcess, str]) -> None:
    """One signed request sent eight times at once: one is served, the others are replays."""
    relay, db = writers_relay
    with httpx.Client(base_url=relay.url, timeout=30) as c:
        biz = new_device(c, b"shop-nonce", BUSINESS)
        cust = new_device(c, b"cust-nonce", CUSTOMER)
    body = wire.Submit(
        tuple(cust.envelopes(b"shop-nonce", [biz.addr], MessageClass.SERVICE))
    ).to_bytes()
    auth = cust.sign(wire.Path.MESSAGE_SUBMIT, body)

    def send(i: int) -> int:
        with httpx.Client(base_url=relay.url, timeout=30) as c:
            r = _as(relay.url, cust)(c).raw(wire.Path.MESSAGE_SUBMIT, body, auth)
            return r.status_code

    codes = race(8, send)
    assert sorted(codes) == [200] + [401] * 7, codes
    assert len(_stored(db, b"shop-nonce")) == 1


def test_a_key_keeps_its_writer_and_the_rest_go_round(pg_db: str) -> None:
    from e2e.relay.postgres import PostgresRelayStore

    for affinity in (True, False):
        store = PostgresRelayStore(pg_db, writers=WRITERS, affinity=affinity)
        try:
            keyed = {id(store._queue(b"shop")) for _ in range(2 * WRITERS)}
            turns = {id(store._queue(None)) for _ in range(WRITERS)}
            assert len(turns) == WRITERS  # one of each, in turn
            assert len(keyed) == (1 if affinity else WRITERS)
        finally:
            store.close()


def test_connections_get_tcp_timeouts_unless_the_dsn_sets_them() -> None:
    got = conninfo_to_dict(with_timeouts("host=db dbname=relay keepalives_idle=60"))
    assert got["keepalives_idle"] == "60"  # the operator's
    assert {k: got[k] for k in CONNECTION_DEFAULTS if k != "keepalives_idle"} == {
        k: v for k, v in CONNECTION_DEFAULTS.items() if k != "keepalives_idle"
    }
    assert got["host"] == "db" and got["dbname"] == "relay"
    uri = conninfo_to_dict(with_timeouts("postgresql://u@db:5433/relay?connect_timeout=2"))
    assert uri["connect_timeout"] == "2" and uri["tcp_user_timeout"] == "10000"


def test_a_silent_partition_answers_503_and_heals(pg_db: str, tmp_path: Path) -> None:
    """A proxy between the relay and PostgreSQL stops forwarding (both ends' packets are
    still acknowledged, so no TCP timeout can notice): a submission is answered 503
    ``store_unavailable`` (the store cuts its connection after ``ops.pg_timeout``), not left
    hanging past the client's 30 s; once the proxy forwards again the relay serves again,
    and every acknowledged message is stored."""
    params = conninfo_to_dict(pg_db)
    if str(params.get("host", "")) not in ("127.0.0.1", "localhost"):
        pytest.skip("the test cluster is not on loopback TCP")
    proxy = CutProxy(int(params.get("port") or 5432)).start()
    try:
        params.update(host="127.0.0.1", port=str(proxy.port))
        via = make_conninfo(**params)  # type: ignore[arg-type]
        env = {"E2E_RELAY_OPS_PG_TIMEOUT": "1.5", "E2E_RELAY_OPS_PG_WRITERS": "2"}
        with relay_with(via, tmp_path / "relay.log", env) as relay, httpx.Client(
            base_url=relay.url, timeout=30
        ) as c:
            biz = new_device(c, b"shop", BUSINESS)
            cust = new_device(c, b"cust", CUSTOMER)

            def submit() -> wire.Receipt:
                return cust.submit(cust.envelopes(b"shop", [biz.addr], MessageClass.SERVICE))

            acked = [submit().message_id for _ in range(3)]
            proxy.held = True
            try:
                refused = []
                for _ in range(2):  # the first finds the writer's connection, the next a new one
                    with pytest.raises(Refused) as info:
                        submit()
                    assert (info.value.status, info.value.code) == (503, "store_unavailable")
                    refused.append(info.value)
            finally:
                proxy.held = False
            deadline = time.monotonic() + 20
            while True:
                try:
                    acked.append(submit().message_id)
                    break
                except Refused as exc:
                    assert exc.status == 503 and time.monotonic() < deadline, exc
                    time.sleep(0.2)
            acked += [submit().message_id for _ in range(3)]
        stored = _stored(pg_db, b"shop")
        assert set(acked) <= set(stored)
        # At most the refused ones besides (a 503 promises nothing applied only if the
        # connection was lost before the commit; here it was lost before the request).
        assert len(stored) == len(set(stored)) and len(stored) <= len(acked) + len(refused)
    finally:
        proxy.stop()
