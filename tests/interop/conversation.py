"""A long conversation between e2e and the official client, checked message by message.

:func:`converse` drives one (with a schedule of ping-pong, long one-sided bursts, or random
batches with drops and reordering) and, after every delivered message, compares the
receiver's chain state with the sender's: libsignal's session record (read by
tests/interop/record.py, independently of e2e) against e2e's state, for the Double Ratchet
(chain keys by ratchet key and index, root keys by ratchet step) and for SPQR (chain keys by
epoch and index, skipped keys, the next root of each epoch).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from e2e.errors import E2EError
from e2e.libsignal import MAX_JUMP, SessionRecord
from e2e.libsignal.spqr.chain import Chain, step
from e2e.libsignal.spqr.message import Message, parse
from e2e.libsignal.wire import parse_prekey_message, parse_signal_message
from interop.harness import Harness
from interop.record import PqChain, current_state, pq_chain, root_step

PATTERNS = ("pingpong", "bursts", "lossy")


def parse_any(body: bytes):  # noqa: ANN201
    try:
        return parse_signal_message(body)
    except E2EError:
        return parse_prekey_message(body).message


@dataclass
class Log:
    """What each side's sending chains held, to be found again in the receiver's state."""

    ours: dict[tuple[bytes, int], bytes] = field(default_factory=dict)  # DR (key, index)
    theirs: dict[tuple[bytes, int], bytes] = field(default_factory=dict)
    our_roots: dict[bytes, bytes] = field(default_factory=dict)  # ratchet key -> root
    their_roots: dict[bytes, bytes] = field(default_factory=dict)
    our_pq: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (epoch, n) -> CK
    their_pq: dict[tuple[int, int], bytes] = field(default_factory=dict)
    pq_roots: dict[tuple[str, int], bytes] = field(default_factory=dict)  # (side, epoch)
    delivered: int = 0
    root_checks: int = 0
    pq_checks: int = 0
    skipped_checks: int = 0


def _log_our_chain(rec: SessionRecord, log: Log) -> None:
    st = rec.current
    assert st is not None
    log.ours[(st.sender_key.public, st.sender_index)] = st.sender_chain_key
    chain = None if st.spqr is None else st.spqr.chain
    if chain is not None:
        for n, ep in enumerate(chain.epochs):
            if ep.send.key is not None:
                log.our_pq[(chain.oldest + n, ep.send.counter)] = ep.send.key
        log.pq_roots[("e2e", chain.current)] = chain.next_root


def _log_their_chain(theirs: PqChain | None, log: Log) -> None:
    if theirs is None:
        return
    for epoch, (send, _) in theirs.epochs.items():
        if send.key is not None:
            log.their_pq[(epoch, send.counter)] = send.key
    log.pq_roots[("libsignal", theirs.current)] = theirs.next_root


def _check_their_pq(theirs: PqChain | None, epoch: int, log: Log) -> None:
    """libsignal's receiving chain of ``epoch`` equals e2e's sending chain at its index, and
    every key libsignal kept for a skipped index is the key e2e derived for it."""
    assert theirs is not None
    _, recv = theirs.epochs[epoch]
    assert log.our_pq[(epoch, recv.counter)] == recv.key
    log.pq_checks += 1
    for index, key in recv.skipped.items():
        prev = log.our_pq.get((epoch, index - 1))
        if prev is not None:
            assert step(prev, index)[1] == key
            log.skipped_checks += 1


def _check_dr(receivers: Any, sent: dict[tuple[bytes, int], bytes]) -> None:
    """Every receiving chain the sender's log knows at its index holds the sender's chain
    key there, and the message's chain is among them."""
    for c in receivers:
        if (c.ratchet_key, c.index) in sent:
            assert sent[(c.ratchet_key, c.index)] == c.chain_key
    assert any((c.ratchet_key, c.index) in sent for c in receivers)


def _keyed(field: bytes) -> Message | None:
    pq = parse(field)
    return pq if isinstance(pq, Message) and pq.index else None


def _check_our_pq(chain: Chain | None, epoch: int, log: Log) -> None:
    assert chain is not None
    recv = chain.epochs[epoch - chain.oldest].recv
    assert log.their_pq[(epoch, recv.counter)] == recv.key
    log.pq_checks += 1


def deliver(rnd: random.Random, batch: list[Any], drop: float, shuffle: bool) -> list[Any]:
    """Drop a share of the messages but the first (so the receiver learns a new ratchet key
    in order; runs of drops stay below MAX_JUMP) and, with ``shuffle``, reorder the rest."""
    head, rest = batch[:1], [m for m in batch[1:] if rnd.random() >= drop]
    if shuffle:
        rnd.shuffle(rest)
    return head + rest


def _schedule(pattern: str, rnd: random.Random) -> tuple[int, float, bool]:
    """(messages in this turn, share dropped, shuffled) for one turn of ``pattern``."""
    if pattern == "pingpong":
        return 1, 0.0, False
    if pattern == "bursts":
        return rnd.randint(60, 150), 0.03, False
    return rnd.randint(1, 40), 0.1, True


def converse(
    h: Harness, me: Any, other: str, initiator: str, pattern: str, each: int, seed: str
) -> Log:
    """At least ``each`` messages each way between e2e (``me``, a test Peer) and libsignal
    party ``other`` after a session was started by ``initiator``."""
    rnd = random.Random(seed)
    log = Log()
    sent = {"e2e": 0, "libsignal": 0}
    turn = initiator
    spqr = h.package != "libsignal-072"
    while min(sent.values()) < each:
        n, drop, shuffle = _schedule(pattern, rnd)
        if turn == "e2e":
            rec = me.records[other]
            _log_our_chain(rec, log)
            batch = []
            for _ in range(n):
                batch.append(me.encrypt(other, b"e2e %d" % sent["e2e"]))
                sent["e2e"] += 1
                _log_our_chain(rec, log)
            assert rec.current is not None
            log.our_roots[rec.current.sender_key.public] = rec.current.root_key
            delivered = deliver(rnd, batch, drop, shuffle)
            log.delivered += len(delivered)
            replies = h.call(
                "decrypt",
                party=other,
                peer="e2e",
                records=True,
                messages=[{"type": t, "body": b.hex()} for t, b in delivered],
            )["results"]
            before = h.record(other, "e2e")
            for (_, body), r in zip(delivered, replies, strict=True):
                assert "plaintext" in r, r
                record = bytes.fromhex(r["record"])
                st = current_state(record)
                msg = parse_any(body)
                key = msg.ratchet_key
                if before is not None and all(
                    c.ratchet_key != key for c in current_state(before).receivers
                ):
                    prev = current_state(before)
                    assert prev.sender is not None
                    got = root_step(prev.root_key, prev.sender.private_key, key)
                    assert got == log.our_roots[key]
                    log.root_checks += 1
                before = record
                _check_dr(st.receivers, log.ours)
                pq = _keyed(msg.pq_ratchet) if spqr else None
                if pq is not None:
                    _check_their_pq(pq_chain(record), pq.epoch - 1, log)
            turn = "libsignal"
        else:
            out = h.call(
                "encrypt",
                party=other,
                peer="e2e",
                records=True,
                plaintexts=[(b"ls %d" % (sent["libsignal"] + i)).hex() for i in range(n)],
            )["messages"]
            sent["libsignal"] += n
            batch = []
            for m in out:
                record = bytes.fromhex(m["record"])
                st = current_state(record)
                assert st.sender is not None
                log.theirs[(st.sender.ratchet_key, st.sender.index)] = st.sender.chain_key
                log.their_roots[st.sender.ratchet_key] = st.root_key
                _log_their_chain(pq_chain(record), log)
                batch.append((m["type"], bytes.fromhex(m["body"])))
            delivered = deliver(rnd, batch, drop, shuffle)
            log.delivered += len(delivered)
            for t, body in delivered:
                prev_state = me.records[other].current if other in me.records else None
                msg = parse_any(body)
                key = msg.ratchet_key
                if prev_state is not None and prev_state._receiver(key) is None:
                    expected = root_step(
                        prev_state.root_key, prev_state.sender_key.private_bytes(), key
                    )
                    assert expected == log.their_roots[key]
                    log.root_checks += 1
                assert me.decrypt(other, (t, body)).startswith(b"ls ")
                cur = me.records[other].current
                assert cur is not None
                _check_dr(cur.receivers, log.theirs)
                pq = _keyed(msg.pq_ratchet) if spqr else None
                if pq is not None:
                    assert cur.spqr is not None
                    _check_our_pq(cur.spqr.chain, pq.epoch - 1, log)
            turn = "e2e"
    for (side, epoch), root in log.pq_roots.items():
        other_side = "libsignal" if side == "e2e" else "e2e"
        if (other_side, epoch) in log.pq_roots:
            assert log.pq_roots[(other_side, epoch)] == root
    assert MAX_JUMP > 40  # the lossy schedule's batches stay within the jump bound
    return log
