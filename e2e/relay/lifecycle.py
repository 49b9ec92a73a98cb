"""The relay's part in linking and recovering devices (SPEC.md §10.1): the provisioning
mailbox a new device's grant waits in, and the recovery data of each account.

Neither holds a secret the relay could use: a grant is sealed to the new device's
ephemeral key (:mod:`e2e.platform.provisioning`), the account key to the user's recovery
key (:mod:`e2e.platform.recovery`). The relay checks the recovery proof and counts failed
ones, refusing more than :data:`~e2e.platform.recovery.MAX_FAILURES` an hour per account.

A mixin of :class:`~e2e.relay.service.RelayService`; its handlers run in the request's
transaction like every other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from e2e.errors import (
    Conflict,
    E2EError,
    InvalidSignature,
    RateLimited,
    Unauthenticated,
    UnknownAccount,
)
from e2e.platform.recovery import FAILURE_WINDOW, MAX_FAILURES, verify_fetch
from e2e.platform.wire import (
    AUTH_SKEW,
    Ok,
    Provisioned,
    ProvisionFetch,
    ProvisionSend,
    Recovered,
    RecoveryFetch,
    SetRecovery,
)
from e2e.relay.store import Caller, Tx, account_of

__all__ = ["Lifecycle", "Refusal", "GRANT_SECONDS"]

#: How long a sealed grant waits for its new device.
GRANT_SECONDS: Final = 600
#: Recovery nonces are recorded as this device id's (no device has id 0).
_RECOVERY_DEVICE: Final = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """A handler's refusal whose records must commit (a failed recovery proof is counted):
    the request's transaction commits, then the error is answered."""

    error: E2EError


class Lifecycle:
    """Provisioning grants and account recovery."""

    clock: Callable[[], int]
    _require_admin: Callable[[Tx, Caller], None]

    def provision_send(self, tx: Tx, caller: Caller, req: ProvisionSend) -> Ok:
        """(Admin) keep a sealed grant for the new device of ``req.provisioning_id``."""
        self._require_admin(tx, caller)
        held = tx.fetchone("SELECT sealed FROM provisioning WHERE id = ?", (req.provisioning_id,))
        if held is not None:
            if bytes(held[0]) == req.sealed:
                return Ok()  # a retry
            raise Conflict("a grant is already waiting under this provisioning id")
        tx.execute(
            "INSERT INTO provisioning (id, sealed, expires) VALUES (?, ?, ?)",
            (req.provisioning_id, req.sealed, self.clock() + GRANT_SECONDS),
        )
        return Ok()

    def provision_fetch(self, tx: Tx, req: ProvisionFetch) -> Provisioned:
        """The grant waiting under the id (handed out once), or empty."""
        row = tx.fetchone(
            "SELECT sealed FROM provisioning WHERE id = ? AND expires >= ?",
            (req.provisioning_id, self.clock()),
        )
        if row is None:
            return Provisioned(b"")
        tx.execute("DELETE FROM provisioning WHERE id = ?", (req.provisioning_id,))
        return Provisioned(bytes(row[0]))

    def set_recovery(self, tx: Tx, caller: Caller, req: SetRecovery) -> Ok:
        """(Admin) the account's recovery auth key and sealed account key (replaced)."""
        self._require_admin(tx, caller)
        tx.execute(
            "INSERT INTO recovery (account, auth_key, sealed, failures, window_start)"
            " VALUES (?, ?, ?, 0, 0) ON CONFLICT (account) DO UPDATE SET"
            " auth_key = excluded.auth_key, sealed = excluded.sealed, failures = 0",
            (caller[0], req.auth_key, req.sealed),
        )
        return Ok()

    def recovery_fetch(self, tx: Tx, req: RecoveryFetch) -> Recovered | Refusal:
        """The sealed account key, to a proof by the recovery key; a failed proof is
        counted (committed), and an account with :data:`MAX_FAILURES` failures this hour
        is refused outright (429) until the hour has passed."""
        row = tx.fetchone(
            "SELECT auth_key, sealed, failures, window_start FROM recovery WHERE account = ?",
            (req.account,),
        )
        if row is None:
            raise UnknownAccount("no recovery for this account")
        now = self.clock()
        failures, start = int(row[2]), int(row[3])
        if now - start >= FAILURE_WINDOW:
            failures, start = 0, now
        if failures >= MAX_FAILURES:
            raise RateLimited("too many failed recovery proofs for this account")
        if abs(req.time - now) > AUTH_SKEW:
            raise Unauthenticated("recovery proof time outside the allowed skew")
        try:
            verify_fetch(bytes(row[0]), req.account, req.time, req.nonce, req.signature)
        except InvalidSignature:
            tx.execute(
                "UPDATE recovery SET failures = ?, window_start = ? WHERE account = ?",
                (failures + 1, start, req.account),
            )
            return Refusal(Unauthenticated("recovery proof does not verify"))
        if not tx.use_nonce(req.account, _RECOVERY_DEVICE, req.nonce, req.time + AUTH_SKEW + 1):
            raise Unauthenticated("recovery proof replayed")
        acct = account_of(tx, req.account)
        return Recovered(bytes(row[1]), acct.identity, acct.kind, acct.tier,
                         tx.device_list(req.account) or b"")  # fmt: skip
