"""Shared pieces of the fuzz targets: a deterministic RNG, the fixed parties, the runner.

Nothing here needs atheris: the targets' ``test_one_input`` functions are plain Python, so
``tests/test_corpus.py`` replays the corpora under pytest. Only :func:`main` imports atheris.

Oracle: a target *fails* when ``test_one_input`` raises anything that is not an
:class:`e2e.errors.E2EError` (an ``AssertionError`` from an invariant check included).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

from e2e import PQ, E2EError, KeyPair, LocalPrekeys, Suite, _testing

# The fixtures are made from fixed keys (DetRng): allowed in the harness only (e2e/_testing.py).
_testing.allow_injected_rng()

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"
#: Fixed parties of fuzz_decrypt / fuzz_state, written by make_corpus.py.
FIXTURE = Path(__file__).with_name("decrypt_fixture.cbor")


class DetRng:
    """A deterministic byte source (SHAKE-256 of a label and a counter): fixtures only."""

    def __init__(self, label: bytes) -> None:
        self.label = label
        self.count = 0

    def __call__(self, n: int) -> bytes:
        self.count += 1
        return hashlib.shake_256(self.label + self.count.to_bytes(8, "big")).digest(n)


def identity(name: str) -> KeyPair:
    """The fixed identity key of party ``name``."""
    return KeyPair.from_private_bytes(
        hashlib.sha256(b"e2e-fuzz-identity:" + name.encode()).digest()
    )


def bob_prekeys(suite: Suite) -> LocalPrekeys:
    """Bob's fixed prekeys for ``suite`` (same every run: the corpora are built against them)."""
    return LocalPrekeys.generate(
        identity("bob"), suite, one_time=2, rng=DetRng(b"bob-prekeys-%d" % suite.id)
    )


SUITE_OF = {"pq": PQ}


def expect_e2e(fn: Callable[[], object]) -> object | None:
    """Run ``fn``; return its value, or None if it raised an E2EError (anything else escapes)."""
    try:
        return fn()
    except E2EError:
        return None


def main(test_one_input: Callable[[bytes], None], target: str) -> None:
    """libFuzzer entry point: ``python fuzz/fuzz_<target>.py [libFuzzer flags] [corpus dirs]``.

    With no corpus directory given, the seed corpus ``tests/corpus/<target>`` is used
    read-only (new inputs are not written into the repository).
    """
    import atheris  # only needed for real fuzzing runs

    atheris.instrument_all()
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        argv.append(str(CORPUS / target))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
