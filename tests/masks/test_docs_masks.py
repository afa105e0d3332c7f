"""The examples of docs/masks.md run as written."""

import importlib.util
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "masks.md"


def _blocks(kind: str) -> list[tuple[str, str]]:
    """The page's ```kind blocks, each with the heading it stands under."""
    out, heading = [], "top"
    for part in re.split(r"(```\w*\n.*?```)", DOC.read_text(), flags=re.S):
        if part.startswith(f"```{kind}\n"):
            out.append((heading, part[len(kind) + 4:-3]))
        elif not part.startswith("```"):
            headings = re.findall(r"^#+ (.+)$", part, re.M)
            heading = headings[-1] if headings else heading
    return out


EXAMPLES = _blocks("python")


def _run(code: str) -> None:
    exec(compile(code, str(DOC), "exec"), {"__name__": "docs_masks"})


def test_the_page_shows_every_framework():
    headings = [h for h, _ in EXAMPLES]
    for framework in ("TrainState", "NNX", "Equinox", "Plain JAX"):
        assert any(framework in h for h in headings), framework


@pytest.mark.parametrize("code", [c for _, c in EXAMPLES],
                         ids=[re.sub(r"\W+", "_", h).strip("_").lower() for h, _ in EXAMPLES])
def test_example_runs(code):
    if "import equinox" in code and importlib.util.find_spec("equinox") is None:
        pytest.skip("equinox is not installed: pip install -e '.[test]' brings it")
    _run(code)


def test_the_printed_table_is_what_summary_prints(capsys):
    _run(EXAMPLES[0][1])
    table = _blocks("text")[0][1].strip()
    assert table in capsys.readouterr().out
