"""The faster primitive provider per operation (see benches/providers.py)."""

from __future__ import annotations

from typing import Any

import pytest

from benches.conftest import QUICK
from benches.providers import CHOICES, available, case_name


@pytest.mark.parametrize("kind", ["chosen", "other"])
@pytest.mark.parametrize("name", sorted(CHOICES))
def test_provider(benchmark: Any, name: str, kind: str) -> None:
    choice = CHOICES[name]
    if not available(choice):
        pytest.skip(f"{name}: one of the libraries cannot run it on this machine")
    chosen, other = choice.make()
    benchmark.group = case_name(name)
    benchmark.extra_info.update(provider_case=case_name(name), kind=kind)
    rounds = 1000 if QUICK else 4000
    benchmark.pedantic(
        chosen if kind == "chosen" else other,
        rounds=rounds,
        warmup_rounds=rounds // 20,
        iterations=1,
    )
