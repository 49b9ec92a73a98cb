"""Random conversations, run by the independent reference (vectors/reference.py, written from
SPEC.md alone) and by the package: every frame the package sends must be the reference's byte
for byte, and every plaintext the same.

The fixed transcripts in vectors/transcripts.json pin one script; this draws many: who sends
when, and which pending frame is delivered next (out of order, across DH ratchet steps,
crossing messages). It reaches every receive path of e2e.ratchet (the in-chain and new-chain
fast paths, skipped keys, the header trial order) against code that has none of them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from e2e.vectors import Case, verify_case

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vectors"))
import generate  # noqa: E402  (vectors/generate.py, with the reference it imports)


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """A valid schedule: Bob sends only after he has received; each frame is delivered at
    most once, in any order."""
    script: list[tuple[Any, ...]] = []
    pending: dict[str, list[str]] = {"a": [], "b": []}  # frames waiting for each receiver
    sent = {"a": 0, "b": 0}
    bob_started = False
    for _ in range(draw(st.integers(4, 14))):
        senders = ["a", "b"] if bob_started else ["a"]
        can_recv = [w for w in ("a", "b") if pending[w]]
        if can_recv and draw(st.booleans()):
            who = draw(st.sampled_from(can_recv))
            label = draw(st.sampled_from(pending[who]))
            pending[who].remove(label)
            script.append(("recv", who, label))
            bob_started |= who == "b"
        else:
            who = draw(st.sampled_from(senders))
            label = f"{who}{sent[who]}"
            sent[who] += 1
            text = draw(st.binary(max_size=40))
            script.append(("send", who, label, text))
            pending["b" if who == "a" else "a"].append(label)
    assume(bob_started)
    return script


@settings(max_examples=25)
@given(script=scripts(), with_opk=st.booleans())
def test_package_sends_the_references_frames(script: list[tuple[Any, ...]], with_opk: bool) -> None:
    try:
        case = generate.transcript_case(3, with_opk, script, "random")
    except AssertionError:
        # The reference asserts instead of raising typed errors; schedules it refuses (none
        # in practice at these lengths) are not what this test is about.
        assume(False)
    verify_case(Case("random", "transcript", 0, case))
    assert sum(e["op"] == "send" for e in case["events"]) == sum(op == "send" for op, *_ in script)
