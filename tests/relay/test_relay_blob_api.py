"""The blob store's wire API (SPEC.md §10.7, §10.12) attacked over HTTP, against ``python -m e2e
relay serve`` started with small caps: every refusal typed and answered before a byte is kept
(413 over the cap, 507 over the quota, 409 at a wrong offset, 401 for an unsigned, replayed or
re-described upload, 404 for no listing, an unknown blob or another account's upload, 416 for
a range past the end), and a range request that answers exactly the bytes asked."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from relayhelp import Dev, RelayProcess, new_device

from e2e.platform import wire
from e2e.relay.store import BUSINESS, CUSTOMER

CAP, QUOTA = 3 << 20, 5 << 20


@pytest.fixture
def small_relay(relay_db: str, tmp_path: Path) -> Iterator[RelayProcess]:
    proc = RelayProcess(
        relay_db,
        log_path=tmp_path / "relay.log",
        extra=["--blob-max-bytes", str(CAP), "--blob-quota-bytes", str(QUOTA)],
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _auth(dev: Dev, method: str, path: str, signed: bytes) -> str:
    return wire.sign_request(
        dev.identity, dev.acct.name, dev.device_id, method, path, signed, int(time.time())
    )


def _patch(
    dev: Dev,
    blob_id: bytes,
    offset: int,
    data: bytes,
    length: int = 0,
    auth: str | None = None,
    signed: bytes | None = None,
) -> httpx.Response:
    path = wire.blob_path(blob_id)
    descriptor = wire.patch_descriptor(blob_id, offset, len(data), length)
    headers = {
        "upload-offset": str(offset),
        "content-type": wire.OFFSET_CONTENT_TYPE,
        "authorization": auth or _auth(dev, "PATCH", path, signed or descriptor),
    }
    if length:
        headers["upload-length"] = str(length)
    return dev.http.patch(path, content=data, headers=headers)


def _get(dev: Dev, blob_id: bytes, rng: str | None = None) -> httpx.Response:
    path = wire.blob_path(blob_id)
    headers = {"authorization": _auth(dev, "GET", path, b"")}
    if rng:
        headers["range"] = rng
    return dev.http.get(path, headers=headers)


def _code(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, wire.WireError.from_bytes(r.content).code


def _create(dev: Dev, length: int = 0) -> bytes:
    got: wire.BlobCreated = dev.call(
        wire.Path.BLOB_CREATE, wire.CreateBlob(length), wire.BlobCreated
    )
    assert got.max_bytes == CAP
    return got.blob_id


def _status(dev: Dev, blob_id: bytes) -> wire.BlobState:
    return dev.call(wire.Path.BLOB_STATUS, wire.BlobStatusQuery(blob_id), wire.BlobState)  # type: ignore[no-any-return]


def test_blob_api_refusals(small_relay: RelayProcess) -> None:
    with httpx.Client(base_url=small_relay.url, timeout=30) as http:
        alice = new_device(http, b"alice", CUSTOMER)
        shop = new_device(http, b"shop", BUSINESS, tier=1)
        # caps: a declared length over the cap, then the quota
        r = alice.raw(wire.Path.BLOB_CREATE, wire.CreateBlob(CAP + 1).to_bytes())
        assert _code(r) == (413, "blob_too_large")
        big = _create(alice, CAP)
        r = alice.raw(wire.Path.BLOB_CREATE, wire.CreateBlob(3 << 20).to_bytes())
        assert _code(r) == (507, "quota_exceeded")
        small = _create(alice, 1000)
        # writes: in order, within the length, signed for exactly these headers
        assert _code(_patch(alice, small, 10, b"x" * 10)) == (409, "offset_conflict")
        assert _code(_patch(alice, small, 0, b"x" * 1001)) == (413, "blob_too_large")
        assert _status(alice, small).offset == 0  # the refused request kept nothing
        unsigned = http.patch(wire.blob_path(small), content=b"x", headers={"upload-offset": "0"})
        assert _code(unsigned) == (401, "unauthenticated")
        lie = _patch(
            alice, small, 0, b"y" * 600, signed=wire.patch_descriptor(small, 0, 500)
        )  # signed for 500 bytes
        assert _code(lie) == (401, "unauthenticated")
        r = _patch(alice, small, 0, b"z" * 600)
        assert r.status_code == 200 and wire.BlobState.from_bytes(r.content).offset == 600
        replay = _patch(alice, small, 600, b"w" * 10, auth=r.request.headers["authorization"])
        assert _code(replay) == (401, "unauthenticated")
        assert _code(_patch(shop, small, 600, b"w" * 400)) == (404, "no_such_blob")  # not its
        with pytest.raises(Exception, match="404"):
            _status(shop, small)
        r = _patch(alice, small, 600, b"w" * 400)
        state = wire.BlobState.from_bytes(r.content)
        assert (state.offset, state.complete, state.length) == (1000, True, 1000)
        assert _code(_patch(alice, small, 1000, b"!")) == (409, "offset_conflict")  # complete
        # reading: the owner, whole or a range; nobody else; no listing
        whole = _get(alice, small)
        assert whole.status_code == 200 and whole.content == b"z" * 600 + b"w" * 400
        part = _get(alice, small, "bytes=590-609")
        assert part.status_code == 206 and part.content == b"z" * 10 + b"w" * 10
        assert part.headers["content-range"] == "bytes 590-609/1000"
        tail = _get(alice, small, "bytes=995-")
        assert tail.status_code == 206 and tail.content == b"w" * 5
        assert _get(alice, small, "bytes=1000-").status_code == 416
        assert _get(alice, small, "bytes=0-1,5-6").status_code == 416
        assert _code(_get(shop, small)) == (404, "no_such_blob")
        assert _code(_get(alice, big)) == (404, "no_such_blob")  # incomplete
        assert _code(_get(alice, os.urandom(16))) == (404, "no_such_blob")
        for path in ("/v1/blobs/", "/v1/blobs", "/v1/blobs/" + "0" * 31, "/v1/blobs/../x"):
            assert http.get(path).status_code == 404
        assert http.request("DELETE", wire.blob_path(small)).status_code == 404


def test_a_deferred_length_upload_over_http(small_relay: RelayProcess) -> None:
    with httpx.Client(base_url=small_relay.url, timeout=30) as http:
        bob = new_device(http, b"bob", CUSTOMER)
        blob_id = _create(bob)
        assert _patch(bob, blob_id, 0, b"a" * 5000).status_code == 200
        assert _status(bob, blob_id).complete is False
        r = _patch(bob, blob_id, 5000, b"b" * 1000, length=6000)
        assert wire.BlobState.from_bytes(r.content).complete
        over = _create(bob)
        assert _patch(bob, over, 0, os.urandom(CAP)).status_code == 200
        assert _code(_patch(bob, over, CAP, b"!")) == (413, "blob_too_large")
        assert _code(_patch(bob, _create(bob), 0, os.urandom(2 << 20))) == (507, "quota_exceeded")
