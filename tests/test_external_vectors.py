"""vectors/'s Wycheproof-derived files agree, case by case, with ../shared/vectors/external.

Each copied case is named ``<wycheproof file>#<tcId>``; every field it shares with the original
test must be equal, so the copies cannot drift from their source.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = ROOT.parent / "shared" / "vectors" / "external" / "wycheproof"
COPIES = ["x25519", "hkdf_sha256", "hmac_sha256", "aes_gcm", "aes_cbc_pkcs5", "mlkem1024"]


def _originals() -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for path in EXTERNAL.glob("*_test.json"):
        doc = json.loads(path.read_text())
        for group in doc["testGroups"]:
            for test in group["tests"]:
                out[(path.name, test["tcId"])] = test
    return out


@pytest.fixture(scope="module")
def originals() -> dict[tuple[str, int], dict[str, Any]]:
    if not EXTERNAL.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{EXTERNAL} is missing in CI")
        pytest.skip("../shared/vectors/external is not beside this checkout")
    return _originals()


@pytest.mark.parametrize("name", COPIES)
def test_copies_match_their_source(name: str, originals: dict[tuple[str, int], Any]) -> None:
    doc = json.loads((ROOT / "vectors" / f"{name}.json").read_text())
    assert "wycheproof" in doc["source"].lower()
    compared = 0
    for case in doc["cases"]:
        file, tc = case["name"].split("#")
        original = originals[(file, int(tc))]
        shared = [k for k in case if k in original and k != "name"]
        assert {"tcId", "result"} <= set(shared) or "tcId" in shared
        for key in shared:
            assert case[key] == original[key], f"{case['name']}: field {key} differs from source"
            compared += 1
    assert compared > len(doc["cases"])
