"""Every case of every vectors/*.json, run through its registered verifier."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from e2e.vectors import Case, iter_cases, verify_case

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
CASES = list(iter_cases(VECTORS))


def test_vectors_exist() -> None:
    assert CASES, f"no vector cases found in {VECTORS}"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_vector(case: Case) -> None:
    verify_case(case)


def _flip_hex_digit(value: str) -> str:
    first = "1" if value[0] == "0" else "0"
    return first + value[1:]


# (file, expected-output field, extra condition on the case) for the corruption check.
_CORRUPTIBLE = [
    ("x25519.json", "shared", {"protocol": "accept", "result": "valid"}),
    ("hkdf_sha256.json", "okm", {"result": "valid"}),
    ("hmac_sha256.json", "tag", {"result": "valid"}),
    ("shake256.json", "output", {"outputlen_bits": 768}),
    ("aes_gcm.json", "tag", {"result": "valid"}),
    ("aes_cbc_pkcs5.json", "ct", {"result": "valid"}),
    ("mlkem1024.json", "ek", {"kind": "keygen"}),
    ("mlkem1024.json", "K", {"kind": "decaps", "result": "valid"}),
    ("libsignal_kdf.json", "next_chain_key", {"kind": "chain_step"}),
    ("libsignal_kdf.json", "mac_key", {"kind": "message_keys"}),
    ("libsignal_kdf.json", "next_root_key", {"kind": "root_step"}),
    ("libsignal_kdf.json", "expected_chain_key", {"kind": "ratcheting_session"}),
    ("libsignal_kdf.json", "shared", {"kind": "agreement"}),
    ("fingerprint.json", "scannable", {"name": "customer-business"}),
    ("fingerprint.json", "displayable", {"name": "iterations-1024"}),
    ("fingerprint.json", "scannable_remote_view", {"name": "utf8-names"}),
    ("merkle.json", "root", {"name": "inclusion/1/happy-path.json"}),
    ("merkle.json", "root2", {"name": "consistency/3/happy-path.json"}),
    ("attachment.json", "digest", {"name": "seal/600000"}),
    ("attachment.json", "blob", {"name": "seal/513"}),
    ("attachment.json", "blob_sha256", {"name": "seal/262145"}),
    ("attachment.json", "released_sha256", {"name": "open/bitflip/chunk1"}),
    ("attachment.json", "released_sha256", {"name": "open/intact"}),
    ("attachment.json", "encoding", {"name": "pointer/thumbnail and caption"}),
    ("ecvrf.json", "pi", {"name": "RFC 9381 B.3 Example 17"}),
    ("ecvrf.json", "beta", {"name": "RFC 9381 B.3 Example 16"}),
    ("ecvrf.json", "h", {"name": "RFC 9381 B.3 Example 18"}),
]


@pytest.mark.parametrize(
    ("file", "field", "where"), _CORRUPTIBLE, ids=[f"{f}:{k}" for f, k, _ in _CORRUPTIBLE]
)
def test_corrupted_vector_fails(file: str, field: str, where: dict[str, str]) -> None:
    """One flipped hex digit in an expected output must make the verifier fail."""
    original = next(
        (
            case
            for case in CASES
            if case.file == file
            and field in case.data
            and all(case.data.get(k) == v for k, v in where.items())
        ),
        None,
    )
    assert original is not None, f"no case in {file} with field {field!r} and {where}"
    verify_case(original)  # the untouched case passes ...
    data = copy.deepcopy(original.data)
    data[field] = _flip_hex_digit(str(data[field]))
    corrupted = Case(original.file, original.concept, original.index, data)
    with pytest.raises(AssertionError):  # ... and the corrupted copy does not
        verify_case(corrupted)
