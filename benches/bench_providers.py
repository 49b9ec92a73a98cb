"""The faster primitive provider per operation (see benches/providers.py): e2e's choice and
the other library's call in interleaved rounds; chosen / other is bounded."""

from __future__ import annotations

from typing import Any

import pytest

from benches.conftest import BOUNDS, run_pair
from benches.interleave import Side
from benches.providers import CHOICES, available, case_name


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_provider(benchmark: Any, name: str) -> None:
    choice = CHOICES[name]
    if not available(choice):
        pytest.skip(f"{name}: one of the libraries cannot run it on this machine")
    chosen, other = choice.make()
    case = case_name(name)
    run_pair(
        benchmark, case, Side(None, chosen), Side(None, other), BOUNDS["providers"].get(case),
        provider_case=case, sides=["chosen", "other"],
    )  # fmt: skip
