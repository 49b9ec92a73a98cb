"""Record vectors/libsignal_spqr.json: SPQR as the official libsignal client runs it.

Run from the repository root after ``cd tests/interop && npm ci``:
    python vectors/record_libsignal_spqr.py > vectors/libsignal_spqr.json

Two libsignal parties (alice, bob) of each pinned version that speaks SPQR (0.92.2 and
0.103.0) hold a scripted conversation, with bursts (so every stream sends parity chunks) and
drops (so a stream is decoded from parity). Every SignalMessage's ``pq_ratchet`` field is
recorded with its fields as this script's own reader (independent of e2e) reads them, and
every chunk stream (the header, the key vector, ct1 and ct2 of each epoch) with all the
chunks libsignal sent of it. For each epoch whose exchange completed, a split-encapsulation
case: the header, key vector, ct1 and ct2 libsignal's two parties exchanged, the ``m`` the
encapsulating party drew (read from its session record) and its SPQR chain's next root
before and after the epoch's secret was added. e2e's verifier
(e2e/vectors/libsignal_spqr_vectors.py) checks its codec, erasure code and split ML-KEM-768
encapsulation against them.

Reading ``m`` and the chain root relies on the layout of libsignal's serialized session
record (libsignal's storage, not a wire format): the SPQR state is SessionStructure field
15, its chain field 2 with the next root in field 4, and the encapsulating party's state
holds a 2080-byte encapsulation state whose last 32 bytes are ``m``. A layout change makes
the split-encapsulation check fail, never pass wrongly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from interop.harness import Harness  # noqa: E402
from interop.record import fields, varint  # noqa: E402

PACKAGES = ("libsignal-092", "libsignal-103")
#: Stream name and whole-message size (bytes) by SPQR message type.
STREAMS = {1: ("hdr", 96), 2: ("ek", 1152), 3: ("ek", 1152), 5: ("ct1", 960), 6: ("ct2", 160)}
# (sender, messages, indexes delivered in this order; the others are dropped). The comments
# say where the SPQR exchange of epoch 1 stands (alice is its send_ek side).
SCRIPT = [
    ("alice", 8, list(range(8))),  # header chunks 0-7 (parity from 3)
    ("bob", 1, [0]),  # bob encapsulates: ct1 chunk 0
    ("alice", 45, list(range(45))),  # key vector chunks 0-44 (parity from 36)
    ("bob", 34, list(range(34))),  # ct1 chunks 1-34 (parity from 30)
    ("alice", 1, [0]),  # ek + ct1 acknowledged: bob sends ct2
    ("bob", 8, [3, 4, 5, 6, 7]),  # ct2 chunks 0-7, only 3-7 delivered: decoded from parity
    ("alice", 2, [1, 0]),  # epoch 2: bob sends the next header
] + [("bob", 6, [0, 1, 2, 4, 5]), ("alice", 6, [5, 4, 3, 2, 1, 0])] * 12  # epoch 2: bob sends


def read_pq(field: bytes) -> dict[str, Any]:
    """This script's own reading of a version-1 pq_ratchet field."""
    assert field[0] == 1, field[:1]
    epoch, pos = varint(field, 1)
    index, pos = varint(field, pos)
    kind = field[pos]
    pos += 1
    out: dict[str, Any] = {"epoch": epoch, "index": index, "type": kind}
    if kind in STREAMS:
        out["chunk_index"], pos = varint(field, pos)
        out["chunk"] = field[pos : pos + 32].hex()
    return out


def signal_message(kind: int, body: bytes) -> bytes:
    """The SignalMessage of a message (the one inside a PreKeySignalMessage)."""
    if kind == 3:
        body = bytes(fields(body[1:])[4][0])  # type: ignore[arg-type]
    return body


def pq_state(record: bytes) -> dict[int, list[int | bytes]]:
    """The SPQR state (SessionStructure field 15) of a serialized SessionRecord."""
    session = fields(bytes(fields(record)[1][0]))  # type: ignore[arg-type]
    return fields(bytes(session[15][0]))  # type: ignore[arg-type]


def next_root(record: bytes) -> bytes:
    chain = fields(bytes(pq_state(record)[2][0]))  # type: ignore[arg-type]
    return bytes(chain[4][0])  # type: ignore[arg-type]


def encaps_m(record: bytes) -> bytes:
    """The last 32 bytes of the 2080-byte encapsulation state in the SPQR state machine."""
    found: list[bytes] = []

    def walk(data: bytes, depth: int) -> None:
        try:
            f = fields(data)
        except (IndexError, ValueError):
            return
        for values in f.values():
            for v in values:
                if isinstance(v, bytes):
                    if len(v) == 2080:
                        found.append(v)
                    elif depth < 4 and len(v) > 2080:
                        walk(v, depth + 1)

    walk(bytes(pq_state(record)[3][0]), 0)  # type: ignore[arg-type]
    assert len(found) == 1, len(found)
    return found[0][-32:]


def conversation(package: str) -> tuple[str, list[dict[str, Any]]]:
    h = Harness(package)
    try:
        version = h.call("version")["version"]
        for name, reg in (("alice", 1), ("bob", 2)):
            h.call("init", party=name, registration_id=reg)
        bundle = h.call("bundle", party="bob", prekey_id=1, signed_prekey_id=2, kyber_prekey_id=3)
        bundle.pop("ok", None)
        h.call("process_bundle", party="alice", peer="bob", bundle=bundle)
        sent: list[dict[str, Any]] = []
        n = 0
        for sender, count, order in SCRIPT:
            other = "bob" if sender == "alice" else "alice"
            texts = [b"message %d" % (n + i) for i in range(count)]
            n += count
            before = h.record(sender, other)
            out = h.call(
                "encrypt",
                party=sender,
                peer=other,
                records=True,
                plaintexts=[t.hex() for t in texts],
            )["messages"]
            msgs = [(m["type"], bytes.fromhex(m["body"])) for m in out]
            for (kind, body), o in zip(msgs, out, strict=True):
                after = bytes.fromhex(o["record"])
                pq = bytes(fields(signal_message(kind, body)[1:-8])[5][0])  # type: ignore[arg-type]
                item = {"from": sender, "field": pq.hex(), **read_pq(pq)}
                if item["type"] == 5 and item["chunk_index"] == 0:  # this send encapsulated
                    assert before is not None
                    item["m"] = encaps_m(after).hex()
                    item["roots"] = [next_root(before).hex(), next_root(after).hex()]
                sent.append(item)
                before = after
            got = h.decrypt(other, sender, *[msgs[i] for i in order])
            assert got == [texts[i] for i in order], got
    finally:
        h.close()
    return version, sent


def systematic(chunks: dict[int, str], size: int) -> bytes | None:
    """The message of a stream from its systematic chunks, if libsignal sent them all."""
    n = size // 32
    if not all(i in chunks for i in range(n)):
        return None
    return b"".join(bytes.fromhex(chunks[i]) for i in range(n))


def split_cases(
    label: str,
    version: str,
    sent: list[dict[str, Any]],
    streams: dict[tuple[str, int, str], dict[int, str]],
) -> list[dict[str, Any]]:
    out = []
    for m in sent:
        if "m" not in m:
            continue
        epoch, ct_side = m["epoch"], m["from"]
        ek_side = "alice" if ct_side == "bob" else "bob"
        parts = {
            name: systematic(streams.get((side, epoch, name), {}), size)
            for name, side, size in (
                ("hdr", ek_side, 96),
                ("ek", ek_side, 1152),
                ("ct1", ct_side, 960),
                ("ct2", ct_side, 160),
            )
        }
        if any(v is None for v in parts.values()):
            continue  # the exchange did not complete within the script
        hdr, ek, ct1, ct2 = (parts[k] for k in ("hdr", "ek", "ct1", "ct2"))
        assert hdr is not None and ek is not None and ct1 is not None and ct2 is not None
        out.append(
            {
                "name": f"{label} epoch {epoch} split encapsulation",
                "kind": "split_encaps",
                "libsignal_client": version,
                "epoch": epoch,
                "header": hdr[:64].hex(),
                "ek_vector": ek.hex(),
                "m": m["m"],
                "ct1": ct1.hex(),
                "ct2": ct2[:128].hex(),
                "next_root_before": m["roots"][0],
                "next_root_after": m["roots"][1],
            }
        )
    return out


def cases() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for package in PACKAGES:
        version, sent = conversation(package)
        label = f"libsignal {version}"
        out.append(
            {
                "name": f"{label} pq_ratchet fields",
                "kind": "messages",
                "libsignal_client": version,
                "messages": [
                    {k: v for k, v in m.items() if k not in ("from", "chunk", "m", "roots")}
                    for m in sent
                ],
            }
        )
        streams: dict[tuple[str, int, str], dict[int, str]] = {}
        for m in sent:
            if m["type"] in STREAMS:
                name = STREAMS[m["type"]][0]
                streams.setdefault((m["from"], m["epoch"], name), {})[m["chunk_index"]] = m["chunk"]
        out += split_cases(label, version, sent, streams)
        for (sender, epoch, name), chunks in streams.items():
            size = {"hdr": 96, "ek": 1152, "ct1": 960, "ct2": 160}[name]
            if len(chunks) < size // 32:
                continue  # cut short by the end of the script: nothing to decode
            out.append(
                {
                    "name": f"{label} {sender} epoch {epoch} {name} chunks",
                    "kind": "erasure",
                    "libsignal_client": version,
                    "size": size,
                    "chunks": [[i, chunks[i]] for i in sorted(chunks)],
                }
            )
    return out


def main() -> None:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    doc = {
        "concept": "libsignal_spqr",
        "source": (
            "@signalapp/libsignal-client 0.92.2 and 0.103.0 (Signal's official client "
            f"library, Rust core through its Node binding) under node {node}, driven by "
            "tests/interop/harness.js from vectors/record_libsignal_spqr.py: two libsignal "
            "parties in a scripted conversation with bursts and drops. 'messages': every "
            "pq_ratchet field libsignal wrote, with its fields as the recorder's own reader "
            "reads them. 'erasure': every chunk libsignal sent of one stream (index, 32 "
            "bytes), for each stream of which libsignal sent at least its message's chunk "
            "count. 'split_encaps': one epoch's ML-KEM-768 exchange between the two "
            "libsignal parties (header, key vector, ct1, ct2 from the wire; the "
            "encapsulating party's m and its SPQR chain root before and after the epoch "
            "from its session record)."
        ),
        "cases": cases(),
    }
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
