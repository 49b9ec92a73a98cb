"""The key store's interfaces (SPEC.md §9.1): the address type, what a transaction offers
(``typing.Protocol`` classes), the stored-prekey wrapper, and the ordering helpers that make a
crash lose nothing. The backends (:mod:`e2e.store.memory`, :mod:`e2e.store.sqlite`,
:mod:`e2e.store.postgres`, over :mod:`e2e.store._core`) implement them; :mod:`e2e.store` names
both.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar

from e2e.errors import StoreError
from e2e.keys import KemKeyPair, KeyPair
from e2e.prekeys import KemPrekey, OneTimePrekey, PrekeyBundle, SignedPrekey
from e2e.suite import DEFAULT, Suite

if TYPE_CHECKING:
    from e2e.session import Session

__all__ = [
    "Address",
    "TrustResult",
    "Direction",
    "MAX_ARCHIVED_SESSIONS",
    "IdentityKeyStore",
    "OneTimePrekeyStore",
    "SignedPrekeyStore",
    "KemPrekeyStore",
    "SessionStore",
    "AppDataStore",
    "StoreTransaction",
    "Store",
    "Dated",
    "encrypt_and_store",
    "decrypt_and_store",
    "set_fault_hook",
]

#: Previous sessions kept per address besides the current one (oldest dropped first).
MAX_ARCHIVED_SESSIONS: Final = 5
_MAX_NAME_BYTES: Final = 512
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """A device: (user or business id, device id). The one address type of the store, the
    client and -- through :attr:`wire` / :meth:`from_wire` -- the platform's envelopes."""

    name: str
    device: int

    def __post_init__(self) -> None:
        if type(self.name) is not str or not self.name:
            raise StoreError("address name must be a non-empty str")
        try:
            size = len(self.name.encode())
        except UnicodeEncodeError:
            raise StoreError("address name is not valid Unicode") from None
        if size > _MAX_NAME_BYTES or "\x00" in self.name:
            raise StoreError("address name too long or contains NUL")
        if type(self.device) is not int or not 0 <= self.device < 2**31:
            raise StoreError("address device id must be an int in [0, 2^31)")

    @property
    def record_id(self) -> str:
        """``name|device``: unambiguous because the device part is digits only."""
        return f"{self.name}|{self.device}"

    @property
    def account(self) -> bytes:
        """The name as the platform's account id (its UTF-8 bytes, SPEC.md §10)."""
        return self.name.encode()

    @property
    def wire(self) -> tuple[bytes, int]:
        """``(account, device)`` as the platform's envelopes carry it."""
        return (self.name.encode(), self.device)

    @classmethod
    def from_wire(cls, account: bytes, device: int) -> Address:
        """The address of a platform device ``(account, device)``; :class:`StoreError` if
        the account id is not UTF-8."""
        try:
            name = account.decode()
        except (UnicodeDecodeError, AttributeError):
            raise StoreError("account id is not UTF-8") from None
        return cls(name, device)


class TrustResult(enum.Enum):
    """What :meth:`IdentityKeyStore.save_identity` found."""

    NEW = "new"
    UNCHANGED = "unchanged"
    REPLACED = "replaced"


class Direction(enum.Enum):
    SENDING = "sending"
    RECEIVING = "receiving"


@dataclass(frozen=True, slots=True)
class Dated(Generic[_T]):
    """A stored prekey with the time (Unix seconds) it was created."""

    item: _T
    created: int


class IdentityKeyStore(Protocol):
    """Our identity key pair, and the peers' identity keys with trust decisions.

    * ``save_identity``: no key before -> NEW (trusted on first use); the same key ->
      UNCHANGED; another key -> REPLACED, stored but not trusted for sending until
      ``approve_identity``.
    * ``is_trusted(RECEIVING)``: an unknown address or the stored key.
    * ``is_trusted(SENDING)``: an unknown address, or the stored key if it was not replaced
      since it was last approved.
    """

    def local_identity(self) -> KeyPair: ...

    def get_local_identity(self) -> KeyPair | None: ...

    def set_local_identity(self, pair: KeyPair) -> None: ...

    def get_identity(self, addr: Address) -> bytes | None: ...

    def save_identity(self, addr: Address, key: bytes) -> TrustResult: ...

    def approve_identity(self, addr: Address, key: bytes) -> None: ...

    def is_trusted(self, addr: Address, key: bytes, direction: Direction) -> bool: ...


class OneTimePrekeyStore(Protocol):
    """One-time X25519 prekeys. Ids come from one counter shared by every prekey kind and are
    never reused; a used prekey leaves a tombstone so it is refused as reused."""

    def add_one_time_prekey(self, pair: KeyPair) -> OneTimePrekey: ...

    def load_one_time_prekey(self, prekey_id: int) -> OneTimePrekey: ...

    def mark_one_time_prekey_used(self, prekey_id: int) -> None: ...

    def one_time_prekeys(self) -> list[OneTimePrekey]: ...


class SignedPrekeyStore(Protocol):
    def add_signed_prekey(
        self, pair: KeyPair, signature: bytes, created: int
    ) -> Dated[SignedPrekey]: ...

    def load_signed_prekey(self, prekey_id: int) -> Dated[SignedPrekey]: ...

    def signed_prekeys(self) -> list[Dated[SignedPrekey]]: ...

    def remove_signed_prekey(self, prekey_id: int) -> None: ...


class KemPrekeyStore(Protocol):
    """ML-KEM prekeys: one-time ones are used once; a last-resort one once per base key."""

    def add_kem_prekey(
        self, pair: KemKeyPair, signature: bytes, last_resort: bool, created: int
    ) -> Dated[KemPrekey]: ...

    def load_kem_prekey(
        self, prekey_id: int, base_key: bytes | None = None
    ) -> Dated[KemPrekey]: ...

    def mark_kem_prekey_used(self, prekey_id: int, base_key: bytes) -> None: ...

    def kem_prekeys(self) -> list[Dated[KemPrekey]]: ...

    def remove_kem_prekey(self, prekey_id: int) -> None: ...


class SessionStore(Protocol):
    """The current session per address plus up to :data:`MAX_ARCHIVED_SESSIONS` previous ones
    (newest first), so simultaneous initiation and re-setup resolve."""

    def load_session(self, addr: Address) -> Session | None: ...

    def save_session(self, addr: Address, session: Session) -> None: ...

    def promote_session(self, addr: Address, session: Session) -> None: ...

    def archived_sessions(self, addr: Address) -> list[Session]: ...

    def delete_session(self, addr: Address) -> None: ...

    def device_ids(self, name: str) -> list[int]: ...


class AppDataStore(Protocol):
    """Application records (sealed like the rest) written in the store's transactions."""

    def app_get(self, key: str) -> bytes | None: ...

    def app_get_fresh(self, key: str) -> tuple[bytes | None, bool]:
        """``app_get`` and whether the record is provably the newest written: False for one
        written at or before the store's restore point (SPEC.md §9.7), whose contents an
        application must treat as possibly stale (a session in it must not send, §6.5)."""
        ...

    def app_put(self, key: str, value: bytes) -> None: ...

    def app_delete(self, key: str) -> None: ...

    def app_keys(self, prefix: str = "") -> list[str]: ...

    def app_lock(self, key: str) -> None:
        """Hold ``key`` exclusively until the transaction ends, whether or not a record
        exists: another process's transaction locking the same key waits (PostgreSQL; the
        embedded stores serialize whole transactions already)."""
        ...


class StoreTransaction(
    IdentityKeyStore,
    OneTimePrekeyStore,
    SignedPrekeyStore,
    KemPrekeyStore,
    SessionStore,
    AppDataStore,
    Protocol,
):
    """Everything a store holds, inside one transaction, plus the session operations that
    load, use and save a session in it."""

    def encrypt(self, addr: Address, plaintext: bytes) -> bytes: ...

    def decrypt(
        self,
        addr: Address,
        frame: bytes,
        *,
        allowed_suites: Collection[Suite] = (DEFAULT,),
        accept_replaced_identity: bool = True,
    ) -> bytes: ...

    def initiate(
        self,
        addr: Address,
        bundle: PrekeyBundle | bytes,
        *,
        allowed_suites: Collection[Suite] = (DEFAULT,),
    ) -> Session: ...


class Store(Protocol):
    def transaction(self) -> AbstractContextManager[StoreTransaction]: ...

    def close(self) -> None: ...


# -- fault points (crash tests) ---------------------------------------------------------

_fault_hook: Callable[[str], None] | None = None


def set_fault_hook(hook: Callable[[str], None] | None) -> None:
    """Install a callable run at each named fault point (crash tests only)."""
    global _fault_hook
    _fault_hook = hook


def fault_point(name: str) -> None:
    hook = _fault_hook
    if hook is not None:
        hook(name)


# -- ordering helpers -------------------------------------------------------------------


def encrypt_and_store(store: Store, addr: Address, plaintext: bytes) -> bytes:
    """Encrypt for ``addr`` and commit the advanced session *before* returning the frame.

    A crash before the commit leaves no frame anywhere and the old state, so the counter is
    used again only for a message that was never sent; after the commit the frame may be
    sent (or, if the application also queued it in the same transaction, re-sent).
    """
    with store.transaction() as tx:
        frame = tx.encrypt(addr, plaintext)
        fault_point("after_encrypt_before_commit")
    fault_point("after_commit_before_send")
    return frame


def decrypt_and_store(
    store: Store,
    addr: Address,
    frame: bytes,
    on_plaintext: Callable[[StoreTransaction, bytes], None] | None = None,
    *,
    allowed_suites: Collection[Suite] = (DEFAULT,),
) -> bytes:
    """Decrypt ``frame`` and commit the new state together with whatever ``on_plaintext``
    writes in the same transaction. Acknowledge the frame only after this returns."""
    with store.transaction() as tx:
        plaintext = tx.decrypt(addr, frame, allowed_suites=allowed_suites)
        if on_plaintext is not None:
            on_plaintext(tx, plaintext)
        fault_point("after_decrypt_before_commit")
    fault_point("after_commit_before_ack")
    return plaintext
