"""No import circles in seqbench: every import of one seqbench module by another, at any depth (an import inside a
function to dodge a circle counts too; `if TYPE_CHECKING:` blocks do not), forms a graph without cycles."""

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"seqbench": "seqbench", "harness": "seqbench.harness", "kernels": "seqbench.kernels",
            "tasks": "seqbench.tasks"}


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, whether it is a package's __init__)."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = (path, path.name == "__init__.py")
    return found


def imported(name: str, path: Path, is_package: bool, known: set[str]) -> set[str]:
    """The seqbench modules `name` imports anywhere in its file, `from . import x` naming the submodule x."""
    here = name.split(".") if is_package else name.split(".")[:-1]
    out = set()

    def visit(node):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known
            out.update(submodules)
            if len(submodules) < len(node.names):
                out.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return (out & known) - {name}


def test_the_import_graph_has_no_cycle():
    found = modules()
    assert {"seqbench.harness.cli", "seqbench.kernels.fused", "seqbench.tasks.copy"} <= set(found)
    graph = {name: imported(name, path, is_package, set(found)) for name, (path, is_package) in found.items()}
    assert graph["seqbench.harness.config"] >= {"seqbench.harness.trackers", "seqbench.harness.errors"}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_a_cycle_is_found(tmp_path):
    """The walk sees an import inside a function, which is how circles are usually dodged."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from . import b\n")
    b.write_text("def f():\n    from .a import g\n")
    known = {"p.a", "p.b"}
    graph = {"p.a": imported("p.a", a, False, known), "p.b": imported("p.b", b, False, known)}
    assert graph == {"p.a": {"p.b"}, "p.b": {"p.a"}}
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(graph).static_order())
