"""Arbitrary bytes into every e2e.libsignal decoder: only typed errors, state unchanged."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from e2e.errors import E2EError
from e2e.keys import KeyPair
from e2e.libsignal import LibsignalPrekeys, SessionRecord, initiate
from e2e.libsignal.wire import parse_prekey_message, parse_signal_message

_ALICE, _BOB = KeyPair.generate(), KeyPair.generate()
_KEYS = LibsignalPrekeys.generate(_BOB, 2, one_time=1)
_A = SessionRecord(initiate(_ALICE, 1, _KEYS.bundle()))
_FIRST = _A.encrypt(b"first")
_B = SessionRecord()
_B.decrypt(*_FIRST, prekeys=_KEYS, local_identity=_BOB)
_NEXT = _A.encrypt(b"next")


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out)


@given(st.binary(max_size=300))
def test_parsers_raise_only_typed_errors(data: bytes) -> None:
    for parse in (parse_signal_message, parse_prekey_message):
        try:
            parse(data)
        except E2EError:
            pass


@given(
    st.sampled_from([_FIRST, _NEXT]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_messages_leave_the_record_unchanged(
    msg: tuple[int, bytes], edits: list[tuple[int, int]]
) -> None:
    kind, body = msg
    bad = _mutate(body, edits)
    if bad == body:
        return
    before = _B.to_bytes()
    try:
        _B.decrypt(kind, bad, prekeys=_KEYS, local_identity=_BOB)
    except E2EError:
        assert _B.to_bytes() == before
    else:  # only an edit outside the MAC-covered bytes (the unused prekey wrapper) can pass
        assert kind == 3


@given(st.binary(max_size=400))
def test_record_loader_raises_only_typed_errors(data: bytes) -> None:
    try:
        SessionRecord.from_bytes(data)
    except E2EError:
        pass
