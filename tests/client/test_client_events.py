"""The event log of a device (SPEC.md §10.11): every event type round-trips through its record,
positions only increase (also after a restore puts the log back), the application's cursor
only moves forward and acknowledged events go, and a damaged record is a StoreError."""

from __future__ import annotations

import pytest

from e2e.client import events
from e2e.client.records import Message, ReceiptStatus
from e2e.errors import StoreError
from e2e.platform.policy import ClassCheck, MessageClass
from e2e.store import Address, MemoryStore

MID = bytes(range(16))
MSG = Message("acme", Address("acme", 2), MessageClass.TEMPLATE, MID, b"your order shipped",
              1_767_225_600, False, b"delivery", b"k" * 32, b"tpl-1",
              ClassCheck(MessageClass.TEMPLATE, MessageClass.TEMPLATE, True, ""))  # fmt: skip
EVERY = [
    events.MessageReceived(0, MSG),
    events.ReceiptReceived(0, Address("carol", 3), ReceiptStatus.READ, (MID, MID[::-1]), 7),
    events.MessageSent(0, Message("carol", Address("acme", 1), MessageClass.SERVICE, MID, b"hi",
                                  5, True, franking_key=b"f" * 32)),  # fmt: skip
    events.SendRefused(0, "carol", MID, MessageClass.MARKETING, "NotOptedIn", "no opt-in"),
    events.KeyChanged(0, "acme", b"\x01" * 32, b"\x02" * 32),
    events.DevicesChanged(0, "acme", (4, 5), (2,)),
    events.Undecryptable(0, Address("acme", 2), MID, "AuthenticationFailed", "bad tag",
                         b"\xa1raw", 9),  # fmt: skip
    events.Undecryptable(0, None, None, "DecodeError", "malformed delivery", b"junk", 0),
]


def test_every_event_type_round_trips_in_order() -> None:
    store = MemoryStore()
    with store.transaction() as tx:
        written = [events.append(tx, ev) for ev in EVERY]
    with store.transaction() as tx:
        got = events.read(tx)
    assert got == written
    assert [type(e) for e in got] == [type(e) for e in EVERY]
    assert [e.seq for e in got] == sorted({e.seq for e in got})  # strictly increasing
    assert got[0].message.class_check == MSG.class_check  # type: ignore[attr-defined]
    assert {e.KIND for e in EVERY} == set(range(1, 8))
    assert "raw" not in repr(got[6]) and "AuthenticationFailed" in repr(got[6])


def test_the_cursor_moves_forward_only_and_acknowledged_events_go() -> None:
    store = MemoryStore()
    with store.transaction() as tx:
        a, b, c = (events.append(tx, EVERY[i]) for i in range(3))
    with store.transaction() as tx:
        assert events.cursor(tx) == 0
        assert events.read(tx, after=a.seq) == [b, c]
        assert events.read(tx, limit=2) == [a, b]
        assert events.ack(tx, b.seq) == b.seq
        assert events.read(tx) == [c]  # after the cursor
        assert events.read(tx, after=0) == [c]  # a and b are deleted
        assert events.ack(tx, a.seq) == b.seq  # never back
        assert tx.app_keys(events.EVENTS) == [f"{events.EVENTS}{c.seq:020d}"]
        events.rewrite(tx, events.MessageReceived(a.seq, MSG))  # acknowledged: not revived
        assert events.read(tx, after=0) == [c]


def test_positions_keep_increasing_after_the_log_is_put_back() -> None:
    """A store restored from a backup holds an older ``c/ev-next``: new positions still come
    after every position handed out before (they never fall below the clock)."""
    store = MemoryStore()
    with store.transaction() as tx:
        old_next = tx.app_get("c/ev-next")
        first = events.append(tx, EVERY[0])
        second = events.append(tx, EVERY[1])
        if old_next is None:
            tx.app_delete("c/ev-next")
        events.ack(tx, second.seq)
        tx.app_put("c/ev-cursor", first.seq.to_bytes(8, "big"))  # the backup's cursor
        third = events.append(tx, EVERY[2])
    assert first.seq < second.seq < third.seq


@pytest.mark.parametrize(
    "value",
    [b"", b"\xff", b"\xa1\x00\x63", b"\xa2\x00\x05\x01\x00", b"\xa2\x00\x01\x01\x01"],
)
def test_a_damaged_event_record_is_a_store_error(value: bytes) -> None:
    store = MemoryStore()
    with store.transaction() as tx:
        tx.app_put(f"{events.EVENTS}{1:020d}", value)
        with pytest.raises(StoreError):
            events.read(tx)
