"""Key and session storage (SPEC.md §9).

Interfaces (``typing.Protocol``) for what a device keeps, three implementations that pass one
conformance suite, and the ordering helpers that make a crash lose nothing:

* :class:`~e2e.store.memory.MemoryStore`: in-process, for tests and short-lived tools;
* :class:`~e2e.store.sqlite.SqliteStore`: the embedded default, one file (WAL,
  ``synchronous=FULL``, ``BEGIN IMMEDIATE``);
* :class:`~e2e.store.postgres.PostgresStore`: backends on many machines (psycopg 3), with a
  row lock so two workers never advance one session at the same time.

Every record is sealed at rest (:mod:`e2e.store.atrest`). All work happens in a transaction::

    with store.transaction() as tx:            # commits at exit, rolls back on an exception
        plaintext = tx.decrypt(addr, frame)    # loads, decrypts, saves the advanced state
        tx.app_put(f"inbox/{n}", plaintext)    # the application's write, same transaction

    frame = encrypt_and_store(store, addr, b"hi")   # state is durable before frame exists

A store never hands out a fresh session in place of a record it could not read: a missing,
corrupted or tampered record, or a wrong storage key, raises :class:`~e2e.errors.StoreError`
naming the record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from e2e.store import interface
from e2e.store.interface import *  # noqa: F403 - the interfaces are this package's names

if TYPE_CHECKING:
    from e2e.store._core import StorePrekeys
    from e2e.store.atrest import StorageKey
    from e2e.store.memory import MemoryStore
    from e2e.store.postgres import PostgresStore
    from e2e.store.sqlite import SqliteStore

__all__ = [
    *interface.__all__,
    "MemoryStore",
    "SqliteStore",
    "PostgresStore",
    "StorageKey",
    "StorePrekeys",
]


_LAZY: Final = {
    "MemoryStore": "e2e.store.memory",
    "SqliteStore": "e2e.store.sqlite",
    "PostgresStore": "e2e.store.postgres",
    "StorageKey": "e2e.store.atrest",
    "StorePrekeys": "e2e.store._core",
}


def __getattr__(name: str) -> object:
    """The implementations, imported on first use (psycopg only when PostgresStore is)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'e2e.store' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
