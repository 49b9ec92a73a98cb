"""Operations: the relay's logs never hold a key, a frame body or a text; the tap is off by
default and records traffic when on; metrics count accepted, refused and queued."""

from __future__ import annotations

import base64
import json
import sqlite3
import struct
from pathlib import Path

import httpx
import pytest
from relayhelp import Refused, RelayProcess, new_device, relay_metrics

from e2e.platform import wire
from e2e.platform.envelope import Delivery, Envelope
from e2e.platform.policy import MessageClass

CUSTOMER, BUSINESS = 0, 1


def _forms(secret: bytes) -> list[bytes]:
    """The ways a secret could show up in a text log."""
    return [
        secret,
        secret.hex().encode(),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
        repr(secret).encode(),
    ]


def _tap_records(path: Path) -> list[tuple[str, bytes]]:
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">H", data, pos)
        name = data[pos + 2 : pos + 2 + n].decode()
        pos += 2 + n
        (m,) = struct.unpack_from(">I", data, pos)
        out.append((name, data[pos + 4 : pos + 4 + m]))
        pos += 4 + m
    return out


@pytest.mark.parametrize("relay_db", ["sqlite"], indirect=True)
def test_logs_hold_no_secret_and_tap_is_optional(relay_db: str, tmp_path: Path) -> None:
    log = tmp_path / "relay.log"
    tap = tmp_path / "tap.bin"
    proc = RelayProcess(relay_db, log_path=log, extra=["--log-level", "debug", "--tap", str(tap)])
    proc.start()
    texts = [b"my card number is 4111 1111", b"secret meeting at noon"]
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as c:
            cust = new_device(c, b"alice", CUSTOMER)
            biz = new_device(c, b"shop", BUSINESS, tier=1)
            cust.submit(cust.envelopes(b"shop", [biz.addr], MessageClass.SERVICE, body=texts[0]))
            r = biz.submit(biz.envelopes(b"alice", [cust.addr], MessageClass.TEMPLATE,
                                         body=texts[1]))  # fmt: skip
            with pytest.raises(Refused):
                biz.submit(biz.envelopes(b"alice", [cust.addr], MessageClass.MARKETING))
            box = cust.fetch().deliveries
            fk, text = biz.sent[r.message_id]
            cust.report(b"shop", [(box[0], fk, text)])
            metrics = relay_metrics(proc.url)
            bad = {"authorization": "garbage", "x-request-id": "mine"}
            refused = c.post(wire.Path.MESSAGE_SUBMIT, content=b"\xa0", headers=bad)
            blob = c.get(wire.BLOB_PATH + "ab" * 16)  # the blob data plane: no signature
            wrong = {"authorization": "Bearer wrong"}
            asked = {c.get(wire.Path.METRICS).status_code,
                     c.get(wire.Path.METRICS, headers=wrong).status_code}  # fmt: skip
    finally:
        proc.stop()
    assert asked == {401}  # metrics only with the operator's token
    assert "# HELP e2e_relay_request_seconds " in metrics
    assert "# TYPE e2e_relay_request_seconds histogram" in metrics
    assert 'e2e_relay_request_seconds_bucket{endpoint="submit",le="+Inf"} 3' in metrics
    for line in metrics.splitlines():  # every metric has its HELP and TYPE
        if not line.startswith("#"):
            name = line.split("{")[0].split()[0]
            base = name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
            assert f"# HELP {base} " in metrics and f"# TYPE {base} " in metrics
    # Logs: one JSON object a line, each refused request with the id it was answered with
    # (the relay's own, never the client's), and no account, header value or address.
    records = [json.loads(line) for line in log.read_text().splitlines()]
    rid = refused.headers["x-request-id"]
    assert len(rid) == 16 and rid != "mine"
    mine = [r for r in records if r.get("request_id") == rid]
    assert len(mine) == 1 and mine[0]["status"] == 401 and mine[0]["code"] == "unauthenticated"
    assert mine[0]["path"] == "/v1/messages/submit" and mine[0]["level"] == "info"
    assert blob.status_code == 401
    (blob_record,) = [r for r in records if r.get("request_id") == blob.headers["x-request-id"]]
    assert blob_record["path"] == "/v1/blobs/(blob)" and blob_record["status"] == 401
    assert "ab" * 16 not in log.read_text()  # nor a blob id
    requests = [r for r in records if "request_id" in r]
    assert len({r["request_id"] for r in requests}) == len(requests) > 5
    assert 'e2e_relay_refused_total{code="not_opted_in"} 1' in metrics
    assert "e2e_relay_messages_accepted_total 2" in metrics
    assert "e2e_relay_queue_depth 2" in metrics
    secrets = [text for text in texts]
    secrets += [fk for fk, _ in cust.sent.values()] + [fk for fk, _ in biz.sent.values()]
    for dev in (cust, biz):
        secrets += [dev.identity.private_bytes(), dev.acct.identity.private_bytes()]
    with sqlite3.connect(relay_db) as db:
        secrets += [bytes(s) for (s,) in db.execute("SELECT secret FROM franking_keys")]
    frames = [Envelope.from_bytes(Delivery.from_bytes(d).envelope).frame for d in box]
    logged = log.read_bytes()
    for word in (b"alice", b"shop", b"garbage", b"operator-metrics-token"):
        assert word not in logged
    served = [r for r in records if "127.0.0.1" in r["message"]]  # the server's own address
    assert all(r["message"].startswith("Uvicorn running on") for r in served)
    assert b'"code":"not_opted_in"' in logged and b"/v1/messages/submit" in logged  # it logs
    for secret in secrets + frames:
        for form in _forms(secret):
            assert form not in logged
    # The tap saw the traffic (the relay's own view: envelopes and the revealed report).
    records = _tap_records(tap)
    channels = {name for name, _ in records}
    assert "recv:/v1/messages/submit" in channels and "send:/v1/mailbox/fetch" in channels
    assert any(frames[0] in data for _, data in records)


@pytest.mark.parametrize("relay_db", ["sqlite"], indirect=True)
def test_tap_is_off_by_default(relay_db: str, tmp_path: Path) -> None:
    proc = RelayProcess(relay_db).start()
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as c:
            new_device(c, b"bob", CUSTOMER)
    finally:
        proc.stop()
    # No tap file, nothing but the database; and the app's tap is None unless given one.
    assert all(p.name.startswith("relay.db") for p in tmp_path.iterdir())
    from e2e.relay import RelayApp, RelayService
    from e2e.relay.sqlite import SqliteRelayStore

    app = RelayApp(RelayService(SqliteRelayStore(str(tmp_path / "other.db"))))
    assert app.tap is None
    app.close()
