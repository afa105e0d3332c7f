"""The README's "Masks in your own project" example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_masks_example_runs(capsys):
    section = README.read_text().split("## Masks in your own project", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, str(README), "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    remaining = [int(line.split()[1]) for line in lines]
    assert remaining == [188160, 150528, 120422]  # 235200 weights, 20% of the rest each level
