"""No import cycles among jaxqc modules: read every module's imports with `ast`, resolve them to jaxqc
modules and look for cycles. Two rules: no cycle at all among the imports that run when a module is
imported (top level); and no cycle through the data layer even when imports inside functions count,
because a late import that closes a circle only hides it (io <-> qm9 <-> registry did).
`if TYPE_CHECKING:` imports never run and the implicit import of a parent package is not counted."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "jaxqc"


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict:
    """{dotted module name: path} of every .py file in the package (packages as their __init__)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(tree: ast.Module, late: bool):
    """Import nodes of a module, not those under `if TYPE_CHECKING:`. late=False: only those that run
    when the module is imported (not inside functions or classes); late=True: every one."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack += node.orelse
        elif late or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stack += [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)]


def _resolve(node, module: str, is_package: bool, modules: dict) -> set:
    """jaxqc modules that one import statement of `module` loads (known modules only)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module
        # `from pkg import name` loads pkg, and pkg.name when that is a module
        names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
    out = set()
    for name in names:
        while name and name not in modules:  # `import a.b.c` of a non-module attribute: nearest module
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


def import_graph(root: Path = ROOT, package: str = PACKAGE, late: bool = False) -> dict:
    """{module: set of jaxqc modules it imports} (late: counting imports inside functions), without
    edges to its own parent packages."""
    modules = module_files(root, package)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        deps = set()
        for node in _imports(tree, late):
            deps |= _resolve(node, name, is_package, modules)
        parents = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)}
        graph[name] = deps - parents - {name}
    return graph


def import_cycles(graph: dict) -> list:
    """The import cycles of `graph`: its strongly connected components of two or more modules (each
    sorted; Tarjan's algorithm). Every module of a component can reach every other one."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def in_data_layer(module: str) -> bool:
    return module == "jaxqc.files" or module == "jaxqc.data" or module.startswith("jaxqc.data.")


def test_no_import_cycle_among_jaxqc_modules():
    """No two jaxqc modules import each other, directly or around a circle, when they are imported."""
    graph = import_graph()
    assert "jaxqc.data.io" in graph and "jaxqc.data.splits" in graph
    assert import_cycles(graph) == [], "import cycles (modules that reach each other): " + str(import_cycles(graph))


def test_no_import_cycle_through_the_data_layer_even_with_late_imports():
    """The data layer (jaxqc.files, jaxqc.data.*) is in no circle even counting imports inside functions,
    which only hide a circle (io <-> qm9 <-> registry did): shared code goes to a module both import."""
    bad = [c for c in import_cycles(import_graph(late=True)) if any(map(in_data_layer, c))]
    assert bad == [], f"import cycles through the data layer (counting imports inside functions): {bad}"


def test_data_layering():
    """files.py and splits.py stay at the bottom; registry names loaders without importing them."""
    graph = import_graph(late=True)
    assert not any(m.startswith("jaxqc.data") for m in graph["jaxqc.files"])
    assert graph["jaxqc.data.splits"] <= {"jaxqc.errors"}
    assert "jaxqc.data.io" not in graph["jaxqc.data.registry"] | graph["jaxqc.data.qm9"]


def test_registry_loaders_resolve():
    from jaxqc.data import registry

    for name in registry.NAMES:
        function, _ = registry.loader(name)
        assert callable(function), name


def test_cycle_finder_finds_a_planted_cycle(tmp_path):
    """The checker can fail: a package whose modules import each other at top level is reported."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("import os\n\ndef f():\n    from .. import a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"} and graph["pkg.c"] == set()
    assert import_cycles(graph) == []  # the import inside f() is late; TYPE_CHECKING never counts
    assert import_cycles(import_graph(tmp_path, "pkg", late=True)) == [["pkg.a", "pkg.sub.b"]]
    (pkg / "sub" / "b.py").write_text("from ..a import something\n")
    assert import_cycles(import_graph(tmp_path, "pkg")) == [["pkg.a", "pkg.sub.b"]]


@pytest.mark.parametrize("module", ["jaxqc.files", "jaxqc.data.splits"])
def test_bottom_modules_import_without_jax(module):
    """The split policies and file helpers load without jax (cheap to use from scripts and the CLI)."""
    import subprocess
    import sys

    code = (f"import sys, importlib.util; spec = importlib.util.find_spec('jaxqc'); "
            f"sys.modules['jaxqc'] = type(sys)('jaxqc'); sys.modules['jaxqc'].__path__ = spec.submodule_search_locations; "
            f"import {module}; assert 'jax' not in sys.modules, 'jax imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
