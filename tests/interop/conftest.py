from __future__ import annotations

from collections.abc import Iterator

import pytest

from interop.harness import PACKAGES, Harness, require_node


@pytest.fixture(scope="module", params=PACKAGES)
def libsignal(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A running libsignal harness, once per pinned libsignal version."""
    require_node(request.param)
    h = Harness(request.param)
    yield h
    h.close()
