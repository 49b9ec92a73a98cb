"""vectors/generate.py (from the independent reference) still produces vectors e2e verifies.

The committed vectors pin the bytes; this keeps the generator and reference honest too: a
fresh run (new ML-KEM encapsulations, everything else seeded) must verify case by case.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from e2e.vectors import iter_cases, verify_dir

ROOT = Path(__file__).resolve().parents[1]


def test_a_fresh_generator_run_verifies(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "vectors" / "generate.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert names == [
        "agreement.json", "attachment.json", "frames.json", "kdf.json", "transcripts.json",
    ]  # fmt: skip
    failures: list[str] = []
    passed, failed = verify_dir(tmp_path, report=failures.append)
    assert (failed, failures) == (0, [])
    assert passed == sum(1 for _ in iter_cases(tmp_path)) > 50


def test_seeded_parts_are_stable(tmp_path: Path) -> None:
    """Everything but the KEM encapsulation is seeded: kdf.json, frames.json and
    attachment.json come out identical to the committed files."""
    subprocess.run(
        [sys.executable, str(ROOT / "vectors" / "generate.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in ("kdf.json", "frames.json", "attachment.json"):
        assert (tmp_path / name).read_bytes() == (ROOT / "vectors" / name).read_bytes(), name
