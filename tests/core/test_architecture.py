"""The layering docs/architecture.md describes, checked on the source.

Imports are read with ``ast``: module-level and deferred (inside functions) alike, since a
deferred import is still a dependency; imports under ``if TYPE_CHECKING:`` are not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where each package of the distribution lives in the repository.
PACKAGES = {
    "modelpack": ROOT / "modelpack",
    "modelpack.flavors": ROOT / "flavors",
    "modelpack.servers": ROOT / "servers",
    "modelpack.deployers": ROOT / "deployers",
}
PLUGIN_PACKAGES = ("modelpack.flavors", "modelpack.servers", "modelpack.deployers")


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return skip


def _imported_names(module: str, path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            for alias in node.names:
                full = f"{name}.{alias.name}"
                yield full if full in MODULES else name


def _owner(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        targets = {_owner(n) for n in _imported_names(module, path) if n.startswith("modelpack")}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def _is_plugin(module: str) -> bool:
    return module.startswith(PLUGIN_PACKAGES)


def test_the_core_imports_no_builtin_plugin() -> None:
    # The core reaches flavors, servers and deployers only through modelpack.plugins (entry
    # points), exactly as it reaches third-party ones. modelpack.server is the deprecated
    # alias of the team server, not a plugin.
    found = {
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if not _is_plugin(module)
        for target in targets
        if _is_plugin(target)
    }
    assert not found, sorted(found)


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    assert not cycles, [" -> ".join(c) for c in cycles]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_the_graph_reader_sees_deferred_imports_and_cycles() -> None:
    # The checks above are only as good as the reader: it must see an import inside a
    # function and report a two-module cycle.
    graph = _graph()
    assert "modelpack.registry" in graph["modelpack._resolvers"]  # deferred, in a function
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
