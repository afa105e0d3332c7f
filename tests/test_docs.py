"""The Python examples of README.md and docs/*.md run as they are written (```python blocks;
excerpts of the library are fenced as ```text), and every page links where it says."""

import re

import pytest

from tests.helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _examples() -> list[tuple[str, str]]:
    return [(f"{page.name}:{i}", code) for page in PAGES
            for i, code in enumerate(_BLOCK.findall(page.read_text()))]


@pytest.mark.parametrize("name, code", _examples(), ids=[n for n, _ in _examples()])
def test_example_runs(name, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files
    exec(compile(code, name, "exec"), {"__name__": "__main__"})


def test_links_to_pages_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+\.md)\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"
