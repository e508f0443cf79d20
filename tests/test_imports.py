"""Import hygiene of the package, read from the source with ``ast`` (nothing is imported).

The boundaries of issue 12 ("no import of another module's ``_private`` name; no import cycle"):

* a module never imports a name that starts with ``_`` from another module, nor reaches one
  through a module it imported (``model._rv``); dunders (``__version__``) are public;
* a module whose own name starts with ``_`` (``bayeslmm/_linalg.py``) is private to its package:
  the modules of that package and of its subpackages may import it, no module outside may;
* the modules of ``bayeslmm`` import each other without a cycle, counting every import
  (at module level, inside functions and under ``TYPE_CHECKING``), so no cycle is hidden by
  importing late.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bayeslmm"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, whether it is a package's ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _target(module: str, is_pkg: bool, node: ast.ImportFrom) -> str | None:
    """The absolute module a ``from ... import`` reads from."""
    if node.level == 0:
        return node.module
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _package_of(module: str) -> str:
    return module.rsplit(".", 1)[0]


def _tree(module: str, source: str | None = None) -> tuple[ast.Module, bool]:
    """The syntax tree of a module (of ``source`` in its place, to test the checks) and whether it is a package."""
    path, is_pkg = MODULES[module]
    return ast.parse(path.read_text(encoding="utf-8") if source is None else source), is_pkg


def _imports(module: str, source: str | None = None) -> list[tuple[str, str | None, int]]:
    """Every import of a bayeslmm module in ``module``: (module imported, name taken from it or None, line)."""
    tree, is_pkg = _tree(module, source)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _target(module, is_pkg, node)
            if target is None or target.split(".")[0] != "bayeslmm":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "bayeslmm"]
    return out


def _module_aliases(module: str, source: str | None = None) -> dict[str, str]:
    """Local name -> bayeslmm module, for the modules ``module`` binds to a name."""
    tree, is_pkg = _tree(module, source)
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _target(module, is_pkg, node)
            for alias in node.names:
                if target and f"{target}.{alias.name}" in MODULES:
                    out[alias.asname or alias.name] = f"{target}.{alias.name}"
        elif isinstance(node, ast.Import):
            out.update({a.asname: a.name for a in node.names if a.asname and a.name in MODULES})
    return out


def _private_imports(module: str, source: str | None = None) -> list[str]:
    found = []
    for imported, name, line in _imports(module, source):
        if name is not None and _private(name):
            found.append(f"{module}:{line} imports {name} from {imported}")
        private_parts = [i for i, part in enumerate(imported.split(".")) if _private(part)]
        if private_parts:
            owner = ".".join(imported.split(".")[: private_parts[0]])  # the package the private module belongs to
            if module != owner and not module.startswith(owner + "."):
                found.append(f"{module}:{line} imports {imported}, private to {owner}")
    aliases = _module_aliases(module, source)
    for node in ast.walk(_tree(module, source)[0]):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases and _private(node.attr):
            found.append(f"{module}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    return found


def _graph() -> dict[str, set[str]]:
    return {m: {imported for imported, _, _ in _imports(m) if imported in MODULES and imported != m} for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_the_package_is_found():
    assert {"bayeslmm", "bayeslmm.api", "bayeslmm.stages", "bayeslmm.collapsed.kernels", "bayeslmm._linalg"} <= set(MODULES)
    assert ("bayeslmm.stages", None) in {(m, n) for m, n, _ in _imports("bayeslmm.api")}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_crosses_modules(module):
    assert _private_imports(module) == []


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_checks_catch_what_they_forbid():
    """The detectors themselves: a cycle and a reach-in are found when present."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert _private("_rv") and _private("_linalg") and not _private("__version__") and not _private("rv")
    reach_ins = "from .model import _rv\nfrom . import model\nmodel._dist\nfrom ._linalg import cholesky\n"
    assert len(_private_imports("bayeslmm.api", reach_ins)) == 2  # _rv and model._dist; _linalg is bayeslmm's own
    assert _private_imports("bayeslmm.collapsed.graph", "from .._linalg import cholesky\n") == []  # a subpackage of bayeslmm
    assert _private_imports("bayeslmm.inference.engine", "from ..collapsed import _kernel\n") == [
        "bayeslmm.inference.engine:1 imports _kernel from bayeslmm.collapsed"
    ]
