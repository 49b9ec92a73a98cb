"""SPQR, libsignal's Sparse Post-Quantum Ratchet, spoken byte for byte (SPEC.md §15.7).

One module per concept: :mod:`~e2e.libsignal.spqr.gf16` (field arithmetic) and
:mod:`~e2e.libsignal.spqr.erasure` (the erasure code), :mod:`~e2e.libsignal.spqr.mlkem768`
(ML-KEM-768 split into two encapsulation steps), :mod:`~e2e.libsignal.spqr.kdf` (the
authenticator and KDFs), :mod:`~e2e.libsignal.spqr.chain` (per-epoch key chains),
:mod:`~e2e.libsignal.spqr.message` (the wire codec), :mod:`~e2e.libsignal.spqr.braid` (the
key-agreement state machine) and :mod:`~e2e.libsignal.spqr.ratchet` (negotiation and the
per-session value the Double Ratchet in :mod:`e2e.libsignal.session` holds).
"""

from __future__ import annotations

from e2e.libsignal.spqr.message import V0, V1
from e2e.libsignal.spqr.ratchet import MAX_JUMP, Received, Spqr

__all__ = ["V0", "V1", "MAX_JUMP", "Spqr", "Received"]
