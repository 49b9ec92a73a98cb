"""Packaging: the license ships, every vector file is packaged, the CLI's small promises."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import e2e
from e2e.__main__ import default_vectors_dir, main

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_is_apache_2_full_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]


def test_metadata_complete() -> None:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    assert any("Security :: Cryptography" in c for c in project["classifiers"])
    # No public address exists yet: the metadata names none rather than a made-up one.
    assert "urls" not in project


def test_the_vectors_directory_is_packaged_in_the_wheel() -> None:
    tool = _pyproject()["tool"]
    assert isinstance(tool, dict)
    included = tool["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert included == {"vectors": "e2e/_vectors"}
    assert any((ROOT / "vectors").glob("*.json"))


def test_version_flag() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "e2e", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"e2e {e2e.__version__}"


def test_default_vectors_dir_is_the_checkout() -> None:
    assert default_vectors_dir() == ROOT / "vectors"


def test_verify_refuses_a_directory_without_vectors(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["vectors", "verify", str(tmp_path)]) == 2
    assert "no vector file" in capsys.readouterr().err
    (tmp_path / "other.json").write_text('{"hello": 1}')
    assert main(["vectors", "verify", str(tmp_path)]) == 2
    assert "no vector cases" in capsys.readouterr().err
