"""Replay every fuzz corpus file (tests/corpus/<target>/) through its fuzz target.

The targets are the plain-Python ``test_one_input`` functions of fuzz/fuzz_*.py, so this
needs no atheris. A corpus file fails when its target raises anything but an E2EError
(invariant violations are AssertionErrors). Crash inputs found by long fuzzing runs are
added as ``crash-*`` files next to the seeds and stay here as regressions.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGETS = ("frame", "bundle", "decrypt", "state", "wire", "attachment")
CORPUS = ROOT / "tests" / "corpus"


def _files() -> list[tuple[str, Path]]:
    return [(t, p) for t in TARGETS for p in sorted((CORPUS / t).iterdir()) if p.is_file()]


def test_every_target_has_a_corpus() -> None:
    for target in TARGETS:
        files = [p for p in (CORPUS / target).iterdir() if p.is_file()]
        assert len(files) >= 10, target


def test_corpus_is_small() -> None:
    total = sum(p.stat().st_size for _, p in _files())
    assert total < 2 * 1024 * 1024


@pytest.mark.parametrize("target", TARGETS)
def test_replay(target: str) -> None:
    fn = importlib.import_module(f"fuzz.fuzz_{target}").test_one_input
    for path in sorted((CORPUS / target).iterdir()):
        if path.is_file():
            try:
                fn(path.read_bytes())
            except Exception as exc:  # report which file, then fail
                raise AssertionError(f"{target}/{path.name}: {exc!r}") from exc


def test_target_flags_a_non_e2e_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    """The oracle can fail: an exception outside e2e.errors escapes test_one_input."""
    mod = importlib.import_module("fuzz.fuzz_frame")

    def boom(raw: object) -> None:
        raise ValueError("not an E2EError")

    monkeypatch.setattr(mod, "decode_message", boom)
    with pytest.raises(ValueError):
        mod.test_one_input(b"\xa0")


def test_valid_seeds_reach_deep_code() -> None:
    """The seeds are not all rejected at the door: fixture frames decrypt for their peer."""
    from e2e import Session
    from fuzz.fuzz_decrypt import _FIXTURE

    for states in _FIXTURE.values():
        bob = Session.from_bytes(states["bob"])
        frames = states["frames"]
        # frames: m0 m1 b0 a1..a5 b1 a6; Bob holds skipped keys for a2, a3; a5 is undelivered.
        assert bob.decrypt(frames[4]) == b"a2"
        assert bob.decrypt(frames[7]) == b"a5"
        assert bob.decrypt(frames[9]) == b"a6"
