"""Verifier for libsignal's safety numbers (vectors/fingerprint.json, concept "fingerprint").

Each case was recorded from Signal's client library (see the file's ``source``): the inputs
(iterations, scannable version, both identifiers and 33-byte identity keys) and libsignal's
displayable number and scannable code from both sides, plus its ``compare`` answers. Every
value is recomputed with :mod:`e2e.fingerprint` and must match exactly.
"""

from __future__ import annotations

from typing import Any

from e2e.fingerprint import ScannableFingerprint, safety_number
from e2e.vectors.registry import verifier

__all__: list[str] = []


@verifier("fingerprint")
def _fingerprint(case: dict[str, Any]) -> None:
    lid, lkey = bytes.fromhex(case["local_id"]), bytes.fromhex(case["local_key"])
    rid, rkey = bytes.fromhex(case["remote_id"]), bytes.fromhex(case["remote_key"])
    kw = {"version": int(case["version"]), "iterations": int(case["iterations"])}
    mine = safety_number(lid, lkey, rid, rkey, **kw)
    theirs = safety_number(rid, rkey, lid, lkey, **kw)
    assert mine.display == case["displayable"], "displayable number differs"
    assert theirs.display == case["displayable_remote_view"], "remote view's number differs"
    assert mine.scannable.to_bytes().hex() == case["scannable"], "scannable code differs"
    assert theirs.scannable.to_bytes().hex() == case["scannable_remote_view"]
    assert ScannableFingerprint.from_bytes(bytes.fromhex(case["scannable"])) == mine.scannable
    their_code = bytes.fromhex(case["scannable_remote_view"])
    assert mine.scannable.compare(their_code) is case["compare_remote_view"]
    assert mine.scannable.compare(mine.scannable.to_bytes()) is case["compare_self"]
    swapped = bytes.fromhex(case["scannable_swapped_ids"])
    assert mine.scannable.compare(swapped) is case["compare_swapped_ids"]
