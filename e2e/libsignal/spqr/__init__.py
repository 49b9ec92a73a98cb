"""SPQR, libsignal's Sparse Post-Quantum Ratchet, spoken byte for byte (SPEC.md §15.7).

One module per concept: :mod:`~e2e.libsignal.spqr.gf16` (field arithmetic) and
:mod:`~e2e.libsignal.spqr.erasure` (the erasure code), :mod:`~e2e.libsignal.spqr.mlkem768`
(ML-KEM-768 split into two encapsulation steps), :mod:`~e2e.libsignal.spqr.message` (the
wire codec).
"""
