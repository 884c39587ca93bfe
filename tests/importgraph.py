"""Which fastban modules each Python file imports, read from its source (nothing is imported).

Every import statement counts, at any depth (a function-local import is still a dependency).
``from fastban.x import name`` is an import of ``fastban.x.name`` when that is a module, else
of ``fastban.x``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fastban"
# compiled modules: their source is not Python, and they import no fastban module
EXTENSIONS = {"fastban._sipparser": ROOT / "ext" / "sipparser.pyx",
              "fastban._hepparser": ROOT / "ext" / "hepparser.pyx"}


def module_name(path: Path) -> str:
    """fastban/dataplane/__init__.py -> fastban.dataplane; tests/test_x.py -> test_x."""
    path = path.resolve()
    if path.is_relative_to(PACKAGE):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts)
    return path.stem


def product_modules() -> dict[str, Path]:
    """Every module of the fastban package, by name (the compiled ones included)."""
    return {**{module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}, **EXTENSIONS}


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The fastban modules the file at path imports (not those only type checkers import)."""
    if path.suffix != ".py":
        return set()
    here = module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                if not _is_package(here, modules):
                    anchor = anchor[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = []
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                names.append(candidate if candidate in modules else base)
        else:
            continue
        for name in names:
            while name and name not in modules:      # fastban.x.y (an attribute) -> fastban.x
                name = name.rpartition(".")[0]
            if name and name != here:
                found.add(name)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def product_graph() -> dict[str, set[str]]:
    """fastban module -> the fastban modules it imports."""
    modules = product_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def reachable(start: set[str], graph: dict[str, set[str]]) -> set[str]:
    """Every module that importing the start modules can import, the start modules included."""
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph.get(name, ()))
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected sets of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(name):
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for other in sorted(graph.get(name, ())):
            if other not in index:
                visit(other)
                low[name] = min(low[name], low[other])
            elif other in on_stack:
                low[name] = min(low[name], index[other])
        if low[name] == index[name]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == name:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found
