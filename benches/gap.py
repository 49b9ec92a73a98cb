"""Where e2e's one-way message time goes, next to vodozemac's, measured in one process.

    python benches/peers.py --gap [--seconds S]     (runs this in the peers' beside venv)

Every item below is timed in the same rounds, round-robin (the order rotates and reverses from
round to round, batches of about 0.5 ms on the thread's CPU clock, as benches/interleave.py
times a loop): e2e's one-way (PQ suite, 256 B: Session.encrypt then Session.decrypt), its floor
(benches/floor.py), vodozemac's one-way, each primitive call the floor makes, and the Python
steps of e2e that the floor leaves out. The report multiplies each item by the number of times a
one-way message makes it, so the column sums can be compared with the measured totals.
"""

from __future__ import annotations

import hmac as _hmac
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from benches import interleave

Call = Callable[[], object]


def _items() -> list[tuple[str, str, int, Call]]:
    """(group, name, times per one-way message, call)."""
    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from vodozemac import Account, AnyOlmMessage

    from benches import floor
    from benches.workloads import established
    from benches.workloads import oneway as e2e_oneway_factory
    from e2e.frame import blank_header, decode_message, message_parts
    from e2e.header import encode_header
    from e2e.ratchet import sealed_body_len
    from e2e.suite import PQ

    pt = os.urandom(256)
    alice, bob = established(PQ.id)
    _, e2e_oneway = e2e_oneway_factory(PQ.id, 256)
    _, floor_oneway = floor.oneway(PQ.id, 256)
    frame = alice.encrypt(pt)
    parsed = decode_message(frame)
    body_len = sealed_body_len(PQ, 256)

    a, b = Account(), Account()
    b.generate_one_time_keys(1)
    otk = next(iter(b.one_time_keys.values()))
    va = a.create_outbound_session(b.curve25519_key, otk)

    def wire(message: Any) -> Any:
        kind, data = message.to_parts()
        return AnyOlmMessage.from_parts(kind, data)

    vb, _ = b.create_inbound_session(a.curve25519_key, wire(va.encrypt(b"hi")).to_pre_key())
    va.decrypt(wire(vb.encrypt(b"hello")))

    key, ck, hk = os.urandom(32), os.urandom(32), os.urandom(32)
    ad = os.urandom(66)
    body_ad = ad + os.urandom(len(parsed.ad_prefix))
    nonce = os.urandom(12)
    gcm = AESGCM(key)
    sealed_body = gcm.encrypt(nonce, pt, body_ad)
    header_gcm = AESGCM(hk)
    header72 = os.urandom(72)
    sealed72 = header_gcm.encrypt(nonce, header72, ad)
    keyed = hmac.HMAC(hk, hashes.SHA256())
    labelled = hashes.Hash(hashes.SHAKE256(96))
    labelled.update(PQ.chain_info)
    commit = os.urandom(32)
    commit2 = bytes(commit)

    def kdf_ck() -> bytes:
        h = labelled.copy()
        h.update(ck)
        return h.finalize()

    def header_commitment() -> bytes:
        h = keyed.copy()
        h.update(nonce)
        return h.finalize()

    dh_pub = alice.ratchet.dhs.public
    return [
        ("total", "e2e one-way (Session.encrypt + Session.decrypt)", 1, e2e_oneway),
        ("total", "floor one-way (primitive calls only)", 1, floor_oneway),
        ("total", "vodozemac one-way (encrypt + wire + decrypt)", 1,
         lambda: vb.decrypt(wire(va.encrypt(pt)))),
        ("primitive", "KDF_CK: SHAKE256, 96 B (labelled copy)", 2, kdf_ck),
        ("primitive", "AESGCM(EK) object per message key", 2, lambda: AESGCM(key)),
        ("primitive", "AES-256-GCM seal, 256 B body", 1,
         lambda: gcm.encrypt(nonce, pt, body_ad)),
        ("primitive", "AES-256-GCM open, 256 B body", 1,
         lambda: gcm.decrypt(nonce, sealed_body, body_ad)),
        ("primitive", "header commitment: HMAC-SHA256 copy", 2, header_commitment),
        ("primitive", "AES-256-GCM seal, 72 B header (cached key)", 1,
         lambda: header_gcm.encrypt(nonce, header72, ad)),
        ("primitive", "AES-256-GCM open, 72 B header (cached key)", 1,
         lambda: header_gcm.decrypt(nonce, sealed72, ad)),
        ("primitive", "os.urandom(12) frame nonce", 1, lambda: os.urandom(12)),
        ("primitive", "compare_digest, 32 B commitment", 2,
         lambda: _hmac.compare_digest(commit, commit2)),
        ("python", "decode_message (frame parse)", 1, lambda: decode_message(frame)),
        ("python", "encode_header (DH, PN, N, MC)", 1,
         lambda: encode_header(dh_pub, 3, 7, commit)),
        ("python", "message_parts (frame head)", 1, lambda: message_parts(PQ, None, body_len)),
        ("python", "blank_header (receiver's body AD)", 1,
         lambda: blank_header(parsed.ad_prefix, body_len)),
    ]  # fmt: skip


def run(seconds: float) -> list[dict[str, Any]]:
    items = _items()
    how = interleave.Timing(loop=True, cpu=True)
    sides = [interleave.Side(None, call) for *_, call in items]
    batches = []
    for s in sides:
        per_call = interleave._calibrate(lambda n, h, s=s: interleave._batch(s, n, h), how)
        batches.append(max(1, round(interleave.BATCH_SECONDS / max(per_call, 1e-9))))
    times: list[list[float]] = [[] for _ in items]
    order = list(range(len(items)))
    stop = time.perf_counter() + seconds
    r = 0
    while time.perf_counter() < stop or r < 20:
        k = r % len(order)
        seq = order[k:] + order[:k]
        if r % 2:
            seq.reverse()
        for i in seq:
            times[i].append(interleave._batch(sides[i], batches[i], how))
        r += 1
    out = []
    vodozemac = times[2]  # the same rounds' vodozemac one-way: the per-round ratio's divisor
    for (group, name, count, _), ts in zip(items, times, strict=True):
        q = statistics.quantiles(ts, n=4)
        ratios = [count * t / v for t, v in zip(ts, vodozemac, strict=True)]
        out.append({
            "group": group, "name": name, "count": count, "us": statistics.median(ts) * 1e6,
            "iqr": [q[0] * 1e6, q[2] * 1e6], "rounds": len(ts),
            "per_vodozemac": statistics.median(ratios),
        })  # fmt: skip
    return out


def call_counts(runs: int = 200) -> dict[str, dict[str, float]]:
    """Python-level and C-level function calls per one-way message of e2e and of its floor
    (counted with sys.setprofile: exact, and independent of the machine's load)."""
    import sys
    from collections import Counter

    from benches import floor
    from benches.workloads import oneway
    from e2e.suite import PQ

    out: dict[str, dict[str, float]] = {}
    for name, factory in (("e2e", oneway), ("floor", floor.oneway)):
        _, target = factory(PQ.id, 256)
        target()
        events: Counter[str] = Counter()
        where: Counter[str] = Counter()

        def prof(
            frame: Any,
            event: str,
            arg: Any,
            events: Counter[str] = events,
            where: Counter[str] = where,
        ) -> None:
            events[event] += 1
            if event == "call":
                code = frame.f_code
                where[f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_name}"] += 1
            elif event == "c_call":
                where[f"C {getattr(arg, '__qualname__', arg)}"] += 1

        sys.setprofile(prof)
        for _ in range(runs):
            target()
        sys.setprofile(None)
        out[name] = {
            "python_calls": events["call"] / runs,
            "c_calls": events["c_call"] / runs,
            **{k: v / runs for k, v in where.most_common()},
        }
    return out


def counts_table(counts: dict[str, dict[str, float]]) -> str:
    """Calls per one-way message, e2e beside its floor."""
    e2e, fl = counts["e2e"], counts["floor"]
    names = [k for k in e2e if k not in ("python_calls", "c_calls", "C setprofile")]
    names += [k for k in fl if k not in e2e and k not in ("python_calls", "c_calls")]
    lines = ["| call per one-way message | e2e | floor |", "|---|---:|---:|"]
    lines.append(
        f"| **Python-level function calls** | {e2e['python_calls']:.0f} "
        f"| {fl['python_calls']:.0f} |"
    )
    lines.append(f"| **builtin (C) calls** | {e2e['c_calls']:.0f} | {fl['c_calls']:.0f} |")
    for k in names:
        if k == "C setprofile":
            continue
        lines.append(f"| {k} | {e2e.get(k, 0):.0f} | {fl.get(k, 0):.0f} |")
    return "\n".join(lines)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| item | µs per call [IQR] | calls per message | µs per one-way message "
        "| ÷ vodozemac one-way (per-round median) |",
        "|---|---:|---:|---:|---:|",
    ]
    sums: dict[str, float] = {}
    for row in rows:
        per_msg = row["us"] * row["count"]
        sums[row["group"]] = sums.get(row["group"], 0.0) + per_msg
        iqr = f"[{row['iqr'][0]:.2f}–{row['iqr'][1]:.2f}]"
        lines.append(
            f"| {row['name']} | {row['us']:.2f} {iqr} | {row['count']} | {per_msg:.2f} "
            f"| {row['per_vodozemac']:.2f} |"
        )
    prim, py = sums.get("primitive", 0.0), sums.get("python", 0.0)
    lines.append(f"| **sum of the primitive calls** | | | {prim:.2f} | |")
    lines.append(f"| **sum of the Python steps timed** | | | {py:.2f} | |")
    return "\n".join(lines)
