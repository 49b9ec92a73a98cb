"""The one error hierarchy (SPEC.md §8): every error lives in e2e.errors, says whether a retry
can succeed, and the relay's wire codes map onto it both ways."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import e2e
from e2e import errors
from e2e.errors import E2EError, StaleDeviceList, StoreError, StoreUnavailable
from e2e.platform import wire

ROOT = Path(__file__).resolve().parents[1]

ERROR_CLASSES = [
    obj
    for _, obj in inspect.getmembers(errors, inspect.isclass)
    if issubclass(obj, E2EError) and obj.__module__ == "e2e.errors"
]


def test_every_error_is_defined_in_e2e_errors_and_exported() -> None:
    assert len(ERROR_CLASSES) >= 50
    assert sorted(errors.__all__) == sorted(c.__name__ for c in ERROR_CLASSES)
    assert set(errors.__all__) <= set(e2e.__all__)
    # No other module of the package defines an exception class of its own (one hierarchy);
    # the client's internal NeedDevices signal is a StateError and never leaves the client;
    # private classes (a leading underscore) are control flow caught in their own module.
    found = []
    for path in (ROOT / "e2e").rglob("*.py"):
        if path.name == "errors.py" and path.parent.name == "e2e":
            continue
        for m in re.finditer(r"^class (\w+)\((\w+)\):", path.read_text(), re.M):
            private = m.group(1).startswith("_")
            if not private and (m.group(2) in errors.__all__ or m.group(2) == "Exception"):
                found.append((path.relative_to(ROOT).as_posix(), m.group(1)))
    assert found == [("e2e/client/inbox.py", "NeedDevices")]


def test_retryable_is_a_class_level_bool_true_for_exactly_the_transient_ones() -> None:
    for cls in ERROR_CLASSES:
        assert type(cls.retryable) is bool, cls
    retryable = {c.__name__ for c in ERROR_CLASSES if c.retryable}
    assert retryable == {
        "WireFailure", "RateLimited", "MailboxFull", "StoreUnavailable", "TransferInterrupted",
        "Overloaded",
    }  # fmt: skip
    # a subclass inherits its parent's answer unless it says otherwise
    assert not StoreError("x").retryable and StoreUnavailable("x").retryable
    assert not StaleDeviceList([], []).retryable


def test_spec_lists_the_whole_hierarchy_and_the_retryable_ones() -> None:
    spec = (ROOT / "SPEC.md").read_text()
    section = spec[spec.index("## 8. Errors") : spec.index("## 9. Key storage")]
    for cls in ERROR_CLASSES:
        assert re.search(rf"\b{cls.__name__}\b", section), cls.__name__
        starred = re.search(rf"\b{cls.__name__}\*", section) is not None
        assert starred == cls.retryable, cls.__name__


def test_wire_codes_map_to_the_same_classes_both_ways() -> None:
    for code, status, cls in wire.ERRORS:
        raised = wire.error_for(code, "m")
        assert isinstance(raised, cls) or cls is StoreError, code
        assert wire.error_status(raised) == (status, code)
    # the relay's own store failures answer 503, and a client raises the retryable type
    assert wire.error_status(StoreError("db")) == (503, "store_unavailable")
    assert type(wire.error_for("store_unavailable", "m")) is StoreUnavailable
    assert type(wire.error_for("no_such_code", "m")) is E2EError
