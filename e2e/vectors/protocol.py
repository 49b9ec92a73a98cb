"""Verifiers for the protocol's own vectors (KDF chains, X3DH/PQXDH, frames, transcripts)."""

from __future__ import annotations
