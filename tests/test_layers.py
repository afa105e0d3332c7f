"""The library's layers: each module belongs to one, and imports only from its own layer or the
layers below (docs/architecture.md)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "imp_jax"
# Lowest first. A module may import from its own layer and every layer before it.
LAYERS = {
    "masks": {"masks"},
    "core": {"models", "train", "augment", "convolutions", "parallel", "metrics", "pruning",
             "analysis", "verdicts", "optimizers"},
    "data": {"tasks", "mixtures", "data"},
    "run": {"config", "experiment", "evaluation", "imp", "checkpoints", "rundir", "progress",
            "writers", "logs", "signals", "memory", "api"},
    "outputs": {"export", "plots", "study_plots", "drawing"},
    "study": {"sweep", "cluster", "report", "claims", "reproduce", "soak", "benchmarks"},
}
RANK = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}


def _imports(path: Path) -> set[str]:
    """The modules of the package that ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "imp_jax":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("imp_jax."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("imp_jax.")}
    return found


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def test_every_module_has_a_layer():
    assert [m for m in MODULES if m not in RANK] == []
    assert [m for m in RANK if m not in MODULES] == []


@pytest.mark.parametrize("module", MODULES)
def test_imports_go_down(module):
    upward = sorted(d for d in _imports(PACKAGE / f"{module}.py")
                    if d in RANK and RANK[d] > RANK.get(module, -1))
    assert upward == [], f"imp_jax.{module} imports from a layer above it: {upward}"


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "masks.py"
    bad.write_text("from imp_jax import train\nimport imp_jax.config\n")
    assert _imports(bad) == {"train", "config"}
