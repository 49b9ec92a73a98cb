"""No record of e2e shows a secret in its repr.

Walks every dataclass defined in the e2e package. A field is secret when its name says so
(keys, seeds, chain and root keys, plaintext and what reveals it: a body, a pointer that
carries the attachment key, a thumbnail or caption, a bearer token) or its type is a
private key pair. Each such class is built with a distinct marker in every secret field
and its repr must show none of the marker's bytes: not as ``bytes`` repr, hex or base64,
not even a 16-digit hex prefix. The other fields hold a stand-in that answers any
attribute, so a hand-written repr is run as it is written.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import pkgutil
import re
from collections.abc import Iterator
from typing import Any

import pytest

import e2e
from e2e.keys import KemKeyPair, KeyPair

#: Field names that hold secret material.
_SECRET_NAME = re.compile(
    r"^_?(key|secret|seed|private|plaintext|body|root_key|next_root|\w*chain_key|mac_key"
    r"|auth_key|franking_key|ck[sr]|account_key|sender_key|skipped|skipped_key|new_skipped"
    r"|header_key_[ab]|thumbnail|caption|file_name|attachment|opening|\w*_token)$"
)
#: Fields whose name matches but which hold nothing secret (and why).
_NOT_SECRET = {
    ("e2e.platform.wire.codec._Slot", "key"),  # the CBOR map key of a schema slot
    ("e2e.relay.config.Ads", "entry_key"),  # the ad service's public key
    ("e2e.platform.wire.accounts.SetRecovery", "auth_key"),  # the recovery public key
}


class _Any:
    """Stands in for a field a repr may format: any attribute, call, index or length."""

    def __getattr__(self, name: str) -> _Any:
        return self

    def __call__(self, *args: object, **kwargs: object) -> _Any:
        return self

    def __getitem__(self, item: object) -> _Any:
        return self

    def __len__(self) -> int:
        return 3

    def __repr__(self) -> str:
        return "any"


def _classes() -> Iterator[type]:
    seen: set[type] = set()
    for info in pkgutil.walk_packages(e2e.__path__, "e2e."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and dataclasses.is_dataclass(obj)
                and obj.__module__ == module.__name__
                and obj not in seen
            ):
                seen.add(obj)
                yield obj


def _secret_fields(cls: type) -> list[dataclasses.Field[Any]]:
    name = f"{cls.__module__}.{cls.__qualname__}"
    return [
        f
        for f in dataclasses.fields(cls)
        if (name, f.name) not in _NOT_SECRET
        and (_SECRET_NAME.match(f.name) or "KeyPair" in str(f.type))
    ]


_CASES = sorted(
    ((cls, fields) for cls in _classes() if (fields := _secret_fields(cls))),
    key=lambda case: f"{case[0].__module__}.{case[0].__qualname__}",
)


def test_the_walk_finds_the_records_that_hold_secrets() -> None:
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls, _ in _CASES}
    for expected in (
        "e2e.prekeys.SignedPrekey",
        "e2e.attachment.pointer.Pointer",
        "e2e.x3dh.Agreement",
        "e2e.libsignal.spqr.chain.Half",
        "e2e.relay.store.FrankingKey",
        "e2e.relay.config.Ops",
    ):
        assert expected in names
    assert len(_CASES) >= 40


def _forms(secret: bytes) -> list[str]:
    return [
        repr(secret),
        secret.hex()[:16],
        base64.b64encode(secret).decode()[:16],
        base64.urlsafe_b64encode(secret).decode()[:16],
    ]


@pytest.mark.parametrize(
    ("cls", "fields"), _CASES, ids=[f"{c.__module__}.{c.__qualname__}" for c, _ in _CASES]
)
def test_repr_shows_no_secret(cls: type, fields: list[dataclasses.Field[Any]]) -> None:
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):
        object.__setattr__(obj, f.name, _Any())
    hidden: list[str] = []
    for i, f in enumerate(fields):
        marker = bytes([0xA0 + i]) * 8 + bytes(range(0x30, 0x48))
        value: object = marker
        if "KemKeyPair" in str(f.type):
            value = KemKeyPair.from_seed(marker + marker)
            marker = value.seed()
        elif "KeyPair" in str(f.type) and "mlkem" not in str(f.type):
            value = KeyPair.from_private_bytes(marker[:32])
            marker = value.private_bytes()
        elif "str" in str(f.type) and "bytes" not in str(f.type):
            value = f"tok{i}-" + marker.hex()
            hidden.append(str(value))
        object.__setattr__(obj, f.name, value)
        hidden += _forms(marker)
    text = repr(obj)
    for form in hidden:
        assert form not in text, f"{cls.__qualname__}'s repr shows a secret: {text}"
