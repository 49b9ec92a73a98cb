"""SPEC.md's numbering and its cross-references with the code: sections numbered without a
gap, the table of contents matching them, every module named in a heading existing, and
every module docstring citing sections that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = (ROOT / "SPEC.md").read_text()
HEADINGS = {
    m.group(2): m.group(3)
    for m in re.finditer(r"^(#{2,3}) (\d+(?:\.\d+[a-z]?)?)\.? (.*)$", SPEC, re.M)
}
#: Modules whose docstrings need not cite a section (entry points, the vector verifiers,
#: libsignal's helpers: their concepts are the sections of the modules they serve).
UNCITED = {"__main__.py", "bench.py", "kyber.py", "proto.py"}


def _docstring(path: Path) -> str:
    text = path.read_text()
    return text.split('"""')[1] if text.startswith('"""') else ""


def test_sections_are_numbered_without_a_gap() -> None:
    top = [int(k) for k in HEADINGS if "." not in k]
    assert top == list(range(len(top)))
    for n in top:
        subs = [k for k in HEADINGS if k.startswith(f"{n}.")]
        numbers = [int(re.match(r"\d+\.(\d+)", k).group(1)) for k in subs]  # type: ignore[union-attr]
        assert numbers == sorted(numbers) and set(numbers) == set(range(min(numbers or [1]),
                                                                        max(numbers or [0]) + 1))


def test_the_table_of_contents_lists_every_section() -> None:
    rows = re.findall(r"^\| (\d+) \| [^|]+ \|", SPEC[: SPEC.index("## 0. Notation")], re.M)
    assert [int(r) for r in rows] == [int(k) for k in HEADINGS if "." not in k and k != "0"]


def test_modules_named_in_headings_exist() -> None:
    pattern = r"`(e2e/[\w/]+(?:\.py)?)`"
    named = {m for title in HEADINGS.values() for m in re.findall(pattern, title)}
    assert len(named) > 40
    for module in named:
        assert (ROOT / module).exists(), module


def test_module_docstrings_cite_sections_that_exist() -> None:
    cited = 0
    for path in sorted((ROOT / "e2e").rglob("*.py")):
        doc = _docstring(path)
        doc = re.sub(r"RFC \d+ §[\d.]+", "", doc)  # another document's sections
        refs = re.findall(r"§ ?(\d+(?:\.\d+[a-z]?)?)", doc)
        for ref in refs:
            assert ref in HEADINGS, (path.relative_to(ROOT).as_posix(), ref)
        if path.parent.name != "vectors" and path.name not in UNCITED:
            assert refs, f"{path.relative_to(ROOT)} cites no SPEC section"
        cited += len(refs)
    assert cited > 100
