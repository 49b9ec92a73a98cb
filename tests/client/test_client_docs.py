"""Every exported class, function and method of e2e.client has a docstring."""

from __future__ import annotations

import importlib
import inspect

import pytest

MODULES = [
    "e2e.client",
    "e2e.client.state",
    "e2e.client.device",
    "e2e.client.transport",
    "e2e.client.http",
    "e2e.demo",
]


@pytest.mark.parametrize("module", MODULES)
def test_exported_names_have_docstrings(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__doc__
    missing = []
    for name in mod.__all__:
        obj = getattr(mod, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not inspect.isfunction(member):
                    continue
                if not inspect.getdoc(member):
                    missing.append(f"{name}.{attr}")
    assert missing == []
