"""The library's layers: each module belongs to one, and imports only from its own layer or the
layers below (docs/architecture.md)."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "imp_jax"
# Lowest first: a layer is a subpackage of imp_jax, or one of its two top-level modules. A module
# may import from its own layer and every layer before it; export and plots share a rank.
RANK = {"masks": 0, "core": 1, "data": 2, "run": 3, "api": 4, "export": 5, "plots": 5, "study": 6}


def layer(path: Path) -> str:
    """The layer of a module file of the package."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def _imports(path: Path) -> set[str]:
    """The layers of the package that ``path`` imports from."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "imp_jax":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("imp_jax."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("imp_jax.")}
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def test_every_module_has_a_layer():
    assert [str(m) for m in MODULES if layer(m) not in RANK] == []
    assert {layer(m) for m in MODULES} == set(RANK)


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down(module):
    upward = sorted(d for d in _imports(module) if RANK.get(d, -1) > RANK[layer(module)])
    assert upward == [], f"{module.relative_to(PACKAGE)} imports from a layer above it: {upward}"


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "masks.py"
    bad.write_text("from imp_jax import run\nimport imp_jax.study.sweep\n"
                   "from imp_jax.core import train\n")
    assert _imports(bad) == {"run", "study", "core"}



def test_the_architecture_page_lists_the_layers_in_order():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| ((?:`imp_jax\.\w+`(?:, )?)+) \|", page, flags=re.MULTILINE)
    listed = [name for row in rows for name in re.findall(r"`imp_jax\.(\w+)`", row)]
    assert sorted(listed) == sorted(RANK)
    assert [RANK[name] for name in listed] == sorted(RANK[name] for name in listed)
