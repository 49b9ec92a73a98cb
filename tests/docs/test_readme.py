"""Every ```python block of README.md runs as written (each in a fresh namespace and a
temporary working directory), with nothing but e2e's own dependencies and its test extra:
a block that needs anything else fails (the ASGI mount example is written without a
framework for that reason)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 2
    assert any("create_app" in b and "root_path" in b for b in BLOCKS)  # the ASGI mount


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = compile(BLOCKS[index], f"README.md block {index}", "exec")
    exec(code, {"__name__": f"readme_block_{index}"})  # noqa: S102 - the README's own code


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run calls exactly the test command README.md's second set-up line gives."""
    commands = re.search(r"^```sh\n(.*?)^```", README.read_text(), re.S | re.M)
    assert commands is not None
    setup = commands.group(1).splitlines()
    assert len(setup) == 2 and "e2e demo" in setup[0] and "pytest" in setup[1]
    test_command = setup[1].split(" && ")[-1]
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
