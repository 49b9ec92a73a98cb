from __future__ import annotations

from collections.abc import Iterator

import pytest

from interop.harness import PACKAGES, Harness, require_node


def _harness(package: str) -> Iterator[Harness]:
    require_node(package)
    h = Harness(package)
    yield h
    h.close()


@pytest.fixture(scope="module", params=PACKAGES)
def libsignal(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A running libsignal harness, once per pinned libsignal version."""
    yield from _harness(request.param)


@pytest.fixture(scope="module", params=[p for p in PACKAGES if p != "libsignal-072"])
def spqr_peer(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A running libsignal harness, once per pinned version that speaks SPQR (0.90 on)."""
    yield from _harness(request.param)
