"""Known-answer vectors: one JSON file per concept, verified case by case.

A vector file is a JSON object::

    {"concept": "<name registered below>", "source": "<where the values come from>",
     "cases": [{...}, ...]}

``verify_dir`` loads every ``*.json`` in a directory, runs the verifier registered for
its concept on each case and counts a case as passed when the verifier returns and as
failed when it raises. The same function backs ``python -m e2e vectors verify [DIR]``
and the parametrised test in tests/test_vectors.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e import _testing
from e2e.vectors.registry import VERIFIERS, verifier

__all__ = ["Case", "VERIFIERS", "verifier", "iter_cases", "verify_case", "verify_dir"]


@dataclass(frozen=True, slots=True)
class Case:
    file: str
    concept: str
    index: int
    data: dict[str, Any]

    @property
    def name(self) -> str:
        label = self.data.get("name") or self.data.get("tcId") or self.index
        return f"{self.file}[{label}]"


def _load_verifiers() -> None:
    # Imported for their @verifier registrations.
    from e2e.vectors import (  # noqa: F401
        attachment_vectors,
        ecvrf_vectors,
        fingerprint_vectors,
        libsignal_spqr_vectors,
        libsignal_vectors,
        libsignal_wire_vectors,
        merkle_vectors,
        primitives,
        protocol,
        xeddsa_vectors,
    )


def iter_cases(directory: Path) -> Iterator[Case]:
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or "concept" not in doc or "cases" not in doc:
            continue
        for i, case in enumerate(doc["cases"]):
            yield Case(path.name, str(doc["concept"]), i, case)


def verify_case(case: Case) -> None:
    """Run one case; raises on a mismatch or when no verifier knows its concept."""
    _load_verifiers()
    fn = VERIFIERS.get(case.concept)
    if fn is None:
        raise LookupError(f"no verifier for concept {case.concept!r}")
    with _testing.injected_rng():  # known answers need the cases' deterministic RNG (§11)
        fn(case.data)


def verify_dir(directory: Path, report: Callable[[str], None] = print) -> tuple[int, int]:
    """Verify every case in ``directory``; report failures and return (passed, failed)."""
    passed = failed = 0
    for case in iter_cases(directory):
        try:
            verify_case(case)
        except Exception as exc:  # a vector failure of any kind is counted, not raised
            failed += 1
            report(f"FAIL {case.name}: {type(exc).__name__}: {exc}")
        else:
            passed += 1
    return passed, failed
