"""Every ```python block of README.md runs as written (each in a fresh namespace and a
temporary working directory). A block may use a framework e2e does not depend on (listed in
OPTIONAL); it is skipped, not failed, only when that framework is not installed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
#: Third-party frameworks a README example may show e2e inside of.
OPTIONAL = {"starlette", "fastapi"}
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = compile(BLOCKS[index], f"README.md block {index}", "exec")
    try:
        exec(code, {"__name__": f"readme_block_{index}"})  # noqa: S102 - the README's own code
    except ModuleNotFoundError as exc:
        if exc.name not in OPTIONAL:
            raise
        pytest.skip(f"needs {exc.name}, which e2e does not depend on")
