"""Shared fixtures of the protocol tests."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import SUITE_IDS, SUITES  # noqa: E402

from e2e import _testing  # noqa: E402
from e2e.suite import Suite  # noqa: E402

# Tests inject deterministic random sources (seeded workloads, fixed keys); the library refuses
# them everywhere else (SPEC.md §11, e2e/_testing.py).
_testing.allow_injected_rng()

# Modest example counts keep the whole protocol suite well under a minute; no deadlines
# (the machine is shared, timing is not what these tests assert).
settings.register_profile(
    "e2e",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("e2e-long", parent=settings.get_profile("e2e"), max_examples=2000)
settings.load_profile(os.environ.get("E2E_HYPOTHESIS_PROFILE", "e2e"))


@pytest.fixture
def fast_tmp(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory on tmpfs when there is one (removed afterwards), else tmp_path."""
    from world import fast_dir

    d = fast_dir(tmp_path)
    yield d
    if d != tmp_path:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(params=SUITES, ids=SUITE_IDS)
def suite(request: pytest.FixtureRequest) -> Suite:
    """Each test that takes ``suite`` runs for every registered frame suite (PQ, id 3)."""
    s: Suite = request.param
    return s


LIMITS = (
    "MAX_SKIP",
    "MAX_SKIPPED_AGE",
    "MAX_STORED_SKIPPED",
    "MAX_RECEIVER_CHAINS",
)


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set ratchet limits to small values: ``limits(MAX_SKIP=5, ...)``.

    ratchet.py imports the constants by name, so both e2e.constants and every module that
    holds a copy are patched.
    """
    import e2e.constants
    import e2e.ratchet

    def set_limits(**values: int) -> None:
        for name, value in values.items():
            assert name in LIMITS, name
            monkeypatch.setattr(e2e.constants, name, value)
            for mod in (e2e.ratchet,):
                if hasattr(mod, name):
                    monkeypatch.setattr(mod, name, value)

    return set_limits
